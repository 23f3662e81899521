"""Prediction with a trained workdir (DESIGN 7): `camtl-predict`.

  camtl-predict --workdir DIR --task demo/sentiment --text "what a great movie !"
  camtl-predict --workdir DIR --task glue/rte --input pairs.jsonl --output predictions.jsonl
  camtl-predict --workdir DIR --task demo/span --input dev.json --format task

A workdir is reloaded without the config file: WORKDIR/config.json (the training config),
WORKDIR/tasks.json (labels and the train split's regression statistics, written by
train.train_and_evaluate) and the selected checkpoint: the best by dev score, else the latest.

Inputs (one example per jsonl object or tsv row with a header; keys per task type):
  classification / regression  text, text_pair (optional)
  multiple_choice              choices: [[first, second], ...], or premise + choices: [str, ...]
  span                         question, context
  tagging                      words: [str, ...], or text (split on whitespace)
`--format task` reads the task's own distribution format (GLUE tsv, COPA jsonl, CoNLL, SQuAD json).

Outputs, one JSON object per example, in the task's natural format:
  classification   label, probabilities {label: p}
  regression       value (the task's original scale), std (predictive, same scale)
  multiple_choice  choice (index), probabilities [p per choice]
  span             answer (text), score (start + end logit); long contexts are read in
                   doc-stride windows ("windows": n)
  tagging          words, tags, tag_probabilities (of the chosen tag; null for words cut off)
plus "id" and "truncated" (the example lost tokens to max_length; counted and logged; with
--on-long error such an example is an error instead).

Batching is the evaluation's: input_pipeline.encode_split -> eval_batches (dynamic padding to bucket
lengths, shortest first) -> the jitted deterministic forward -> train.PREDICTORS, so a prediction
equals the evaluation step's for the same example.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from camtl_jax import checkpoint, input_pipeline, train
from camtl_jax.models import bert
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.tasks import base, metrics, readers, registry
from camtl_jax.tasks.base import DataError, Example, Task

log = logging.getLogger(__name__)

ON_LONG = ("truncate", "error")


# ------------------------------------------------------------------------------------------------
# Loading a workdir


@dataclasses.dataclass
class TrainedModel:
  """A trained workdir, loaded: everything prediction, export and adaptation need.

  stats: per task, the train split's regression (mean, std) ((0, 1) for other types).
  """
  workdir: Path
  config: ml_collections.ConfigDict
  tasks: list[Task]
  stats: list[tuple[float, float]]
  model: camtl_lib.CAMTL
  params: Any
  tokenizer: Any
  step: int
  meta: dict

  @property
  def specs(self) -> tuple[camtl_lib.TaskSpec, ...]:
    return self.model.tasks

  @property
  def num_choices(self) -> int:
    """K of every batch: the largest choice count of the model's tasks."""
    return camtl_lib.num_choices(self.model.tasks)

  def task_id(self, name: str) -> int:
    """The task's row in the model; ValueError naming the workdir's tasks otherwise."""
    names = [t.name for t in self.tasks]
    if name not in names:
      raise ValueError(f"unknown task {name!r}: the model in {self.workdir} was trained on "
                       f"{names}")
    return names.index(name)

  @functools.cached_property
  def apply(self) -> Callable:
    """jit(params, batch, head_types=None) -> the model's per-example outputs, deterministic (the
    eval step); head_types (static): only these heads, see camtl.choice_layout."""
    return jax.jit(lambda params, batch, head_types=None: self.model.apply(
        {"params": params}, batch, deterministic=True, head_types=head_types),
                   static_argnames="head_types")


def check_workdir(workdir: str | Path) -> Path:
  """The resolved workdir; FileNotFoundError when it is missing or holds no checkpoint."""
  path = Path(workdir).expanduser().resolve()
  if not path.is_dir():
    raise FileNotFoundError(f"workdir {path} does not exist")
  ckpts = path / "checkpoints"
  if not ckpts.is_dir() or not any(p.name.isdigit() for p in ckpts.iterdir()):
    raise FileNotFoundError(f"workdir {path} holds no checkpoint (expected {ckpts}/<step>); "
                            "train first: python -m camtl_jax.main --config ... --workdir "
                            f"{path}")
  return path


