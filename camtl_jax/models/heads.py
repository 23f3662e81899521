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

from camtl_jax.models.bert import MASK_VALUE
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


class StackedDense(nn.Module):
  """T_type linear maps stacked: kernel [T_type, d, F], bias [T_type, F]; example b uses map
  slot[b].

  x [B, ..., d], slot [B] -> [B, ..., F] float32.
  """
  num_heads: int
  features: int
  kernel_init: Callable = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, x: Array, slot: Array) -> Array:
    d = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (self.num_heads, d, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.num_heads, self.features), jnp.float32)
    flat = x.reshape(x.shape[0], -1, d).astype(jnp.float32)
    y = jnp.einsum("bnd,bdf->bnf", flat, kernel[slot]) + bias[slot][:, None, :]
    return y.reshape(*x.shape[:-1], self.features)


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


class _Head(nn.Module):
  """Common fields: the number of stacked heads (T_type), C_max and the dropout rate."""
  num_heads: int
  max_labels: int
  dropout: float

  def drop(self, x: Array, deterministic: bool) -> Array:
    return nn.Dropout(self.dropout)(x.astype(jnp.float32), deterministic=deterministic)


class ClassificationHead(_Head):
  """Pooled [CLS] of row 0 -> 'cls_logits' [B, C_max]; loss CE over the task's C classes."""

  @nn.compact
  def __call__(self, features: Features, batch: Mapping[str, Array], rows: HeadRows,
               deterministic: bool) -> HeadOutput:
    x = self.drop(features.pooled[:, 0], deterministic)
    logits = StackedDense(self.num_heads, self.max_labels, name="classifier")(x, rows.slot)
    logits = _mask(logits, jnp.arange(self.max_labels) < rows.num_valid[:, None])
    loss = cross_entropy(logits, _index(batch["label"], rows.active, self.max_labels))
    return HeadOutput({"cls_logits": logits}, loss, jnp.zeros_like(loss))


class RegressionHead(_Head):
  """Pooled [CLS] of row 0 -> standardised mean 'regression' [B] (loss: squared error) and a
  predictive log-variance 'regression_log_var' [B].

  aux_loss = 0.5 * (log_var + stop_gradient((y - mu)^2) * exp(-log_var)), the Gaussian NLL of the
  residual: its minimiser is log_var = log E[(y - mu)^2 | x], so exp(log_var) estimates the
  regression's own predictive variance, which MT-U sampling uses as the regression task's
  uncertainty. The residual AND the log-variance head's input are under stop_gradient: the aux loss
  trains only the variance head and leaves the mean head and the shared encoder to the task loss
  (MSE), as in the paper. The log-variance head is zero-initialised: unit variance, the
  standardised target's.
  """

  @nn.compact
  def __call__(self, features: Features, batch: Mapping[str, Array], rows: HeadRows,
               deterministic: bool) -> HeadOutput:
    x = self.drop(features.pooled[:, 0], deterministic)
    mean = StackedDense(self.num_heads, 1, name="mean")(x, rows.slot)[:, 0]
    log_var = StackedDense(self.num_heads, 1, nn.initializers.zeros, name="log_var")(
        jax.lax.stop_gradient(x), rows.slot)[:, 0]
    log_var = jnp.clip(log_var, -LOG_VAR_BOUND, LOG_VAR_BOUND)
    target = jnp.where(rows.active, batch["target"], 0.0).astype(jnp.float32)
    squared = jnp.square(mean - target)
    aux = 0.5 * (log_var + jax.lax.stop_gradient(squared) * jnp.exp(-log_var))
    outputs = {"regression": jnp.where(rows.active, mean, 0.0),
               "regression_log_var": jnp.where(rows.active, log_var, 0.0)}
    return HeadOutput(outputs, squared, aux)


