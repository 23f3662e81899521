"""The page camtl-serve shows at `/`: pick a task, fill its fields, see the answer (a label with
probabilities, a value, the chosen option, the span highlighted in its context, tags over the
words). Plain HTML and JavaScript served by the app: no build step, nothing fetched from elsewhere.

Element ids the browser test reads: #task (the task menu), #fields (one input per field:
#field-text, #field-text_pair, #field-premise, #field-choice-0.., #field-question,
#field-context, #field-words), #run, #answer (data-task: the task answered), #error.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>camtl-serve</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 50rem; margin: 2rem auto; padding: 0 1rem; }
  label { display: block; margin-top: .8rem; font-weight: 600; }
  input[type=text], textarea, select { width: 100%; box-sizing: border-box; padding: .4rem;
    font: inherit; }
  textarea { min-height: 4rem; }
  button { margin-top: 1rem; padding: .5rem 1.2rem; font: inherit; }
  #answer { margin-top: 1.5rem; }
  .bar { background: #4a7; height: .8rem; display: inline-block; vertical-align: middle; }
  .row { margin: .2rem 0; }
  .chosen { font-weight: 700; }
  mark { background: #fd6; padding: 0 .1rem; }
  .tags { display: flex; flex-wrap: wrap; gap: .4rem; }
  .tok { display: inline-flex; flex-direction: column; align-items: center; }
  .tok small { color: #666; }
  .tok.ent small { color: #b40; font-weight: 700; }
  #error { color: #b00; margin-top: 1rem; }
  .note { color: #666; font-size: .9rem; }
</style>
</head>
<body>
<h1>Try the model</h1>
<p class="note" id="source"></p>
<label for="task">Task</label>
<select id="task"></select>
<div id="fields"></div>
<button id="run" type="button">Predict</button>
<div id="error" role="alert"></div>
<div id="answer" aria-live="polite"></div>
<script>
"use strict";
let TASKS = [];
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const current = () => TASKS.find((t) => t.name === $("task").value);

function field(name, label, multiline) {
  const box = $("fields");
  box.appendChild(el("label", {for: "field-" + name}, label));
  box.appendChild(el(multiline ? "textarea" : "input",
                     multiline ? {id: "field-" + name} : {id: "field-" + name, type: "text"}));
}

function showFields() {
  const task = current();
  $("fields").replaceChildren();
  $("answer").replaceChildren();
  $("error").textContent = "";
  if (task.type === "multiple_choice") {
    field("premise", "Premise");
    for (let i = 0; i < task.num_choices; i++) field("choice-" + i, "Option " + (i + 1));
  } else if (task.type === "span") {
    field("question", "Question");
    field("context", "Context", true);
  } else if (task.type === "tagging") {
    field("text", "Sentence (words split on spaces)");
  } else {
    field("text", "Text");
    field("text_pair", "Second text (optional)");
  }
}

function value(name) {
  const e = $("field-" + name);
  return e ? e.value : "";
}

function request() {
  const task = current();
  const input = {task: task.name};
  if (task.type === "multiple_choice") {
    input.premise = value("premise");
    input.choices = [];
    for (let i = 0; i < task.num_choices; i++) input.choices.push(value("choice-" + i));
  } else if (task.type === "span") {
    input.question = value("question");
    input.context = value("context");
  } else if (task.type === "tagging") {
    input.text = value("text");
  } else {
    input.text = value("text");
    if (value("text_pair").trim()) input.text_pair = value("text_pair");
  }
  return input;
}

function bars(entries, chosen) {
  const box = el("div", {id: "probabilities"});
  for (const [name, p] of entries) {
    const row = el("div", {class: "row" + (name === chosen ? " chosen" : "")});
    row.appendChild(el("span", {style: "display:inline-block;min-width:10rem"}, name));
    row.appendChild(el("span", {class: "bar", style: "width:" + (p * 20).toFixed(2) + "rem"}));
    row.appendChild(el("span", {}, " " + p.toFixed(3)));
    box.appendChild(row);
  }
  return box;
}

const RENDER = {
  classification(out, input, box) {
    box.appendChild(el("p", {id: "label"}, "Label: " + out.label));
    box.appendChild(bars(Object.entries(out.probabilities), out.label));
  },
  regression(out, input, box) {
    box.appendChild(el("p", {id: "value"},
                       "Value: " + out.value.toFixed(3) + " \u00b1 " + out.std.toFixed(3)));
  },
  multiple_choice(out, input, box) {
    const chosen = input.choices[out.choice];
    box.appendChild(el("p", {id: "choice"}, "Chosen: " + chosen));
    box.appendChild(bars(input.choices.map((c, i) => [c, out.probabilities[i]]), chosen));
  },
  span(out, input, box) {
    box.appendChild(el("p", {id: "span-answer"}, "Answer: " + (out.answer || "(none)")));
    if (out.score !== null) box.appendChild(el("p", {class: "note"},
                                               "score " + out.score.toFixed(3)));
    const p = el("p", {id: "context"});
    const at = out.answer ? input.context.indexOf(out.answer) : -1;
    if (at < 0) {
      p.textContent = input.context;
    } else {
      p.appendChild(document.createTextNode(input.context.slice(0, at)));
      p.appendChild(el("mark", {}, out.answer));
      p.appendChild(document.createTextNode(input.context.slice(at + out.answer.length)));
    }
    box.appendChild(p);
  },
  tagging(out, input, box) {
    const row = el("div", {class: "tags", id: "tags"});
    out.words.forEach((w, i) => {
      const tok = el("span", {class: "tok" + (out.tags[i] !== "O" ? " ent" : "")});
      tok.appendChild(el("span", {class: "word"}, w));
      tok.appendChild(el("small", {class: "tag"}, out.tags[i]));
      row.appendChild(tok);
    });
    box.appendChild(row);
  },
};

async function run() {
  const task = current();
  const input = request();
  $("error").textContent = "";
  $("answer").replaceChildren();
  $("run").disabled = true;
  try {
    const response = await fetch("/v1/predict", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({inputs: [input]})});
    const body = await response.json();
    if (!response.ok) {
      const e = body.error || {};
      $("error").textContent = (e.field ? e.field + ": " : "") + (e.message || response.status);
      return;
    }
    const out = body.outputs[0];
    const box = el("div", {"data-task": task.name});
    RENDER[task.type](out, input, box);
    if (out.truncated) box.appendChild(el("p", {class: "note"}, body.warnings.join("; ")));
    $("answer").replaceChildren(box);
    $("answer").setAttribute("data-task", task.name);
  } catch (err) {
    $("error").textContent = String(err);
  } finally {
    $("run").disabled = false;
  }
}

async function init() {
  const info = await (await fetch("/v1/tasks")).json();
  TASKS = info.tasks;
  $("source").textContent = info.model;
  for (const t of TASKS) $("task").appendChild(el("option", {value: t.name},
                                                  t.name + " (" + t.type + ")"));
  $("task").addEventListener("change", showFields);
  $("run").addEventListener("click", run);
  showFields();
  document.body.setAttribute("data-ready", "1");
}
init();
</script>
</body>
</html>
"""