def load_config(workdir: Path) -> ml_collections.ConfigDict:
  """WORKDIR/config.json as a ConfigDict."""
  path = workdir / train.CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: the workdir was trained before configs were saved "
                            "into it; pass the training config (load(workdir, config=...))")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def select_step(workdir: Path) -> int:
  """The checkpoint with the best dev score, else the latest."""
  manager = checkpoint.make_manager(workdir, async_save=False)
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"workdir {workdir} holds no checkpoint")
  best = checkpoint.best_step(manager)
  manager.close()
  return best if best is not None else max(steps)


def _task_from_record(record: Mapping[str, Any]) -> Task:
  """The registry's Task of that name (checked against the record), else one built from it (a
  custom task of the training run that is not registered in this process)."""
  if record["name"] in registry.TASKS:
    task = registry.TASKS[record["name"]]
    if task.type != record["type"] or list(task.labels) != list(record["labels"]):
      raise ValueError(f"task {task.name!r} differs from the one the workdir was trained on: "
                       f"{task.type} {list(task.labels)} != {record['type']} {record['labels']}")
    return task
  return Task(name=record["name"], type=record["type"], labels=tuple(record["labels"]),
              metrics=tuple(record.get("metrics", ())), splits={}, reader=None,
              num_choices=record["num_choices"])


def load_task_records(workdir: Path, config) -> tuple[list[Task], list[tuple[float, float]]]:
  """Tasks and regression statistics from WORKDIR/tasks.json (or, for older workdirs, from the
  registry and the train data)."""
  from camtl_jax.tasks import demo
  demo.register_demo_tasks()
  path = workdir / train.TASKS_FILE
  if path.is_file():
    records = json.loads(path.read_text())
    return ([_task_from_record(r) for r in records],
            [(float(r["target_mean"]), float(r["target_std"])) for r in records])
  tasks, data_dir = train.load_tasks(config, workdir)
  stats = [(0.0, 1.0)] * len(tasks)
  for i, task in enumerate(tasks):
    if task.type == base.REGRESSION:  # mean / std of the train split, as in training
      examples = registry.load_split(task, data_dir, "train", source=config.data_source)
      split = input_pipeline.encode_split(task, examples, load_tokenizer(config), config.max_length,
                                          str(workdir / "cache"), "train")
      stats[i] = (split.target_mean, split.target_std)
  return tasks, stats


def build_model(meta: Mapping[str, Any], tasks: Sequence[Task], config) -> camtl_lib.CAMTL:
  """The CAMTL module of a checkpoint, from its fingerprint (encoder and model shapes)."""
  fp = meta.get("fingerprint", {})
  if [t.name for t in tasks] != list(fp.get("tasks", [])):
    raise ValueError(f"the checkpoint's tasks {fp.get('tasks')} differ from tasks.json "
                     f"{[t.name for t in tasks]}")
  encoder = bert.EncoderConfig(**fp["encoder"], dtype=config.dtype)
  model_config = camtl_lib.CAMTLConfig.from_config(fp["model"])
  return camtl_lib.CAMTL(encoder=encoder, config=model_config,
                         tasks=tuple(camtl_lib.TaskSpec.from_task(t) for t in tasks))


def load_tokenizer(config) -> Any:
  from camtl_jax import convert
  return convert.load_tokenizer(train.resolve_model_path(config.model_path))


def restore(workdir: Path, step: int) -> tuple[Any, dict]:
  """(params as numpy, meta) of one checkpoint (onto this process's device, whatever devices saved
  it: checkpoint.load_state)."""
  import orbax.checkpoint as ocp
  _, state = checkpoint.load_state(workdir, step)
  manager = checkpoint.make_manager(workdir, async_save=False)
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  manager.close()
  return state["params"], dict(meta)


def load(workdir: str | Path, step: int | None = None,
         config: ml_collections.ConfigDict | None = None) -> TrainedModel:
  """Loads a trained workdir: config, tasks, the selected checkpoint's params, the tokenizer."""
  path = check_workdir(workdir)
  config = config or load_config(path)
  step = select_step(path) if step is None else step
  params, meta = restore(path, step)
  params = jax.device_put(params)  # once, not at every forward
  tasks, stats = load_task_records(path, config)
  model = build_model(meta, tasks, config)
  log.info("loaded %s step %d (%d tasks)", path, step, len(tasks))
  return TrainedModel(path, config, tasks, stats, model, params, load_tokenizer(config), step, meta)