class MultipleChoiceHead(_Head):
  """Pooled [CLS] of every choice row -> one score each, 'choice_logits' [B, K]; loss CE over the
  valid choices (rows with any token, and below the task's choice count)."""

  @nn.compact
  def __call__(self, features: Features, batch: Mapping[str, Array], rows: HeadRows,
               deterministic: bool) -> HeadOutput:
    x = self.drop(features.pooled, deterministic)  # [B, K, d]
    scores = StackedDense(self.num_heads, 1, name="scorer")(x, rows.slot)[..., 0]  # [B, K]
    k = scores.shape[1]
    has_tokens = jnp.any(batch["attention_mask"] > 0, axis=-1)  # [B, K]
    logits = _mask(scores, has_tokens & (jnp.arange(k) < rows.num_valid[:, None]))
    loss = cross_entropy(logits, _index(batch["label"], rows.active, k))
    return HeadOutput({"choice_logits": logits}, loss, jnp.zeros_like(loss))


class SpanHead(_Head):
  """Hidden states of row 0 -> 'start_logits', 'end_logits' [B, L], valid on context tokens
  (context_mask) and on [CLS] (position 0: "no answer in this window"); loss = mean of the start
  and end CE."""

  @nn.compact
  def __call__(self, features: Features, batch: Mapping[str, Array], rows: HeadRows,
               deterministic: bool) -> HeadOutput:
    x = self.drop(features.hidden, deterministic)  # [B, L, d]
    logits = StackedDense(self.num_heads, 2, name="span")(x, rows.slot)  # [B, L, 2]
    length = logits.shape[1]
    allowed = (batch["context_mask"] > 0) | (jnp.arange(length) == 0)[None, :]
    valid = allowed & rows.active[:, None]
    start, end = _mask(logits[..., 0], valid), _mask(logits[..., 1], valid)
    position = lambda key: _index(batch[key], rows.active, length)  # noqa: E731
    loss = 0.5 * (cross_entropy(start, position("start_position"))
                  + cross_entropy(end, position("end_position")))
    return HeadOutput({"start_logits": start, "end_logits": end}, loss, jnp.zeros_like(loss))


class TaggingHead(_Head):
  """Hidden states of row 0 -> 'tag_logits' [B, L, C_max]; loss = mean CE over the example's
  labelled tokens (token_labels >= 0: first sub-tokens of words), 0 when it has none."""

  @nn.compact
  def __call__(self, features: Features, batch: Mapping[str, Array], rows: HeadRows,
               deterministic: bool) -> HeadOutput:
    x = self.drop(features.hidden, deterministic)  # [B, L, d]
    logits = StackedDense(self.num_heads, self.max_labels, name="tagger")(x, rows.slot)
    logits = _mask(logits, (jnp.arange(self.max_labels) < rows.num_valid[:, None])[:, None, :])
    labels = batch["token_labels"]
    labelled = (labels >= 0) & rows.active[:, None]  # [B, L]
    token_loss = cross_entropy(logits, _index(labels, labelled, self.max_labels))
    count = jnp.sum(labelled, axis=1)
    loss = jnp.sum(token_loss * labelled, axis=1) / jnp.maximum(count, 1)
    return HeadOutput({"tag_logits": logits}, loss, jnp.zeros_like(loss))


HEADS: dict[str, type[_Head]] = {
    base.CLASSIFICATION: ClassificationHead,
    base.REGRESSION: RegressionHead,
    base.MULTIPLE_CHOICE: MultipleChoiceHead,
    base.SPAN: SpanHead,
    base.TAGGING: TaggingHead,
}

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
               deterministic: bool = True, head_types: tuple[str, ...] | None = None
               ) -> dict[str, Array]:
    """head_types: compute only these head types (the caller guarantees every example is of one
    of them); None: every type present."""
    layout = HeadLayout.from_tasks(self.tasks)
    types = layout.types if head_types is None else tuple(
        t for t in layout.types if t in head_types)
    task_id = batch["task_id"]
    results = {t: HEADS[t](layout.num_heads[t], layout.max_labels[t], self.dropout, name=t)(
        features, batch, layout.rows(t, task_id), deterministic) for t in types}
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
