"""Prediction with a trained model (workdir.load): the library behind `camtl-predict`.

  camtl-predict --workdir DIR --task demo/sentiment --text "what a great movie !"
  camtl-predict --workdir DIR --task glue/rte --input pairs.jsonl --output predictions.jsonl
  camtl-predict --workdir DIR --task demo/span --input dev.json --format task

A workdir is reloaded without the config file (workdir.load): its config.json, tasks.json and the
selected checkpoint (the best by dev score, else the latest).

Inputs (one example per jsonl object or tsv row with a header; keys per task type):
  classification / regression  text, text_pair (optional)
  multiple_choice              choices: [[first, second], ...], or premise + choices: [str, ...]
  span                         question, context
  tagging                      words: [str, ...], or text (split on whitespace)
`--format task` reads the task's own distribution format (GLUE tsv, COPA jsonl, CoNLL, SQuAD json,
a spec task's files). Without --format, a file that is not .jsonl / .tsv, or whose rows lack the
fields above, is read in the task's own format when that format reads it (else the error says so).

Outputs, one JSON object per example, in the task's natural format:
  classification   label, probabilities {label: p}
  regression       value (the task's original scale), std (predictive, same scale)
  multiple_choice  choice (index), probabilities [p per choice]
  span             answer (text), score (start + end logit); long contexts are read in
                   doc-stride windows ("windows": n)
  tagging          words, tags, tag_probabilities (of the chosen tag; null for words cut off)
plus "id" and "truncated" (the example lost tokens to max_length; counted and logged; with
--on-long error such an example is an error instead).

Batching and decoding are the evaluation's (evaluate.forward_split -> evaluate.predictions), so a
prediction equals the evaluation step's for the same example.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from camtl_jax import evaluate, input_pipeline
from camtl_jax.tasks import base, readers, registry, submission
from camtl_jax.tasks.base import DataError, Example, Task
from camtl_jax.workdir import TrainedModel

log = logging.getLogger(__name__)

ON_LONG = ("truncate", "error")


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
  probs = evaluate.in_example_order(split, rows, list(_softmax(logits)))
  return [{"label": label, "probabilities": {l: float(x) for l, x in zip(labels, p)}}
          for label, p in zip(preds, probs)]


def _regression_records(split, rows, outputs, preds) -> list[dict]:
  std = np.sqrt(np.exp(_cat(outputs, "regression_log_var"))) * split.target_std
  std = evaluate.in_example_order(split, rows, list(std))
  return [{"value": float(v), "std": float(s)} for v, s in zip(preds, std)]


def _choice_records(split, rows, outputs, preds) -> list[dict]:
  n = split.task.num_choices
  probs = evaluate.in_example_order(split, rows,
                                    list(_softmax(_cat(outputs, "choice_logits")[:, :n])))
  return [{"choice": int(c), "probabilities": [float(x) for x in p]} for c, p in zip(preds, probs)]


def _span_records(split, rows, outputs, preds) -> list[dict]:
  """Answer text (the evaluation's decoding) and its score: the best start + end logit over the
  example's windows."""
  best = np.full(split.num_examples, -np.inf)
  offsets = split.arrays["offsets"]
  for r, out in zip(rows, outputs):
    start, end = out["start_logits"], out["end_logits"]
    allowed = offsets[r, :start.shape[1], 0] >= 0
    score, _, _ = evaluate.best_window_spans(start, end, allowed)
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
    raise DataError.at(first.guid, None,
                       f"{int(long.sum())} example(s) longer than the model's max_length "
                       f"{max_length} tokens (first shown); shorten them or use "
                       "on_long='truncate'")


def predict(trained: TrainedModel, task_name: str, examples: Sequence[Example],
            on_long: str = "truncate", batch_size: int | None = None) -> list[dict]:
  """One record per example (see the module docstring), in input order."""
  if not examples:
    raise ValueError("no examples to predict")
  task_id = trained.task_id(task_name)
  task = trained.tasks[task_id]
  long = long_examples(trained, task, examples)
  _check_long(task, examples, long, on_long, trained.config.max_length)
  split = trained.encode(task_id, examples)
  rows, outputs = evaluate.forward_split(trained.apply, trained.params, split, task_id,
                                         trained.eval_setup(batch_size))
  records = RECORDS[task.type](split, rows, outputs, evaluate.predictions(split, rows, outputs))
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
  return readers.check_text(record[key], path, line, key)


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
    rows = (readers.split_tsv(text.rstrip("\r\n")) for text in f)  # as the task readers split
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
  given = file_format
  file_format = file_format or Path(path).suffix.lstrip(".")
  if file_format not in FORMATS and not given and task.reader is not None:
    file_format = "task"  # e.g. a SQuAD .json, a CoNLL file, a spec task's csv
  if file_format not in FORMATS:
    raise ValueError(f"{path}: unknown input format {file_format!r}; pass --format one of "
                     f"{FORMATS}")
  if file_format == "task":
    if task.reader is None:
      raise ValueError(f"task {task.name} has no reader here; use --format jsonl or tsv")
    examples = _task_format(task, path)
  else:
    examples = _generic_or_task_format(task, path, file_format, given is None)
  if not examples:
    raise DataError(path, None, None, "no examples in the file")
  return examples


def _task_format(task: Task, path: str) -> list[Example]:
  """The file in the task's own format, in the layout of the split its name says (a name like
  none of the task's files: the test file's layout, e.g. CoLA's header row)."""
  split = registry.file_split(task, path)
  try:
    return list(task.reader(path, split, readers.SkipLog()))
  except DataError as e:
    names = sorted({Path(f).name for s, f in task.splits.items() if s != "test"})
    if split != "test" or not names:
      raise
    prefix = str(DataError(e.path, e.line, e.field, ""))
    raise DataError(e.path, e.line, e.field, str(e).removeprefix(prefix) + f" (read in "
                    f"{task.name}'s test-file layout; a file named {' or '.join(names)} is "
                    "read in that split's)") from None


def _generic_or_task_format(task: Task, path: str, file_format: str, detect: bool
                            ) -> list[Example]:
  """The generic jsonl / tsv fields; when they are missing and the format was not given, the
  task's own format if it reads the file (a benchmark or spec file), else the error with a hint."""
  parse = RECORD_READERS[task.type]
  try:
    return [parse(record, path, line) for line, record in _FILE_READERS[file_format](path)]
  except DataError as e:
    if task.reader is None:
      raise
    if detect:
      try:
        examples = list(task.reader(path, registry.file_split(task, path), readers.SkipLog()))
      except (DataError, ValueError):
        examples = []
      if examples:
        log.info("%s: not the generic %s fields; read in %s's own format (--format task)",
                 path, file_format, task.name)
        return examples
    prefix = str(DataError(e.path, e.line, e.field, ""))
    raise DataError(e.path, e.line, e.field, str(e).removeprefix(prefix) + f" (a file in "
                    f"{task.name}'s own format reads with --format task)") from None


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
# Test-set files in the leaderboard formats

TEST_SPLITS = ("test", "test_matched", "test_mismatched")


def write_submissions(trained: TrainedModel, data_dir: str | Path, out_dir: str | Path,
                      max_examples: int = 0) -> list[Path]:
  """The GLUE / SuperGLUE submission file of every benchmark task of the model, predicted on its
  test split(s) from data_dir (tasks.submission formats); max_examples > 0 caps each split (a
  quick check: the writer then warns that the count differs from the official test size)."""
  tasks = [(i, t) for i, t in enumerate(trained.tasks) if submission.has_format(t)]
  if not tasks:
    raise ValueError(f"none of the model's tasks {[t.name for t in trained.tasks]} is a GLUE or "
                     "SuperGLUE task: no leaderboard format to write")
  paths = []
  for task_id, task in tasks:
    for split in (s for s in TEST_SPLITS if s in task.splits):
      examples = registry.load_split(task, str(data_dir), split,
                                     source=trained.config.data_source)
      examples = examples[:max_examples] if max_examples else examples
      encoded = trained.encode(task_id, examples, split)
      rows, outputs = evaluate.forward_split(trained.apply, trained.params, encoded, task_id,
                                             trained.eval_setup())
      preds = evaluate.predictions(encoded, rows, outputs)
      paths.append(submission.write_submission(task, preds, [ex.example_id for ex in examples],
                                               out_dir, split))
      log.info("%s %s: %d predictions -> %s", task.name, split, len(preds), paths[-1])
  return paths

