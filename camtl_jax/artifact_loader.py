"""Runs an exported CA-MTL model (camtl-export copies this file into the artifact as
load_and_run.py): one task's artifact (`camtl-export --task`) or every task's (`--all-tasks`,
meta.json "kind": "multitask"). Needs jax, numpy and flatbuffers (jax.export's serialization); the
text path also needs the `tokenizers` package. Nothing of the training library is imported.

  python load_and_run.py INPUTS.npz OUTPUTS.npz        arrays named as meta.json "inputs"
  python load_and_run.py [--task T] --text "..." [--text-pair "..."] [--choice A --choice B]

  import runpy; m = runpy.run_path("DIR/load_and_run.py")["load"]("DIR")
  m(**arrays)                    the program's outputs
  m.predict_texts([{"task": T, "text": ...}, ...])   answers as camtl-predict gives them

Array inputs of a one-task artifact are int32 [b, l] ([b, K, l] for multiple choice), any b and
1 <= l <= max_length; a multi-task artifact's are in its meta.json and README.md.

Text inputs (fields as camtl-predict reads them): classification / regression: text, text_pair;
multiple choice: premise + choices; span: question, context (read in doc-stride windows);
tagging: words, or text split on whitespace. Answers: label + probabilities / value + std /
choice + probabilities / answer + score + windows / words + tags + tag_probabilities (one per
word, no [CLS] / [SEP]), each with "truncated" (the text lost tokens to max_length).
"""
import json
import sys
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
MAX_ANSWER_LENGTH = 30  # tokens, as the library's span decoding (evaluate.MAX_ANSWER_LENGTH)
MAX_QUERY_LENGTH = 64   # question tokens, as the library's span encoding
# The names a one-task artifact gives each type's outputs -> the multi-task model's keys.
OUTPUT_KEYS = {
    "classification": {"logits": "cls_logits"},
    "regression": {"value": "regression", "log_var": "regression_log_var"},
    "multiple_choice": {"logits": "choice_logits"},
    "span": {"start_logits": "start_logits", "end_logits": "end_logits"},
    "tagging": {"logits": "tag_logits"},
}


