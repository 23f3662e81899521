"""Task heads (DESIGN.md 3.7), stacked per head type so that one batch can mix tasks.

Each head type present in the task list has one module under params['heads'][type] whose weights
are stacked over the tasks of that type (kernel [T_type, d, F], bias [T_type, F]); every example
uses the slice of its own task, gathered by the task's slot within its head type (static index
arrays from `HeadLayout`). All heads run on all B examples; `Heads` picks each example's loss by
its task's head type with take_along_axis, so no Python branches on data.

Masking: every logit that is not a valid prediction for the example is MASK_VALUE (-1e9, finite so
that softmax and entropies stay finite): classes beyond the task's count, choices without tokens or
beyond the task's choice count, non-context span positions ([CLS] stays allowed), and every logit of
a head type other than the example's own. 'regression' and 'regression_log_var' are 0 for
non-regression examples.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from camtl_jax.models.bert import MASK_VALUE, RowDropout
from camtl_jax.tasks import base

Array = jax.Array

# The regression head's log-variance is clipped to +-LOG_VAR_BOUND (standardised target units), so
# that exp(-log_var) cannot overflow in float32 if the variance head runs away early in training.
LOG_VAR_BOUND = 10.0


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What the model needs to know about a task.

  num_labels: classes (classification), tags (tagging), 1 (regression), the number of choices
  (multiple_choice); ignored for span extraction.
  """
  name: str
  type: str
  num_labels: int = 1

  def __post_init__(self):
    if self.type not in base.TASK_TYPES:
      raise ValueError(f"task {self.name!r}: unknown type {self.type!r}; known: {base.TASK_TYPES}")
    minimum = {base.CLASSIFICATION: 2, base.MULTIPLE_CHOICE: 2, base.TAGGING: 1}.get(self.type, 1)
    if self.num_labels < minimum:
      raise ValueError(f"task {self.name!r} ({self.type}): num_labels must be >= {minimum}, "
                       f"got {self.num_labels}")
    if self.type == base.REGRESSION and self.num_labels != 1:
      raise ValueError(f"task {self.name!r}: a regression task has num_labels 1, "
                       f"got {self.num_labels}")

  @classmethod
  def from_task(cls, task: base.Task) -> "TaskSpec":
    """The spec of a registry Task."""
    counts: dict[str, Callable[[base.Task], int]] = {
        base.CLASSIFICATION: lambda t: t.num_labels, base.TAGGING: lambda t: t.num_labels,
        base.REGRESSION: lambda t: 1, base.SPAN: lambda t: 1,
        base.MULTIPLE_CHOICE: lambda t: t.num_choices}
    return cls(task.name, task.type, counts[task.type](task))


class HeadRows(NamedTuple):
  """Per-example view of one head type: slot [B] (index of the task's head; 0 for examples of other
  types), active [B] bool (the example is of this head type), num_valid [B] (the example's number of
  classes / choices / tags; 0 for other types)."""
  slot: Array
  active: Array
  num_valid: Array


@dataclasses.dataclass(frozen=True)
class HeadLayout:
  """Static index arrays built from the task list (numpy, constants under jit).

  types: head types present, in base.TASK_TYPES order. task_type [T]: index into `types`.
  slot [T]: index of the task among the tasks of its type. num_labels [T]. num_heads / max_labels:
  per present type, the number of tasks (T_type) and the largest num_labels (C_max).
  """
  types: tuple[str, ...]
  task_type: np.ndarray
  slot: np.ndarray
  num_labels: np.ndarray
  num_heads: Mapping[str, int]
  max_labels: Mapping[str, int]

  @classmethod
  def from_tasks(cls, tasks: tuple[TaskSpec, ...]) -> "HeadLayout":
    if not tasks:
      raise ValueError("the task list is empty")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
      raise ValueError(f"task names must be unique, got {names}")
    types = tuple(t for t in base.TASK_TYPES if any(s.type == t for s in tasks))
    by_type = {t: [s for s in tasks if s.type == t] for t in types}
    return cls(
        types=types,
        task_type=np.array([types.index(s.type) for s in tasks], np.int32),
        slot=np.array([by_type[s.type].index(s) for s in tasks], np.int32),
        num_labels=np.array([s.num_labels for s in tasks], np.int32),
        num_heads={t: len(specs) for t, specs in by_type.items()},
        max_labels={t: max(s.num_labels for s in specs) for t, specs in by_type.items()})

  def rows(self, head_type: str, task_id: Array) -> HeadRows:
    """The per-example HeadRows of `head_type` for task ids [B]."""
    active = jnp.asarray(self.task_type == self.types.index(head_type))[task_id]
    num_valid = jnp.where(active, jnp.asarray(self.num_labels)[task_id], 0)
    return HeadRows(jnp.asarray(self.slot)[task_id], active, num_valid)