# ------------------------------------------------------------------------------------------------
# Forward over an encoded split


def encode(trained: TrainedModel, task_id: int, examples: Sequence[Example],
           split: str = "predict", cache_dir: str | None = None) -> input_pipeline.EncodedSplit:
  """Tokenises examples of one of the model's tasks (regression targets on the train scale)."""
  task = trained.tasks[task_id]
  stats = trained.stats[task_id] if task.type == base.REGRESSION else None
  c = trained.config
  return input_pipeline.encode_split(task, examples, trained.tokenizer, c.max_length, cache_dir,
                                     split, doc_stride=c.doc_stride, target_stats=stats)


def forward_split(trained: TrainedModel, split: input_pipeline.EncodedSplit, task_id: int,
                  params: Any = None, batch_size: int | None = None
                  ) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
  """(rows per batch, outputs per batch) over every row of the split, as train.predict_split
  batches them (padding rows dropped)."""
  c = trained.config
  params = trained.params if params is None else params
  buckets = input_pipeline.default_buckets(c.max_length, c.bucket_step)
  num_choices, head_types = camtl_lib.choice_layout(trained.specs, split.task.type)
  rows, outputs = [], []
  for batch, batch_rows in input_pipeline.eval_batches(
      split, task_id, batch_size or c.eval_batch_size, num_choices=num_choices, buckets=buckets):
    out = jax.device_get(trained.apply(params, batch, head_types=head_types))
    keep = np.flatnonzero(batch_rows >= 0)
    rows.append(batch_rows[keep])
    outputs.append({k: np.asarray(v)[keep] for k, v in out.items()
                    if k not in ("loss", "aux_loss")})
  return rows, outputs


def in_example_order(split, rows: Sequence[np.ndarray], values: Sequence) -> list:
  """Per-row values in visiting order -> per-example list (one row per example)."""
  ordered = [None] * split.num_examples
  for position, row in enumerate(np.concatenate(rows)):
    ordered[int(split.arrays["example_index"][row])] = values[position]
  return ordered


def predictions(trained: TrainedModel, split, rows, outputs) -> list:
  """The evaluation's predictions (train.PREDICTORS), in example order."""
  preds = train.PREDICTORS[split.task.type](split, rows, outputs)
  if split.task.type in (base.SPAN, base.TAGGING):
    return preds
  return in_example_order(split, rows, preds)


def references(split) -> list:
  """The gold references of a labelled split, in the form metrics.compute_metrics takes."""
  by_type = {base.SPAN: metrics.gold_answers, base.TAGGING: lambda ex: list(ex.tags)}
  return [by_type.get(split.task.type, lambda ex: ex.label)(ex) for ex in split.examples]


def evaluate_split(trained: TrainedModel, split, task_id: int, params: Any = None
                   ) -> tuple[dict[str, float], list]:
  """(the task's official metrics, predictions) on a labelled split."""
  rows, outputs = forward_split(trained, split, task_id, params)
  preds = predictions(trained, split, rows, outputs)
  results = metrics.compute_metrics(split.task, preds, references(split),
                                    [ex.example_id for ex in split.examples], split=split.split)
  return results, preds


# ------------------------------------------------------------------------------------------------
# Records: predictions with probabilities / scores, per task type


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _cat(outputs: Sequence[Mapping[str, np.ndarray]], key: str) -> np.ndarray:
  return np.concatenate([o[key] for o in outputs])


def _classification_records(split, rows, outputs, preds) -> list[dict]:
  labels = split.task.labels
  logits = _cat(outputs, "cls_logits")[:, :len(labels)]
  probs = in_example_order(split, rows, list(_softmax(logits)))
  return [{"label": label, "probabilities": {l: float(x) for l, x in zip(labels, p)}}
          for label, p in zip(preds, probs)]


