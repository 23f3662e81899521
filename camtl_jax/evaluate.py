"""The one evaluation path: eval batches -> the deterministic forward -> predictions -> metrics.

Training (dev evaluation, checkpoint selection), prediction, adaptation and export all go through
`forward_split` and `predictions`, so a prediction equals the evaluation's for the same example:
  deterministic_forward  the model's outputs with dropout off, in chunks of rows (packed or not);
  forward_split   every row of an EncodedSplit in eval batches, shortest first: by default at
                  max_length with the K=1 batches packed (several examples to a row, so one
                  program per head group and no padding waste), else padded to bucket lengths;
                  K=1 and only the task's head for non-multiple-choice tasks
                  (camtl.choice_layout); on one device or as global arrays over a mesh;
  PREDICTORS      per task type, the model's outputs -> predictions aligned with the examples
                  (span answers decoded over doc-stride windows, tags per word, regression values
                  on the task's scale);
  evaluate_split  the task's official metrics (tasks.metrics) on a labelled split;
  evaluate        every dev split of a run, the mean of the tasks' main scores (checkpoint
                  selection) and, where the tasks belong to one, the GLUE / SuperGLUE aggregate.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from camtl_jax import input_pipeline, packing, sharding
from camtl_jax.input_pipeline import EncodedSplit
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.tasks import base, metrics

log = logging.getLogger(__name__)

MAX_ANSWER_LENGTH = 30   # tokens; the usual SQuAD decoding limit
# apply(params, batch, head_types) -> the model's per-example outputs (deterministic).
ApplyFn = Callable[[Any, Mapping[str, Any], Any], Mapping[str, Any]]
Outputs = list[dict[str, np.ndarray]]


# ------------------------------------------------------------------------------------------------
# The forward over a split


def _gather(x) -> np.ndarray:
  """A global jax.Array or this host's numpy slice -> the whole array on every host."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@dataclasses.dataclass(frozen=True)
class EvalSetup:
  """How a model's splits are batched: specs (the model's tasks, for the choice layout), the
  global batch size, the bucket lengths, and the mesh (None: one local device, numpy in and out;
  a mesh: every host feeds its slice of each global batch)."""
  specs: tuple
  batch_size: int
  buckets: tuple[int, ...]
  mesh: Any = None
  packed: bool = False   # batches at max_length, packed where K = 1 (a program per head group)


def eval_setup(config, specs: Sequence, mesh=None, batch_size: int | None = None) -> EvalSetup:
  """The EvalSetup of a training config."""
  return EvalSetup(tuple(specs), batch_size or config.eval_batch_size,
                   input_pipeline.default_buckets(config.max_length, config.bucket_step), mesh,
                   bool(config.pack_eval))


def deterministic_forward(model, params, batch: Mapping[str, jax.Array], chunk_rows: int = 0,
                          head_types: tuple[str, ...] | None = None) -> dict[str, jax.Array]:
  """The model's per-example outputs [B, ...] with dropout off (to be called under jit).

  With chunk_rows = c dividing B (0 < c < B), the B examples run c at a time in a lax.map, chunk j
  holding examples j, j + B/c, j + 2B/c, ... (strided, so that a chunk splits over the 'data'
  devices as the batch does). Per example the same computation, so the same outputs up to float32
  rounding; on CPU a chunk's activations stay in cache ([c*L, 4d] for the FFN), which made the
  forward 1.15x HF PyTorch's speed where the one-pass forward was 0.97x
  (docs/results/bench_hf_minilm.md). Otherwise the whole batch in one pass. A batch holding
  packed rows (packing.EVAL_ROWS_KEY) goes to packed_forward.
  """
  batch = dict(batch)
  packed_rows = batch.pop(packing.EVAL_ROWS_KEY, None)
  if packed_rows is not None:
    return packed_forward(model, params, batch, packed_rows, chunk_rows, head_types)
  apply = lambda rows: model.apply({"params": params}, rows, deterministic=True,  # noqa: E731
                                   head_types=head_types)
  examples = batch["input_ids"].shape[0]
  if not chunk_rows or chunk_rows >= examples or examples % chunk_rows:
    return apply(batch)
  chunks = examples // chunk_rows
  split = lambda x: jnp.swapaxes(x.reshape((chunk_rows, chunks) + x.shape[1:]), 0, 1)  # noqa: E731
  merge = lambda x: jnp.swapaxes(x, 0, 1).reshape((examples,) + x.shape[2:])  # noqa: E731
  return jax.tree.map(merge, jax.lax.map(apply, jax.tree.map(split, batch)))