class Features(NamedTuple):
  """Encoder features the heads read: pooled [B, K, d] (every choice row) and hidden [B, L, d]
  (choice row 0)."""
  pooled: Array
  hidden: Array


class HeadOutput(NamedTuple):
  outputs: dict[str, Array]
  loss: Array  # [B]
  aux_loss: Array  # [B]


def stacked_dense(p: Mapping[str, Array], x: Array, slot: Array) -> Array:
  """T_type linear maps stacked, example b using map slot[b]: p {'kernel' [T_type, d, F],
  'bias' [T_type, F]}, x [B, ..., d], slot [B] -> [B, ..., F] float32."""
  kernel, bias = p["kernel"], p["bias"]
  flat = x.reshape(x.shape[0], -1, x.shape[-1]).astype(jnp.float32)
  y = jnp.einsum("bnd,bdf->bnf", flat, kernel[slot]) + bias[slot][:, None, :]
  return y.reshape(*x.shape[:-1], kernel.shape[-1])


class StackedDense(nn.Module):
  """The parameters of `stacked_dense` (kernel [T_type, d, F], bias [T_type, F]); returns them.

  __call__(d) -> {'kernel', 'bias'}.
  """
  num_heads: int
  features: int
  kernel_init: Callable = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, d: int) -> dict[str, Array]:
    kernel = self.param("kernel", self.kernel_init, (self.num_heads, d, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.num_heads, self.features), jnp.float32)
    return {"kernel": kernel, "bias": bias}


def cross_entropy(logits: Array, labels: Array) -> Array:
  """-log softmax(logits)[label]: logits [..., C] float32, labels [...] in range -> [...]."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def _mask(logits: Array, valid: Array) -> Array:
  return jnp.where(valid, logits, MASK_VALUE)


def _index(x: Array, active: Array, size: int) -> Array:
  """A label / position used as an index: 0 where inactive, clamped to [0, size). Real rows are
  in range (validate_batch); the clamp keeps padding rows finite (jnp gathers fill NaN)."""
  return jnp.clip(jnp.where(active, x, 0), 0, size - 1)


# ------------------------------------------------------------------------------------------------
# The heads' math: pure functions of (head weights, head input, batch, rows) -> outputs. The
# modules below and the exported / served forwards (export.py, multitask_export.py) all call
# these, so a head means the same everywhere. w: the head type's stacked weights
# (params['heads'][type], or a one-row stack for a one-task artifact); x: the head's input after
# dropout (HEAD_INPUT); batch: the keys HEAD_INPUTS lists that the outputs read.


def classification_outputs(w: Mapping, x: Array, batch: Mapping[str, Array], rows: HeadRows
                           ) -> dict[str, Array]:
  """x: pooled [CLS] [B, d] -> 'cls_logits' [B, C_max], masked beyond the task's classes."""
  logits = stacked_dense(w["classifier"], x, rows.slot)
  valid = jnp.arange(logits.shape[-1]) < rows.num_valid[:, None]
  return {"cls_logits": _mask(logits, valid)}


def regression_outputs(w: Mapping, x: Array, batch: Mapping[str, Array], rows: HeadRows
                       ) -> dict[str, Array]:
  """x: pooled [CLS] [B, d] -> 'regression' [B] (standardised units) and 'regression_log_var'
  [B] (clipped to +-LOG_VAR_BOUND; its input under stop_gradient, see RegressionHead); both 0
  for examples of other types."""
  mean = stacked_dense(w["mean"], x, rows.slot)[:, 0]
  log_var = stacked_dense(w["log_var"], jax.lax.stop_gradient(x), rows.slot)[:, 0]
  log_var = jnp.clip(log_var, -LOG_VAR_BOUND, LOG_VAR_BOUND)
  return {"regression": jnp.where(rows.active, mean, 0.0),
          "regression_log_var": jnp.where(rows.active, log_var, 0.0)}


def choice_outputs(w: Mapping, x: Array, batch: Mapping[str, Array], rows: HeadRows
                   ) -> dict[str, Array]:
  """x: pooled [CLS] of every choice row [B, K, d] -> 'choice_logits' [B, K], masked for choices
  without tokens (batch['attention_mask'] [B, K, L]) or beyond the task's choice count."""
  scores = stacked_dense(w["scorer"], x, rows.slot)[..., 0]
  has_tokens = jnp.any(batch["attention_mask"] > 0, axis=-1)
  valid = has_tokens & (jnp.arange(scores.shape[1]) < rows.num_valid[:, None])
  return {"choice_logits": _mask(scores, valid)}


