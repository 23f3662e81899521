"""Test-set prediction files in the GLUE and SuperGLUE leaderboard formats.

GLUE: one <Task>.tsv per task (MNLI-m.tsv and MNLI-mm.tsv for MNLI's two test sets), a header
"index<TAB>prediction", one row per test example sorted by index; labels as in the task's files
("0"/"1" for CoLA, SST-2, MRPC, QQP, WNLI; entailment/... strings for MNLI, QNLI, RTE, AX); STS-B
scores clipped to [0, 5] and written with 3 decimals.

SuperGLUE: one <Task>.jsonl per task, {"idx": ..., "label": ...} per line: BoolQ and WiC
"true"/"false", WSC "True"/"False", CB/RTE/AX-b/AX-g label strings, COPA the choice index (int);
MultiRC one line per paragraph, {"idx": p, "passage": {"questions": [{"idx": q, "answers":
[{"idx": a, "label": 0 or 1}]}]}}; ReCoRD {"idx": query idx, "label": the answer text}.
(The spellings are those of jiant, the SuperGLUE authors' toolkit.)

A prediction count that differs from the official test size is logged as a warning, so dev-set
files can still be written.
"""
from __future__ import annotations

import collections
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import logging

from camtl_jax.tasks import base, metrics, registry
from camtl_jax.tasks.base import Task

log = logging.getLogger(__name__)

GLUE_FILES = {"glue/cola": "CoLA", "glue/sst2": "SST-2", "glue/mrpc": "MRPC", "glue/stsb": "STS-B",
              "glue/qqp": "QQP", "glue/qnli": "QNLI", "glue/rte": "RTE", "glue/wnli": "WNLI",
              "glue/ax": "AX"}
MNLI_FILES = {"test_matched": "MNLI-m", "test_mismatched": "MNLI-mm"}
SUPERGLUE_FILES = {"superglue/boolq": "BoolQ", "superglue/cb": "CB", "superglue/copa": "COPA",
                   "superglue/multirc": "MultiRC", "superglue/record": "ReCoRD",
                   "superglue/rte": "RTE", "superglue/wic": "WiC", "superglue/wsc": "WSC",
                   "superglue/axb": "AX-b", "superglue/axg": "AX-g"}
# Official test-set sizes (rows of the test files; ReCoRD queries).
TEST_SIZES = {"CoLA": 1063, "SST-2": 1821, "MRPC": 1725, "STS-B": 1379, "QQP": 390965,
              "MNLI-m": 9796, "MNLI-mm": 9847, "QNLI": 5463, "RTE": 3000, "WNLI": 146, "AX": 1104,
              "BoolQ": 3245, "CB": 250, "COPA": 500, "ReCoRD": 10000, "WiC": 1400, "WSC": 146,
              "AX-b": 1104, "AX-g": 356}
STSB_RANGE = (0.0, 5.0)


def _score(task: Task, prediction: Any) -> str:
  value = float(prediction)
  if not math.isfinite(value):
    raise ValueError(f"{task.name}: prediction {prediction!r} is not a finite number")
  return f"{min(max(value, STSB_RANGE[0]), STSB_RANGE[1]):.3f}"


def _checked_pairs(task: Task, predictions: Sequence, example_ids: Sequence, name: str
                   ) -> list[tuple[Any, Any]]:
  if len(predictions) != len(example_ids):
    raise ValueError(f"{task.name}: {len(predictions)} predictions for {len(example_ids)} ids")
  counts = collections.Counter(example_ids)
  repeated = [i for i, n in counts.items() if n > 1]
  if repeated:
    raise ValueError(f"{task.name}: repeated example ids {repeated[:5]}")
  if None in counts:
    raise ValueError(f"{task.name}: an example has no example_id")
  if name in TEST_SIZES and len(predictions) != TEST_SIZES[name]:
    log.warning("%s: %d predictions; the official test set has %d", name, len(predictions),
                    TEST_SIZES[name])
  return sorted(zip(example_ids, predictions), key=lambda pair: pair[0])


def _resolve(task: Task | str) -> Task:
  return registry.get_task(task) if isinstance(task, str) else task