def _unflatten(flat):
  tree = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def _softmax(x):
  z = np.exp(x - x.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


class Model:
  """model(**inputs) -> dict of numpy outputs; model.predict(**inputs) (one-task artifacts) adds
  labels / probabilities / values on the task's scale; model.predict_texts(records) answers
  text in words."""

  def __init__(self, directory=HERE):
    self.directory = Path(directory)
    self.meta = json.loads((self.directory / "meta.json").read_text())
    self.multitask = self.meta.get("kind") == "multitask"
    self.tasks = self.meta["tasks"] if self.multitask else [dict(self.meta, name=self.meta["task"])]
    self.exported = jax.export.deserialize(
        bytearray((self.directory / "model.stablehlo").read_bytes()))
    with np.load(self.directory / "weights.npz") as data:  # onto the device once, not per call
      self.weights = jax.device_put(_unflatten({k: data[k] for k in data.files}))
    self._tokenizer = None

  def __call__(self, **inputs):
    missing = [k for k in self.meta["inputs"] if k not in inputs]
    if missing:
      raise ValueError(f"missing inputs {missing}; this model takes {self.meta['inputs']}")
    length = np.shape(inputs["input_ids"])[-1]
    if length > self.meta["max_length"]:
      raise ValueError(f"sequence length {length} exceeds max_length {self.meta['max_length']}")
    args = [np.asarray(inputs[k], np.int32) for k in self.meta["inputs"]]
    return {k: np.asarray(v) for k, v in self.exported.call(self.weights, *args).items()}

  def predict(self, **inputs):
    out = self(**inputs)
    kind = self.meta["type"]
    if kind == "regression":
      meta = self.meta
      out["value_original_scale"] = out["value"] * meta["target_std"] + meta["target_mean"]
    elif kind in ("classification", "multiple_choice", "tagging"):
      out["probabilities"] = _softmax(out["logits"])
      index = out["logits"].argmax(-1)
      out["prediction"] = (np.asarray(self.meta["labels"])[index] if self.meta["labels"]
                           and kind != "multiple_choice" else index)
    return out

  # --------------------------------------------------------------------------------------------
  # Text in, words out

  def task(self, name=None):
    """The meta record of a task (name may be omitted for a one-task artifact)."""
    names = [t["name"] for t in self.tasks]
    if name is None and len(names) == 1:
      return self.tasks[0]
    if name not in names:
      raise ValueError(f"unknown task {name!r}; this artifact has {names}")
    return self.tasks[names.index(name)]

  @property
  def tokenizer(self):
    if self._tokenizer is None:
      from tokenizers import Tokenizer  # optional: only for text
      self._tokenizer = Tokenizer.from_file(str(self.directory / "tokenizer" / "tokenizer.json"))
      # The checkpoint's tokenizer.json may pad every text to its own fixed length (MiniLM: 128).
      self._tokenizer.no_padding()
    return self._tokenizer

  def predict_texts(self, records):
    """One answer per record (dicts with camtl-predict's fields, and "task" for a multi-task
    artifact), in order; all records in one forward."""
    encoded = [self._encode(self.task(r.get("task")), r) for r in records]
    length = max(max(len(row["input_ids"]) for row in e["rows"]) for e in encoded)
    outputs = (self._run_multitask(encoded, length) if self.multitask
               else self._run_one_task(encoded, length))
    return [dict(DECODERS[e["task"]["type"]](e, out), truncated=e["truncated"])
            for e, out in zip(encoded, outputs)]

  def _encode(self, task, record):
    encoded = ENCODERS[task["type"]](self.tokenizer, self.meta, task, record)
    return dict(encoded, task=task)

  def _run_one_task(self, encoded, length):
    """Every example's rows as one [n, l] (or [n, K, l]) batch -> per-example outputs with the
    multi-task model's keys, each example's windows (span) stacked."""
    rows = [row for e in encoded for row in e["rows"]]
    arrays = _pad_rows(rows, length)
    kind = self.meta["type"]
    if kind == "multiple_choice":
      k = len(encoded[0]["rows"])
      arrays = {key: v.reshape(len(encoded), k, length) for key, v in arrays.items()}
    elif kind == "span":
      arrays["context_mask"] = _pad_rows([{"c": r["context_mask"]} for r in rows], length)["c"]
    out = self(**{k: arrays[k] for k in self.meta["inputs"]})
    out = {key: out[name] for name, key in OUTPUT_KEYS[kind].items()}
    return _split_examples(out, encoded, per_row=kind == "span")

  def _run_multitask(self, encoded, length):
    """Every example's rows in one mixed batch (a span window is an example of its own)."""
    names = [t["name"] for t in self.tasks]
    rows, task_id, choice_rows, context = [], [], [], []
    for e in encoded:
      tid = names.index(e["task"]["name"])
      if e["task"]["type"] == "multiple_choice":
        task_id.append(tid)
        choice_rows.append(list(range(len(rows), len(rows) + len(e["rows"]))))
        context.append([])
        rows += e["rows"]
        continue
      for row in e["rows"]:
        task_id.append(tid)
        choice_rows.append([len(rows)])
        context.append(row.get("context_mask", []))
        rows.append(row)
    k = self.meta["num_choices"]
    inputs = _pad_rows(rows, length)
    inputs["task_id"] = np.asarray(task_id, np.int32)
    inputs["choice_rows"] = np.asarray([c + [-1] * (k - len(c)) for c in choice_rows], np.int32)
    inputs["context_mask"] = _pad_rows([{"c": c} for c in context], length)["c"]
    out = self(**inputs)
    return _split_examples(out, encoded, per_row=None)


def _pad_rows(rows, length):
  """Rows of token lists -> int32 [n, length] per key, zero-padded."""
  out = {}
  for key in rows[0]:
    if key == "context_mask" and "input_ids" in rows[0]:
      continue
    arr = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
      arr[i, :len(row[key])] = row[key]
    out[key] = arr
  return out


def _split_examples(out, encoded, per_row):
  """Batch outputs -> one dict per example. per_row True: every row of an example is a batch
  entry (span windows); None (multi-task): multiple choice takes one entry, others one per row;
  False: one entry per example."""
  result, i = [], 0
  for e in encoded:
    n = len(e["rows"]) if (per_row or (per_row is None
                                       and e["task"]["type"] != "multiple_choice")) else 1
    result.append({key: v[i:i + n] for key, v in out.items()})
    i += n
  return result


# ------------------------------------------------------------------------------------------------
# Encoding, per task type: (tokenizer, meta, task, record) -> {"rows": [{input_ids,
# token_type_ids, attention_mask(, context_mask)}], "truncated", ...what decoding needs}


def _field(record, key, required=True):
  value = record.get(key)
  if value is None:
    if required:
      raise ValueError(f"field {key!r}: missing")
    return None
  if not isinstance(value, str) or not value.strip():
    raise ValueError(f"field {key!r}: expected a non-empty string")
  return value


def _row(enc):
  return {"input_ids": enc.ids, "token_type_ids": enc.type_ids,
          "attention_mask": enc.attention_mask}


def _encode_texts(tok, meta, task, record):
  tok.enable_truncation(meta["max_length"], strategy="longest_first")
  enc = tok.encode(_field(record, "text"), _field(record, "text_pair", required=False))
  return {"rows": [_row(enc)], "truncated": bool(enc.overflowing)}


def _encode_choices(tok, meta, task, record):
  choices = record.get("choices")
  premise = _field(record, "premise", required=False) or _field(record, "text", required=False)
  if not isinstance(choices, list) or len(choices) != task["num_choices"]:
    raise ValueError(f"field 'choices': expected a list of {task['num_choices']} choices")
  pairs = [(premise, c) if isinstance(c, str) else tuple(c) for c in choices]
  tok.enable_truncation(meta["max_length"], strategy="longest_first")
  encs = [tok.encode(first, second) for first, second in pairs]
  return {"rows": [_row(e) for e in encs], "truncated": any(bool(e.overflowing) for e in encs)}


def _encode_span(tok, meta, task, record):
  """Question (cut to its token budget) + context windows sharing `overlap` context tokens, as
  the library encodes them."""
  question, context = _field(record, "question"), _field(record, "context")
  max_length = meta["max_length"]
  specials = tok.post_processor.num_special_tokens_to_add(True)
  max_query = min(MAX_QUERY_LENGTH, (max_length - specials) // 2)
  tok.no_truncation()
  q = tok.encode(question, add_special_tokens=False)
  if len(q.ids) > max_query:
    question = question[:q.offsets[max_query - 1][1]]
    q = tok.encode(question, add_special_tokens=False)
  overlap = max(0, max_length - specials - len(q.ids) - meta["doc_stride"])
  tok.enable_truncation(max_length, stride=overlap, strategy="only_second")
  first = tok.encode(question, context)
  rows, offsets = [], []
  for enc in [first] + list(first.overflowing):
    is_context = [s == 1 for s in enc.sequence_ids]
    row = _row(enc)
    row["context_mask"] = [int(c or i == 0) for i, c in enumerate(is_context)]
    rows.append(row)
    offsets.append([o if c else None for o, c in zip(enc.offsets, is_context)])
  return {"rows": rows, "offsets": offsets, "context": context, "truncated": False}


def _encode_words(tok, meta, task, record):
  words = record.get("words")
  if words is None:
    words = _field(record, "text").split()
  if not isinstance(words, list) or not words or not all(
      isinstance(w, str) and w for w in words):
    raise ValueError("field 'words': expected a non-empty list of strings (or a 'text')")
  tok.enable_truncation(meta["max_length"], strategy="longest_first")
  enc = tok.encode(words, is_pretokenized=True)
  first, previous = [], None
  for position, word in enumerate(enc.word_ids):
    if word is not None and word != previous:
      first.append((position, word))
    previous = word
  return {"rows": [_row(enc)], "words": words, "first": first, "truncated": bool(enc.overflowing)}


ENCODERS = {"classification": _encode_texts, "regression": _encode_texts,
            "multiple_choice": _encode_choices, "span": _encode_span, "tagging": _encode_words}


# ------------------------------------------------------------------------------------------------
# Decoding, per task type: (encoded example, its outputs with the model's keys) -> answer


def _classification(e, out):
  labels = e["task"]["labels"]
  p = _softmax(out["cls_logits"][0, :len(labels)])
  return {"label": labels[int(p.argmax())],
          "probabilities": {label: float(x) for label, x in zip(labels, p)}}


def _regression(e, out):
  task = e["task"]
  std = float(np.sqrt(np.exp(out["regression_log_var"][0])) * task["target_std"])
  value = np.float64(out["regression"][0]) * task["target_std"] + task["target_mean"]
  return {"value": float(value), "std": std}


def _choice(e, out):
  p = _softmax(out["choice_logits"][0, :e["task"]["num_choices"]])
  return {"choice": int(p.argmax()), "probabilities": [float(x) for x in p]}


def _span(e, out):
  """The best span (start <= end < start + MAX_ANSWER_LENGTH, context tokens only) over the
  windows, by start + end logit."""
  best, answer = -np.inf, ""
  for w, offsets in enumerate(e["offsets"]):
    n = len(offsets)
    allowed = np.array([o is not None for o in offsets])
    start = np.where(allowed, out["start_logits"][w, :n], -np.inf)
    end = np.where(allowed, out["end_logits"][w, :n], -np.inf)
    for width in range(min(MAX_ANSWER_LENGTH, n)):
      scores = start[:n - width] + end[width:]
      i = int(np.argmax(scores))
      if scores[i] > best:
        best = float(scores[i])
        answer = e["context"][offsets[i][0]:offsets[i + width][1]]
  return {"answer": answer, "score": best if np.isfinite(best) else None,
          "windows": len(e["offsets"])}


def _tagging(e, out):
  labels = e["task"]["labels"]
  default = "O" if "O" in labels else labels[0]
  words = e["words"]
  tags, probs = [default] * len(words), [None] * len(words)
  p = _softmax(out["tag_logits"][0][..., :len(labels)])
  for position, word in e["first"]:
    tags[word], probs[word] = labels[int(p[position].argmax())], float(p[position].max())
  return {"words": list(words), "tags": tags, "tag_probabilities": probs}


DECODERS = {"classification": _classification, "regression": _regression,
            "multiple_choice": _choice, "span": _span, "tagging": _tagging}


def load(directory=HERE):
  return Model(directory)


def _text_record(model, argv):
  """--task / --text / --text-pair / --choice -> (task name, record) as camtl-predict reads them."""
  value = lambda flag: argv[argv.index(flag) + 1] if flag in argv else None  # noqa: E731
  task = model.task(value("--task"))
  text, pair = value("--text"), value("--text-pair")
  choices = [argv[i + 1] for i, a in enumerate(argv) if a == "--choice"]
  record = {"span": {"question": text, "context": pair},
            "multiple_choice": {"premise": text, "choices": choices},
            "tagging": {"text": text}}.get(task["type"], {"text": text, "text_pair": pair})
  return dict({k: v for k, v in record.items() if v is not None}, task=task["name"])


def main(argv):
  if "--text" in argv:
    if argv.index("--text") + 1 >= len(argv) or not argv[argv.index("--text") + 1].strip():
      print("load_and_run.py: error: --text needs a non-empty text", file=sys.stderr)
      return 2
    model = load()
    try:
      answer = model.predict_texts([_text_record(model, argv)])[0]
    except ValueError as e:
      print(f"load_and_run.py: error: {e}", file=sys.stderr)
      return 2
    print(json.dumps(answer, ensure_ascii=False))
    return 0
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  model = load()
  with np.load(argv[0]) as data:
    inputs = {k: data[k] for k in data.files}
  np.savez(argv[1], **model(**inputs))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
