"""Official metrics of the tasks, per-task benchmark scores and the GLUE/SuperGLUE aggregates.

Every value is a fraction in [0, 1] (correlations in [-1, 1]); multiply by 100 for the
leaderboards' presentation.

Inputs of compute_metrics, per task type:
  classification: label strings (or class indices into task.labels);
  regression: floats;
  multiple_choice: choice indices;
  span: predicted answer strings; references: for each example, its gold answer strings (or one
    string), e.g. [gold_answers(ex) for ex in examples];
  tagging: per example, the sequence of tag strings.
MultiRC's question-level exact match groups answers by example_ids (paragraph, question, answer).

Benchmark scores (checked against the published leaderboard rows of BERT-large in the tests):
  * a task's score is the mean of its metrics (MRPC/QQP F1 and accuracy, STS-B Pearson and
    Spearman, CB F1 and accuracy, MultiRC F1a and EM, ReCoRD F1 and EM);
  * MNLI is one GLUE task whose score is the mean of its matched and mismatched accuracies: the GLUE
    score is the mean over the 9 tasks CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI, with
    the diagnostic AX left out (BERT-large: 80.5 this way; counting MNLI-m and MNLI-mm as two
    columns would give 81.1);
  * the SuperGLUE score is the mean over BoolQ, CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC; AX-b and
    AX-g are left out (BERT-large: 69.0).
Tasks outside the benchmarks score with their first (main) metric: F1 for SQuAD/MRQA (as MRQA
ranks), entity F1 for WNUT-17.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.stats
import seqeval.metrics
import sklearn.metrics
import logging

from camtl_jax.tasks import base, registry
from camtl_jax.tasks.base import Task

log = logging.getLogger(__name__)

# Scored tasks of each benchmark (diagnostics excluded).
BENCHMARK_TASKS = {
    "glue": ("glue/cola", "glue/sst2", "glue/mrpc", "glue/stsb", "glue/qqp", "glue/mnli",
             "glue/qnli", "glue/rte", "glue/wnli"),
    "superglue": ("superglue/boolq", "superglue/cb", "superglue/copa", "superglue/multirc",
                  "superglue/record", "superglue/rte", "superglue/wic", "superglue/wsc"),
}

# MNLI's two evaluation sets give two accuracies: "accuracy_m" and "accuracy_mm".
SPLIT_SUFFIX = {"dev_matched": "_m", "test_matched": "_m", "dev_mismatched": "_mm",
                "test_mismatched": "_mm"}


# ----------------------------------------------------------------------------------------------
# SQuAD answer normalisation and scores (the official v1.1 evaluation script's logic; MRQA and
# ReCoRD's evaluation scripts use the same).


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """Lower case, drop punctuation, drop the articles a/an/the, squeeze whitespace."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in _PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def squad_exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
  pred_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(gold).split()
  common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_tokens), same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def _max_over_gold(score: Callable[[str, str], float], prediction: str, golds: Sequence[str]
                   ) -> float:
  return max(score(prediction, g) for g in golds)


# ----------------------------------------------------------------------------------------------
# Metric callables: (predictions, references, example_ids, task) -> float, on normalised inputs.


def _accuracy(p, r, ids, task) -> float:
  return float(np.mean([a == b for a, b in zip(p, r)]))


def _binary_f1(p, r, ids, task) -> float:
  # Binary tasks list the positive class second ("1" = paraphrase / duplicate / true answer).
  return float(sklearn.metrics.f1_score(r, p, pos_label=task.labels[1], average="binary"))


def _macro_f1(p, r, ids, task) -> float:
  # SuperGLUE CB: F1 averaged over the classes (sklearn macro average, as the jiant baselines).
  return float(sklearn.metrics.f1_score(r, p, average="macro"))


def _mcc(p, r, ids, task) -> float:
  return float(sklearn.metrics.matthews_corrcoef(r, p))


def _pearson(p, r, ids, task) -> float:
  return float(scipy.stats.pearsonr(p, r)[0])


def _spearman(p, r, ids, task) -> float:
  return float(scipy.stats.spearmanr(p, r)[0])


def _question_em(p, r, ids, task) -> float:
  """MultiRC EM: the share of questions whose every answer option is labelled correctly."""
  if ids is None:
    raise ValueError(f"{task.name}: question_em needs example_ids (paragraph, question, answer)")
  correct: dict[Any, bool] = {}
  for pred, ref, ex_id in zip(p, r, ids):
    question = tuple(ex_id)[:2]
    correct[question] = correct.get(question, True) and pred == ref
  return float(np.mean(list(correct.values())))


def _span_em(p, r, ids, task) -> float:
  return float(np.mean([_max_over_gold(squad_exact_match, a, g) for a, g in zip(p, r)]))


def _span_f1(p, r, ids, task) -> float:
  return float(np.mean([_max_over_gold(squad_f1, a, g) for a, g in zip(p, r)]))


def _entity_f1(p, r, ids, task) -> float:
  # seqeval's default (conlleval-compatible) entity matching.
  return float(seqeval.metrics.f1_score([list(t) for t in r], [list(t) for t in p]))


METRICS: dict[str, Callable[..., float]] = {
    "accuracy": _accuracy,
    "f1": _binary_f1,
    "macro_f1": _macro_f1,
    "mcc": _mcc,
    "pearson": _pearson,
    "spearman": _spearman,
    "f1a": _binary_f1,  # MultiRC F1 over all answer options
    "question_em": _question_em,
    "span_em": _span_em,
    "span_f1": _span_f1,
    "entity_f1": _entity_f1,
}


# ----------------------------------------------------------------------------------------------
# Input normalisation per task type.