def span_outputs(w: Mapping, x: Array, batch: Mapping[str, Array], rows: HeadRows
                 ) -> dict[str, Array]:
  """x: hidden states [B, L, d] -> 'start_logits', 'end_logits' [B, L], valid on context tokens
  (batch['context_mask'] [B, L]) and on [CLS] (position 0: "no answer in this window")."""
  logits = stacked_dense(w["span"], x, rows.slot)  # [B, L, 2]
  allowed = (batch["context_mask"] > 0) | (jnp.arange(logits.shape[1]) == 0)[None, :]
  valid = allowed & rows.active[:, None]
  return {"start_logits": _mask(logits[..., 0], valid), "end_logits": _mask(logits[..., 1], valid)}


def tagging_outputs(w: Mapping, x: Array, batch: Mapping[str, Array], rows: HeadRows
                    ) -> dict[str, Array]:
  """x: hidden states [B, L, d] -> 'tag_logits' [B, L, C_max], masked beyond the task's tags."""
  logits = stacked_dense(w["tagger"], x, rows.slot)
  valid = jnp.arange(logits.shape[-1]) < rows.num_valid[:, None]
  return {"tag_logits": _mask(logits, valid[:, None, :])}


# Task type -> f(head weights, head input, batch, rows) -> the head's outputs.
HEAD_OUTPUTS: dict[str, Callable[..., dict[str, Array]]] = {
    base.CLASSIFICATION: classification_outputs,
    base.REGRESSION: regression_outputs,
    base.MULTIPLE_CHOICE: choice_outputs,
    base.SPAN: span_outputs,
    base.TAGGING: tagging_outputs,
}
# Task type -> the head's input from the encoder's features (before dropout).
HEAD_INPUT: dict[str, Callable[[Features], Array]] = {
    base.CLASSIFICATION: lambda f: f.pooled[:, 0],
    base.REGRESSION: lambda f: f.pooled[:, 0],
    base.MULTIPLE_CHOICE: lambda f: f.pooled,
    base.SPAN: lambda f: f.hidden,
    base.TAGGING: lambda f: f.hidden,
}
# Task type -> its weights: name -> (F, kernel init); F None = C_max (classes / tags).
HEAD_WEIGHTS: dict[str, dict[str, tuple[int | None, Callable]]] = {
    base.CLASSIFICATION: {"classifier": (None, nn.initializers.normal(0.02))},
    base.REGRESSION: {"mean": (1, nn.initializers.normal(0.02)),
                      "log_var": (1, nn.initializers.zeros)},
    base.MULTIPLE_CHOICE: {"scorer": (1, nn.initializers.normal(0.02))},
    base.SPAN: {"span": (2, nn.initializers.normal(0.02))},
    base.TAGGING: {"tagger": (None, nn.initializers.normal(0.02))},
}


def _classification_loss(out, batch, rows, max_labels):
  return cross_entropy(out["cls_logits"], _index(batch["label"], rows.active, max_labels)), None


def _regression_loss(out, batch, rows, max_labels):
  """Squared error, and aux = 0.5 * (log_var + stop_gradient((y - mu)^2) * exp(-log_var)) (see
  RegressionHead); both 0 for examples of other types (their outputs and targets are 0)."""
  target = jnp.where(rows.active, batch["target"], 0.0).astype(jnp.float32)
  squared = jnp.square(out["regression"] - target)
  log_var = out["regression_log_var"]
  return squared, 0.5 * (log_var + jax.lax.stop_gradient(squared) * jnp.exp(-log_var))


def _choice_loss(out, batch, rows, max_labels):
  logits = out["choice_logits"]
  return cross_entropy(logits, _index(batch["label"], rows.active, logits.shape[1])), None


def _span_loss(out, batch, rows, max_labels):
  length = out["start_logits"].shape[1]
  position = lambda key: _index(batch[key], rows.active, length)  # noqa: E731
  return 0.5 * (cross_entropy(out["start_logits"], position("start_position"))
                + cross_entropy(out["end_logits"], position("end_position"))), None


def _tagging_loss(out, batch, rows, max_labels):
  labels = batch["token_labels"]
  labelled = (labels >= 0) & rows.active[:, None]  # [B, L]
  token_loss = cross_entropy(out["tag_logits"], _index(labels, labelled, max_labels))
  count = jnp.sum(labelled, axis=1)
  return jnp.sum(token_loss * labelled, axis=1) / jnp.maximum(count, 1), None


# Task type -> f(outputs, batch, rows, C_max) -> (loss [B], aux loss [B] or None for zeros).
HEAD_LOSSES: dict[str, Callable[..., tuple[Array, Array | None]]] = {
    base.CLASSIFICATION: _classification_loss,
    base.REGRESSION: _regression_loss,
    base.MULTIPLE_CHOICE: _choice_loss,
    base.SPAN: _span_loss,
    base.TAGGING: _tagging_loss,
}