def write_glue_submission(task: Task | str, predictions: Sequence, example_ids: Sequence,
                          out_dir: str | Path, split: str = "test") -> Path:
  """Writes <out_dir>/<Task>.tsv for a GLUE task's test predictions; returns its path.

  split: only used by MNLI, "test_matched" (MNLI-m.tsv) or "test_mismatched" (MNLI-mm.tsv).
  """
  task = _resolve(task)
  if task.name == "glue/mnli":
    if split not in MNLI_FILES:
      raise ValueError(f"glue/mnli: split must be one of {list(MNLI_FILES)}, got {split!r}")
    name = MNLI_FILES[split]
  elif task.name in GLUE_FILES:
    name = GLUE_FILES[task.name]
  else:
    raise ValueError(f"{task.name} is not a GLUE task; GLUE tasks: "
                     f"{sorted(GLUE_FILES) + ['glue/mnli']}")
  fmt = _score if task.type == base.REGRESSION else metrics.to_label
  rows = [f"{int(i)}\t{fmt(task, p)}" for i, p in _checked_pairs(task, predictions, example_ids,
                                                                   name)]
  path = Path(out_dir) / f"{name}.tsv"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("index\tprediction\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
  return path


def _bool_label(capitalise: bool) -> Callable[[Task, Any], str]:
  def fmt(task: Task, prediction: Any) -> str:
    label = metrics.to_label(task, prediction)
    return label.capitalize() if capitalise else label
  return fmt


def _choice(task: Task, prediction: Any) -> int:
  index = int(prediction)
  if not 0 <= index < task.num_choices:
    raise ValueError(f"{task.name}: choice {index} outside 0..{task.num_choices - 1}")
  return index


_SUPERGLUE_LABEL: dict[str, Callable[[Task, Any], Any]] = {
    "superglue/boolq": _bool_label(False),
    "superglue/wic": _bool_label(False),
    "superglue/wsc": _bool_label(True),
    "superglue/cb": metrics.to_label,
    "superglue/rte": metrics.to_label,
    "superglue/axb": metrics.to_label,
    "superglue/axg": metrics.to_label,
    "superglue/copa": _choice,
    "superglue/multirc": lambda task, p: int(metrics.to_label(task, p)),
    "superglue/record": lambda task, p: str(p),
}


def _multirc_lines(task: Task, pairs: list[tuple[Any, Any]]) -> list[dict]:
  """Nests (paragraph, question, answer) -> label into one record per paragraph."""
  nested: dict[int, dict[int, list[dict]]] = collections.defaultdict(dict)
  for ids, prediction in pairs:
    if not (isinstance(ids, tuple) and len(ids) == 3):
      raise ValueError(f"{task.name}: example ids must be (paragraph, question, answer), "
                       f"got {ids!r}")
    p, q, a = (int(x) for x in ids)
    nested[p].setdefault(q, []).append({"idx": a, "label": _SUPERGLUE_LABEL[task.name](task,
                                                                                     prediction)})
  return [{"idx": p, "passage": {"questions": [{"idx": q, "answers": answers}
                                               for q, answers in questions.items()]}}
          for p, questions in nested.items()]


def write_superglue_submission(task: Task | str, predictions: Sequence, example_ids: Sequence,
                               out_dir: str | Path) -> Path:
  """Writes <out_dir>/<Task>.jsonl for a SuperGLUE task's test predictions; returns its path.

  predictions: class labels or indices (classification), choice indices (COPA), answer strings
  (ReCoRD). example_ids: the Examples' example_id (MultiRC: (paragraph, question, answer)).
  """
  task = _resolve(task)
  if task.name not in SUPERGLUE_FILES:
    raise ValueError(f"{task.name} is not a SuperGLUE task; SuperGLUE tasks: "
                     f"{sorted(SUPERGLUE_FILES)}")
  name = SUPERGLUE_FILES[task.name]
  ids = [tuple(i) if isinstance(i, list) else i for i in example_ids]
  pairs = _checked_pairs(task, predictions, ids, name)
  if task.name == "superglue/multirc":
    records = _multirc_lines(task, pairs)
  else:
    fmt = _SUPERGLUE_LABEL[task.name]
    records = [{"idx": i, "label": fmt(task, p)} for i, p in pairs]
  path = Path(out_dir) / f"{name}.jsonl"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
  return path


def has_format(task: Task) -> bool:
  """Whether the task has a GLUE or SuperGLUE leaderboard file."""
  return task.name in GLUE_FILES or task.name == "glue/mnli" or task.name in SUPERGLUE_FILES


def write_submission(task: Task | str, predictions: Sequence, example_ids: Sequence,
                     out_dir: str | Path, split: str = "test") -> Path:
  """The GLUE or SuperGLUE file of a task's test predictions (whichever benchmark it is in)."""
  task = _resolve(task)
  if task.name in SUPERGLUE_FILES:
    return write_superglue_submission(task, predictions, example_ids, out_dir)
  return write_glue_submission(task, predictions, example_ids, out_dir, split)