def to_label(task: Task, value: Any, what: str = "prediction") -> str:
  """A class given as a label string or as an index into task.labels, as the label string."""
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    if not 0 <= value < len(task.labels):
      raise ValueError(f"{task.name}: {what} class index {value} outside "
                       f"0..{len(task.labels) - 1}")
    return task.labels[value]
  if value not in task.labels:
    raise ValueError(f"{task.name}: unknown {what} label {value!r}; labels: {list(task.labels)}")
  return str(value)


def _as_labels(values: Sequence, task: Task, what: str) -> list[str]:
  return [to_label(task, v, what) for v in values]


def gold_answers(example: base.Example) -> list[str]:
  """The gold strings a span prediction is scored against: answer_texts, else the span texts."""
  return list(example.answer_texts) or [text for text, _ in example.answers]


def _as_golds(values: Sequence, task: Task, what: str) -> list[list[str]]:
  out = []
  for v in values:
    golds = [v] if isinstance(v, str) else list(v)
    if not golds:
      raise ValueError(f"{task.name}: a {what} has no gold answer")
    out.append(golds)
  return out


_NORMALISE: dict[str, tuple[Callable, Callable]] = {  # task type -> (predictions, references)
    base.CLASSIFICATION: (lambda v, t: _as_labels(v, t, "prediction"),
                          lambda v, t: _as_labels(v, t, "reference")),
    base.REGRESSION: (lambda v, t: np.asarray(v, np.float64),
                      lambda v, t: np.asarray(v, np.float64)),
    base.MULTIPLE_CHOICE: (lambda v, t: [int(x) for x in v], lambda v, t: [int(x) for x in v]),
    base.SPAN: (lambda v, t: [str(x) for x in v], lambda v, t: _as_golds(v, t, "reference")),
    base.TAGGING: (lambda v, t: [list(x) for x in v], lambda v, t: [list(x) for x in v]),
}


def compute_metrics(task: Task, predictions: Sequence, references: Sequence,
                    example_ids: Sequence | None = None, split: str | None = None
                    ) -> dict[str, float]:
  """The task's official metrics on one evaluation set.

  Args:
    task: the Task (its type decides the input form, see the module docstring).
    predictions, references: one per example, same order.
    example_ids: the Examples' example_id, needed by MultiRC's question EM.
    split: the evaluated split; MNLI's matched/mismatched splits suffix the metric names with
      "_m"/"_mm" so both fit in one results dict.

  Returns:
    metric name -> value, for each name in task.metrics.
  """
  if len(predictions) != len(references):
    raise ValueError(f"{task.name}: {len(predictions)} predictions for {len(references)} "
                     "references")
  if not len(predictions):
    raise ValueError(f"{task.name}: no predictions to score")
  if example_ids is not None and len(example_ids) != len(predictions):
    raise ValueError(f"{task.name}: {len(example_ids)} example_ids for {len(predictions)} "
                     "predictions")
  norm_pred, norm_ref = _NORMALISE[task.type]
  p, r = norm_pred(predictions, task), norm_ref(references, task)
  suffix = SPLIT_SUFFIX.get(split or "", "")
  return {name + suffix: METRICS[name](p, r, example_ids, task) for name in task.metrics}


def score_metrics(task: Task) -> tuple[str, ...]:
  """The metrics a task's score averages: every metric of a GLUE/SuperGLUE task, else the first.
  The one rule of a task's score: checkpoint selection, adaptation and the comparison tables."""
  return tuple(task.metrics if task.benchmark else task.metrics[:1])


def score_name(task: Task) -> str:
  """What main_score is for the task, in words ("accuracy", "mean of f1, accuracy")."""
  names = score_metrics(task)
  return names[0] if len(names) == 1 else "mean of " + ", ".join(names)


def main_score(task: Task, metrics: Mapping[str, float]) -> float:
  """The task's score: the mean of its score_metrics (all of a GLUE/SuperGLUE task's metrics,
  else its main metric).

  Metric names may carry MNLI's "_m"/"_mm" suffixes; all present variants are averaged.
  """
  names = score_metrics(task)
  values = [metrics[n + s] for n in names for s in ("", "_m", "_mm") if n + s in metrics]
  if not values:
    raise ValueError(f"{task.name}: none of the metrics {list(names)} in {sorted(metrics)}")
  return float(np.mean(values))


def aggregate_score(results: Mapping[str, Mapping[str, float]], benchmark: str = "glue",
                    strict: bool = False) -> float:
  """The GLUE or SuperGLUE score: the mean of the scored tasks' main_score (module docstring).

  Args:
    results: task name -> its metrics (compute_metrics output; for MNLI both "accuracy_m" and
      "accuracy_mm"). Tasks outside the benchmark and its diagnostics are ignored.
    benchmark: "glue" or "superglue".
    strict: require every scored task of the benchmark (the leaderboard's definition). Otherwise
      the mean runs over the benchmark tasks present (e.g. CA-MTL's 8 GLUE tasks without WNLI), and
      the missing ones are logged.
  """
  if benchmark not in BENCHMARK_TASKS:
    raise ValueError(f"unknown benchmark {benchmark!r}; known: {sorted(BENCHMARK_TASKS)}")
  scored = [n for n in BENCHMARK_TASKS[benchmark] if n in results]
  missing = [n for n in BENCHMARK_TASKS[benchmark] if n not in results]
  if not scored or (strict and missing):
    raise ValueError(f"{benchmark} score: missing results for {missing}")
  if missing:
    log.info("%s score over %d of %d tasks (missing %s)", benchmark, len(scored),
                 len(BENCHMARK_TASKS[benchmark]), missing)
  return float(np.mean([main_score(registry.get_task(n), results[n]) for n in scored]))