def _regression_records(split, rows, outputs, preds) -> list[dict]:
  std = np.sqrt(np.exp(_cat(outputs, "regression_log_var"))) * split.target_std
  std = in_example_order(split, rows, list(std))
  return [{"value": float(v), "std": float(s)} for v, s in zip(preds, std)]


def _choice_records(split, rows, outputs, preds) -> list[dict]:
  n = split.task.num_choices
  probs = in_example_order(split, rows, list(_softmax(_cat(outputs, "choice_logits")[:, :n])))
  return [{"choice": int(c), "probabilities": [float(x) for x in p]} for c, p in zip(preds, probs)]


def _span_records(split, rows, outputs, preds) -> list[dict]:
  """Answer text (the evaluation's decoding) and its score: the best start + end logit over the
  example's windows."""
  best = np.full(split.num_examples, -np.inf)
  offsets = split.arrays["offsets"]
  for r, out in zip(rows, outputs):
    start, end = out["start_logits"], out["end_logits"]
    allowed = offsets[r, :start.shape[1], 0] >= 0
    score, _, _ = input_pipeline._best_window_spans(  # pylint: disable=protected-access
        start, end, allowed, input_pipeline.MAX_ANSWER_LENGTH)
    np.maximum.at(best, split.arrays["example_index"][r], score)
  windows = np.bincount(split.arrays["example_index"], minlength=split.num_examples)
  return [{"answer": a, "score": float(s) if np.isfinite(s) else None, "windows": int(w)}
          for a, s, w in zip(preds, best, windows)]


def _tagging_records(split, rows, outputs, preds) -> list[dict]:
  """Tags per word (the evaluation's), with the probability of each word's tag at its first
  sub-token (None for words cut off by max_length)."""
  probs = [[None] * len(ex.words) for ex in split.examples]
  word_ids = split.arrays["word_ids"]
  for r, out in zip(rows, outputs):
    p = _softmax(out["tag_logits"][..., :split.task.num_labels]).max(-1)  # [n, L]
    for row, row_p in zip(r, p):
      words = word_ids[row, :row_p.shape[0]]
      for pos in np.flatnonzero(words >= 0):
        probs[split.arrays["example_index"][row]][words[pos]] = float(row_p[pos])
  return [{"words": list(ex.words), "tags": tags, "tag_probabilities": p}
          for ex, tags, p in zip(split.examples, preds, probs)]


# Task type -> f(split, rows, outputs, predictions in example order) -> one dict per example.
RECORDS: dict[str, Callable[..., list[dict]]] = {
    base.CLASSIFICATION: _classification_records,
    base.REGRESSION: _regression_records,
    base.MULTIPLE_CHOICE: _choice_records,
    base.SPAN: _span_records,
    base.TAGGING: _tagging_records,
}


def long_examples(trained: TrainedModel, task: Task, examples: Sequence[Example]) -> np.ndarray:
  """bool [N]: examples with more tokens than max_length (span: the question + whole context, which
  is read in windows; other types lose tokens)."""
  lengths = input_pipeline.token_lengths(task, examples, trained.tokenizer)
  return lengths > trained.config.max_length


def _check_long(task: Task, examples: Sequence[Example], long: np.ndarray, on_long: str,
                max_length: int) -> None:
  if on_long not in ON_LONG:
    raise ValueError(f"on_long must be one of {ON_LONG}, got {on_long!r}")
  if on_long == "error" and long.any() and task.type != base.SPAN:
    first = examples[int(np.flatnonzero(long)[0])]
    raise DataError(*_where(first.guid), None,
                    f"{int(long.sum())} example(s) longer than the model's max_length "
                    f"{max_length} tokens (first shown); shorten them or use on_long='truncate'")


def _where(guid: str) -> tuple[str, str | None]:
  path, sep, line = guid.rpartition(":")
  return (path, line) if sep else (guid, None)