class Head(nn.Module):
  """The stacked head of one type (HEAD_WEIGHTS' parameters, HEAD_OUTPUTS' math, HEAD_LOSSES'
  loss), with dropout on its input.

  classification  pooled [CLS] of row 0 -> 'cls_logits' [B, C_max]; loss CE over the task's C
                  classes.
  regression      pooled [CLS] of row 0 -> standardised mean 'regression' [B] (loss: squared
                  error) and a predictive log-variance 'regression_log_var' [B]. aux_loss = 0.5 *
                  (log_var + stop_gradient((y - mu)^2) * exp(-log_var)), the Gaussian NLL of the
                  residual: its minimiser is log_var = log E[(y - mu)^2 | x], so exp(log_var)
                  estimates the regression's own predictive variance, which MT-U sampling uses as
                  the regression task's uncertainty. The residual AND the log-variance head's
                  input are under stop_gradient: the aux loss trains only the variance head and
                  leaves the mean head and the shared encoder to the task loss (MSE), as in the
                  paper. The log-variance head is zero-initialised: unit variance, the
                  standardised target's.
  multiple choice pooled [CLS] of every choice row -> one score each, 'choice_logits' [B, K];
                  loss CE over the valid choices.
  span            hidden states of row 0 -> 'start_logits', 'end_logits' [B, L]; loss = mean of
                  the start and end CE.
  tagging         hidden states of row 0 -> 'tag_logits' [B, L, C_max]; loss = mean CE over the
                  example's labelled tokens (token_labels >= 0: first sub-tokens of words), 0 when
                  it has none.
  """
  head_type: str
  num_heads: int
  max_labels: int
  dropout: float

  @nn.compact
  def __call__(self, features: Features, batch: Mapping[str, Array], rows: HeadRows,
               deterministic: bool, batch_index: Array | None = None) -> HeadOutput:
    """batch_index [B]: each example's dropout key (models.bert.RowDropout); None: arange(B)."""
    x = HEAD_INPUT[self.head_type](features).astype(jnp.float32)
    x = RowDropout(self.dropout)(x, deterministic, batch_index)
    w = {name: StackedDense(self.num_heads, width or self.max_labels, init, name=name)(
        x.shape[-1]) for name, (width, init) in HEAD_WEIGHTS[self.head_type].items()}
    outputs = HEAD_OUTPUTS[self.head_type](w, x, batch, rows)
    loss, aux = HEAD_LOSSES[self.head_type](outputs, batch, rows, self.max_labels)
    return HeadOutput(outputs, loss, jnp.zeros_like(loss) if aux is None else aux)


# The batch keys each head type reads (besides task_id), for clear errors on a missing key.
HEAD_INPUTS: dict[str, tuple[str, ...]] = {
    base.CLASSIFICATION: ("label",),
    base.REGRESSION: ("target",),
    base.MULTIPLE_CHOICE: ("label", "attention_mask"),
    base.SPAN: ("start_position", "end_position", "context_mask"),
    base.TAGGING: ("token_labels",),
}


class Heads(nn.Module):
  """All head types present in `tasks`; each example's loss comes from its own task's head.

  __call__(features, batch, deterministic) -> dict with 'loss' [B], 'aux_loss' [B] and the
  outputs of every present head type (see the module docstring).
  """
  tasks: tuple[TaskSpec, ...]
  dropout: float = 0.1

  @nn.compact
  def __call__(self, features: Features, batch: Mapping[str, Array],
               deterministic: bool = True, head_types: tuple[str, ...] | None = None,
               batch_index: Array | None = None) -> dict[str, Array]:
    """head_types: compute only these head types (the caller guarantees every example is of one
    of them); None: every type present. batch_index [B]: the dropout keys (Head)."""
    layout = HeadLayout.from_tasks(self.tasks)
    types = layout.types if head_types is None else tuple(
        t for t in layout.types if t in head_types)
    task_id = batch["task_id"]
    results = {t: Head(t, layout.num_heads[t], layout.max_labels[t], self.dropout, name=t)(
        features, batch, layout.rows(t, task_id), deterministic, batch_index) for t in types}
    # Each task's position among the computed types (0 for a type left out: no example has it).
    position = np.array([types.index(layout.types[i]) if layout.types[i] in types else 0
                         for i in layout.task_type], np.int32)
    type_index = jnp.asarray(position)[task_id][:, None]  # [B, 1]
    pick = lambda per_type: jnp.take_along_axis(  # noqa: E731 [B, n_types] -> [B]
        jnp.stack(per_type, axis=1), type_index, axis=1)[:, 0]
    outputs = {"loss": pick([r.loss for r in results.values()]),
               "aux_loss": pick([r.aux_loss for r in results.values()])}
    for r in results.values():
      outputs.update(r.outputs)
    return outputs