def packed_forward(model, params, batch: Mapping[str, jax.Array], rows: Mapping[str, jax.Array],
                   chunk_rows: int = 0, head_types: tuple[str, ...] | None = None
                   ) -> dict[str, jax.Array]:
  """The outputs [B, ...] of a packed evaluation batch (packing.pack_eval_batch): the encoder on
  the rows [R, L], chunk_rows rows at a time up to the last row in use (packing.chunked_forward;
  0 or not dividing R: all R at once), the heads on each example unpacked (batch['unpack_index']
  [B, L]). Equal to the unpacked forward up to float32 rounding (tests/test_packing.py)."""
  forward = lambda part, index: model.apply(  # noqa: E731
      {"params": params}, dict(batch, unpack_index=index), deterministic=True,
      head_types=head_types, packed=part)
  num_rows = rows["input_ids"].shape[0]
  chunk = chunk_rows if chunk_rows and num_rows % chunk_rows == 0 else num_rows
  return packing.chunked_forward(forward, rows, batch["unpack_index"], chunk)


def forward_split(apply: ApplyFn, params: Any, split: EncodedSplit, task_id: int,
                  setup: EvalSetup) -> tuple[list[np.ndarray], Outputs]:
  """(rows per batch, outputs per batch) over every row of the split, padding rows dropped.

  rows: int [n_batch] row indices into the split; outputs: the model's per-row outputs
  (logits per head type; losses dropped) as numpy.
  """
  num_choices, head_types = camtl_lib.choice_layout(setup.specs, split.task.type)
  process = (jax.process_index(), jax.process_count()) if setup.mesh is not None else (0, 1)
  # Packed: every batch at max_length, so one program per head group; K = 1 batches packed.
  buckets = (split.arrays["input_ids"].shape[-1],) if setup.packed else setup.buckets
  pack = setup.packed and num_choices == 1
  rows, outputs = [], []
  for batch, host_rows in input_pipeline.eval_batches(
      split, task_id, setup.batch_size, num_choices=num_choices, buckets=buckets,
      process_index=process[0], process_count=process[1]):
    if pack:
      batch = packing.pack_eval_batch(batch, task_id, host_rows >= 0, *process)
    if setup.mesh is not None:
      out = apply(params, sharding.global_batch(batch, setup.mesh), head_types)
      batch_rows, fetch = _gather(host_rows), _gather
    else:
      out = jax.device_get(apply(params, batch, head_types))
      batch_rows, fetch = host_rows, np.asarray
    keep = np.flatnonzero(batch_rows >= 0)
    rows.append(batch_rows[keep])
    outputs.append({k: fetch(v)[keep] for k, v in out.items() if k not in ("loss", "aux_loss")})
  return rows, outputs


def in_example_order(split: EncodedSplit, rows: Sequence[np.ndarray], values: Sequence) -> list:
  """Per-row values in visiting order -> per-example list (one row per example)."""
  ordered = [None] * split.num_examples
  for position, row in enumerate(np.concatenate(rows)):
    ordered[int(split.arrays["example_index"][row])] = values[position]
  return ordered


# ------------------------------------------------------------------------------------------------
# Outputs -> predictions, per task type