def predict(trained: TrainedModel, task_name: str, examples: Sequence[Example],
            on_long: str = "truncate", batch_size: int | None = None) -> list[dict]:
  """One record per example (see the module docstring), in input order."""
  if not examples:
    raise ValueError("no examples to predict")
  task_id = trained.task_id(task_name)
  task = trained.tasks[task_id]
  long = long_examples(trained, task, examples)
  _check_long(task, examples, long, on_long, trained.config.max_length)
  split = encode(trained, task_id, examples)
  rows, outputs = forward_split(trained, split, task_id, batch_size=batch_size)
  records = RECORDS[task.type](split, rows, outputs, predictions(trained, split, rows, outputs))
  truncated = long if task.type != base.SPAN else np.zeros(len(examples), bool)
  if truncated.any():
    log.warning("%s: %d of %d examples longer than %d tokens were truncated", task.name,
                int(truncated.sum()), len(examples), trained.config.max_length)
  elif task.type == base.SPAN and long.any():
    log.info("%s: %d of %d contexts longer than %d tokens read in doc-stride windows", task.name,
             int(long.sum()), len(examples), trained.config.max_length)
  return [{"id": _example_id(ex, i), **r, "truncated": bool(t)}
          for i, (ex, r, t) in enumerate(zip(examples, records, truncated))]


def _example_id(ex: Example, index: int) -> Any:
  if ex.example_id is None:
    return index
  return list(ex.example_id) if isinstance(ex.example_id, tuple) else ex.example_id


# ------------------------------------------------------------------------------------------------
# Reading inputs


def _text(record: Mapping, key: str, path: str, line: int, required: bool = True) -> str | None:
  if key not in record:
    if required:
      raise DataError(path, line, key, f"missing field (fields present: {sorted(record)})")
    return None
  value = record[key]
  if not isinstance(value, str):
    raise DataError(path, line, key, f"expected a string, got {type(value).__name__} {value!r}")
  return value


def _texts_example(record, path, line) -> Example:
  first = _text(record, "text", path, line)
  second = _text(record, "text_pair", path, line, required=False)
  return Example(guid=f"{path}:{line}", texts=(first,) if second is None else (first, second),
                 example_id=record.get("id"))


def _choice_example(record, path, line) -> Example:
  choices = record.get("choices")
  if not isinstance(choices, list) or not choices:
    raise DataError(path, line, "choices", "expected a non-empty list of [first, second] pairs, "
                    "or of strings with a 'premise'")
  premise = _text(record, "premise", path, line, required=False)
  pairs = []
  for c in choices:
    if premise is not None and isinstance(c, str):
      pairs.append((premise, c))
    elif isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c):
      pairs.append((c[0], c[1]))
    else:
      raise DataError(path, line, "choices", f"bad choice {c!r}: expected [first, second] (or a "
                      "string when 'premise' is given)")
  return Example(guid=f"{path}:{line}", choices=tuple(pairs), example_id=record.get("id"))


def _span_example(record, path, line) -> Example:
  return Example(guid=f"{path}:{line}", question=_text(record, "question", path, line),
                 context=_text(record, "context", path, line), example_id=record.get("id"))


def _tagging_example(record, path, line) -> Example:
  words = record.get("words")
  if words is None:
    words = (_text(record, "text", path, line) or "").split()
  if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
    raise DataError(path, line, "words", "expected a non-empty list of strings (or a 'text')")
  return Example(guid=f"{path}:{line}", words=tuple(words), example_id=record.get("id"))


# Task type -> f(record dict, path, line) -> Example, for the generic jsonl / tsv inputs.
RECORD_READERS: dict[str, Callable[[Mapping, str, int], Example]] = {
    base.CLASSIFICATION: _texts_example,
    base.REGRESSION: _texts_example,
    base.MULTIPLE_CHOICE: _choice_example,
    base.SPAN: _span_example,
    base.TAGGING: _tagging_example,
}


def _jsonl_records(path: str) -> Iterator[tuple[int, dict]]:
  with open(path, "rb") as f:
    for line, raw in enumerate(f, 1):
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError:
        raise DataError(path, line, None, "not UTF-8 text") from None
      if not text.strip():
        continue
      try:
        record = json.loads(text)
      except json.JSONDecodeError as e:
        raise DataError(path, line, None, f"invalid JSON ({e.msg} at column {e.colno}); expected "
                        "one JSON object per line (or pass --format tsv / task)") from None
      if not isinstance(record, dict):
        raise DataError(path, line, None, f"expected a JSON object, got {type(record).__name__}")
      yield line, record