def _as_pieces(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
  """Per-batch outputs may have different bucket lengths; accept one array or a list of them."""
  return [np.asarray(x)] if isinstance(x, np.ndarray) else [np.asarray(p) for p in x]


def best_window_spans(start: np.ndarray, end: np.ndarray, allowed: np.ndarray,
                      max_answer_length: int = MAX_ANSWER_LENGTH
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Best (score, start, end) per window [n] with start <= end < start + max_answer_length.

  start, end: float [n, L] logits; allowed: bool [n, L] context positions.
  """
  n, length = start.shape
  s = np.where(allowed, start, -np.inf)
  e = np.where(allowed, end, -np.inf)
  best = np.full(n, -np.inf)
  best_start = np.zeros(n, np.int64)
  best_width = np.zeros(n, np.int64)
  for width in range(min(max_answer_length, length)):  # O(L * max_answer_length), no L x L matrix
    scores = s[:, :length - width] + e[:, width:]
    pos = np.argmax(scores, axis=1)
    value = scores[np.arange(n), pos]
    better = value > best
    best = np.where(better, value, best)
    best_start = np.where(better, pos, best_start)
    best_width = np.where(better, width, best_width)
  return best, best_start, best_start + best_width


def span_answers(split: EncodedSplit, rows: np.ndarray | Sequence[np.ndarray],
                 start_logits: np.ndarray | Sequence[np.ndarray],
                 end_logits: np.ndarray | Sequence[np.ndarray],
                 max_answer_length: int = MAX_ANSWER_LENGTH) -> list[str]:
  """Best answer text per source example of a span split (aligned with split.examples).

  Over all windows of an example, picks the span of maximal start + end logit with start <= end,
  at most max_answer_length tokens, on context tokens only.

  Args:
    split: the span EncodedSplit (with examples).
    rows: int [n] window rows (eval_batches' rows; -1 = padding, ignored), or a list per batch.
    start_logits, end_logits: float [n, L] with L <= L_max (or lists per batch, L may differ).
  Returns:
    list of num_examples answer strings ("" for an example with no valid span).
  """
  offsets = split.arrays["offsets"]
  best = np.full(split.num_examples, -np.inf)
  best_row = np.full(split.num_examples, -1, np.int64)
  best_span = np.zeros((split.num_examples, 2), np.int64)
  for r, s, e in zip(_as_pieces(rows), _as_pieces(start_logits), _as_pieces(end_logits)):
    keep = r >= 0
    r, s, e = r[keep], s[keep], e[keep]
    allowed = offsets[r, :s.shape[1], 0] >= 0
    score, start, end = best_window_spans(s, e, allowed, max_answer_length)
    for row, sc, st, en in zip(r, score, start, end):  # windows of one batch, cheap Python
      ex = split.arrays["example_index"][row]
      if sc > best[ex]:
        best[ex], best_row[ex], best_span[ex] = sc, row, (st, en)
  answers = []
  for ex, row in enumerate(best_row):
    if row < 0 or not np.isfinite(best[ex]):
      answers.append("")
      continue
    st, en = best_span[ex]
    answers.append(split.examples[ex].context[offsets[row, st, 0]:offsets[row, en, 1]])
  return answers


def tag_predictions(split: EncodedSplit, rows: np.ndarray | Sequence[np.ndarray],
                    predictions: np.ndarray | Sequence[np.ndarray],
                    default_tag: str = "O") -> list[list[str]]:
  """Tag strings per word of each example (aligned with split.examples).

  Args:
    split: the tagging EncodedSplit (with examples).
    rows: int [n] rows (-1 = padding, ignored), or a list per batch.
    predictions: int [n, L] predicted tag index per token, or float [n, L, C] logits (argmax
      taken); only first sub-tokens are read.
    default_tag: tag of words with no token (cut by truncation, or words the tokenizer drops).
  """
  default = default_tag if default_tag in split.task.labels else split.task.labels[0]
  tags = [[default] * len(ex.words) for ex in split.examples]
  word_ids = split.arrays["word_ids"]
  for r, p in zip(_as_pieces(rows), _as_pieces(predictions)):
    p = p.argmax(-1) if p.ndim == 3 else p
    for row, pred in zip(r, p):
      if row < 0:
        continue
      words = word_ids[row, :pred.shape[0]]
      sentence = tags[split.arrays["example_index"][row]]
      for pos in np.flatnonzero(words >= 0):
        sentence[words[pos]] = split.task.labels[pred[pos]]
  return tags


def regression_predictions(split: EncodedSplit, outputs: np.ndarray) -> np.ndarray:
  """float [n]: model outputs in standardised units -> the task's original scale."""
  return np.asarray(outputs, np.float64) * split.target_std + split.target_mean


def _collect(outputs: Outputs, key: str) -> list[np.ndarray]:
  return [np.asarray(o[key]) for o in outputs]


def _classification(split, rows, outputs):
  pred = np.concatenate([p.argmax(-1) for p in _collect(outputs, "cls_logits")])
  return in_example_order(split, rows, [split.task.labels[i] for i in pred])


def _regression(split, rows, outputs):
  values = regression_predictions(split, np.concatenate(_collect(outputs, "regression")))
  return in_example_order(split, rows, values.tolist())


def _multiple_choice(split, rows, outputs):
  choices = np.concatenate([p.argmax(-1) for p in _collect(outputs, "choice_logits")])
  return in_example_order(split, rows, choices.tolist())


def _span(split, rows, outputs):
  return span_answers(split, rows, _collect(outputs, "start_logits"),
                      _collect(outputs, "end_logits"))


def _tagging(split, rows, outputs):
  return tag_predictions(split, rows, _collect(outputs, "tag_logits"))


# Task type -> f(split, rows per batch, outputs per batch) -> predictions in example order.
PREDICTORS: dict[str, Callable[[EncodedSplit, list, Outputs], list]] = {
    base.CLASSIFICATION: _classification, base.REGRESSION: _regression,
    base.MULTIPLE_CHOICE: _multiple_choice, base.SPAN: _span, base.TAGGING: _tagging,
}


def predictions(split: EncodedSplit, rows: list[np.ndarray], outputs: Outputs) -> list:
  """The evaluation's predictions, one per example of the split, in example order."""
  return PREDICTORS[split.task.type](split, rows, outputs)


# ------------------------------------------------------------------------------------------------
# Metrics


def references(split: EncodedSplit) -> list:
  """The gold references of a labelled split, in the form metrics.compute_metrics takes."""
  label = lambda ex: ex.label  # noqa: E731
  by_type = {base.CLASSIFICATION: label, base.REGRESSION: label, base.MULTIPLE_CHOICE: label,
             base.SPAN: metrics.gold_answers, base.TAGGING: lambda ex: list(ex.tags)}
  return [by_type[split.task.type](ex) for ex in split.examples]


def split_metrics(split: EncodedSplit, preds: Sequence) -> dict[str, float]:
  """The task's official metrics of predictions on a labelled split."""
  return metrics.compute_metrics(split.task, preds, references(split),
                                 [ex.example_id for ex in split.examples], split=split.split)


def evaluate_split(apply: ApplyFn, params: Any, split: EncodedSplit, task_id: int,
                   setup: EvalSetup) -> tuple[dict[str, float], list]:
  """(the task's official metrics, predictions) on a labelled split."""
  rows, outputs = forward_split(apply, params, split, task_id, setup)
  preds = predictions(split, rows, outputs)
  return split_metrics(split, preds), preds


def capped(split: EncodedSplit, max_examples: int) -> EncodedSplit:
  """The first max_examples examples (all rows for span tasks' windows of those examples)."""
  if not max_examples or split.num_examples <= max_examples:
    return split
  keep = np.flatnonzero(split.arrays["example_index"] < max_examples)
  arrays = {k: v[keep] for k, v in split.arrays.items()}
  return dataclasses.replace(split, arrays=arrays, num_examples=max_examples,
                             examples=list(split.examples[:max_examples]))


def aggregates(tasks: Sequence[base.Task], results: Mapping[str, Mapping[str, float]]
               ) -> dict[str, float]:
  """The GLUE / SuperGLUE score (metrics.aggregate_score over the benchmark's tasks present) of
  every benchmark the tasks belong to, keyed 'glue' / 'superglue'."""
  by_name = {}
  for benchmark in sorted({t.benchmark for t in tasks if t.benchmark}):
    try:
      by_name[benchmark] = metrics.aggregate_score(results, benchmark)
    except ValueError:  # only diagnostic tasks of that benchmark are present
      continue
  return by_name


def evaluate(apply: ApplyFn, params: Any, tasks: Sequence[base.Task],
             dev_splits: Sequence[tuple[int, EncodedSplit]], setup: EvalSetup,
             max_examples: int = 0) -> tuple[dict[str, dict[str, float]], float]:
  """Dev metrics per task and the mean of the tasks' main scores (checkpoint selection)."""
  results = {t.name: {} for t in tasks}
  for task_id, split in dev_splits:
    split = capped(split, max_examples)
    results[split.task.name].update(evaluate_split(apply, params, split, task_id, setup)[0])
  score = float(np.mean([metrics.main_score(t, results[t.name]) for t in tasks]))
  return results, score