def _tsv_records(path: str) -> Iterator[tuple[int, dict]]:
  with open(path, encoding="utf-8", newline="") as f:
    rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, None)
    if not header:
      raise DataError(path, 1, None, "empty file: expected a header row naming the columns")
    for line, fields in enumerate(rows, 2):
      if not any(x.strip() for x in fields):
        continue
      if len(fields) != len(header):
        raise DataError(path, line, None, f"{len(fields)} fields but the header {header} has "
                        f"{len(header)}")
      yield line, dict(zip(header, fields))


_FILE_READERS = {"jsonl": _jsonl_records, "tsv": _tsv_records}
FORMATS = ("jsonl", "tsv", "task")


def read_inputs(task: Task, path: str | Path, file_format: str | None = None) -> list[Example]:
  """Examples from a jsonl / tsv file (fields: module docstring) or the task's own format."""
  path = str(path)
  if not Path(path).is_file():
    raise DataError(path, None, None, "input file not found")
  file_format = file_format or Path(path).suffix.lstrip(".")
  if file_format not in FORMATS:
    raise ValueError(f"{path}: unknown input format {file_format!r}; pass --format one of "
                     f"{FORMATS}")
  if file_format == "task":
    if task.reader is None:
      raise ValueError(f"task {task.name} has no reader here; use --format jsonl or tsv")
    examples = list(task.reader(path, "test", readers.SkipLog()))
  else:
    parse = RECORD_READERS[task.type]
    examples = [parse(record, path, line) for line, record in _FILE_READERS[file_format](path)]
  if not examples:
    raise DataError(path, None, None, "no examples in the file")
  return examples


def text_example(task: Task, text: str, text_pair: str | None = None,
                 choices: Sequence[str] = ()) -> Example:
  """One example from the command line: text (+ text_pair) / premise text + choices / question text
  + context text_pair / a sentence to tag."""
  record = {base.SPAN: {"question": text, "context": text_pair},
            base.MULTIPLE_CHOICE: {"premise": text, "choices": list(choices)},
            base.TAGGING: {"text": text}}.get(task.type, {"text": text, "text_pair": text_pair})
  record = {k: v for k, v in record.items() if v is not None}
  return RECORD_READERS[task.type](record, "--text", 1)


# ------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
  """`camtl-predict`: predictions of a trained workdir's task on new text."""
  parser = argparse.ArgumentParser(prog="camtl-predict", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--task", required=True, help="one of the workdir's tasks")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--input", help="jsonl or tsv file (or the task's own format, --format task)")
  source.add_argument("--text", help="one example: text / premise / question / sentence")
  parser.add_argument("--text-pair", help="second segment (pairs), or the context (span tasks)")
  parser.add_argument("--choice", action="append", default=[],
                      help="multiple choice: one choice (repeat); pairs with --text")
  parser.add_argument("--format", choices=FORMATS, help="input format (default: file extension)")
  parser.add_argument("--output", help="jsonl file (default: stdout)")
  parser.add_argument("--step", type=int, help="checkpoint step (default: best dev score, else "
                      "latest)")
  parser.add_argument("--batch-size", type=int)
  parser.add_argument("--on-long", choices=ON_LONG, default="truncate",
                      help="texts longer than max_length: truncate and report (default), or fail")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
  try:
    trained = load(args.workdir, args.step)
    task = trained.tasks[trained.task_id(args.task)]
    examples = (read_inputs(task, args.input, args.format) if args.input else
                [text_example(task, args.text, args.text_pair, args.choice)])
    records = predict(trained, args.task, examples, args.on_long, args.batch_size)
  except (ValueError, FileNotFoundError) as e:  # DataError is a ValueError
    print(f"camtl-predict: error: {e}", file=sys.stderr)
    return 2
  lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
  if args.output:
    Path(args.output).write_text(lines, encoding="utf-8")
  else:
    sys.stdout.write(lines)
  n_trunc = sum(r["truncated"] for r in records)
  print(f"camtl-predict: {len(records)} predictions for {args.task} (step {trained.step}); "
        f"{n_trunc} truncated to {trained.config.max_length} tokens", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
