"""Baseline task samplers, the per-task loss sums of a mixed batch, and data accounting
(DESIGN 4.2), jit-able jnp. MT-Uncertainty, the sampler that scores candidates with the model, is
in mtu.py.

A step draws candidates [T, b] (b per task), B = T*b in all. A baseline sampler picks b of them
without looking at the model: indices [b] into the candidates laid out task-major (t*b + j is row
j of task t; train.select converts them to the step's slot-major layout, mtu.flatten_candidates).
Samplers: proportional to the task's size, temperature (size ** alpha), uniform over tasks,
round-robin (the whole batch from one task).

Data accounting: `used` [total train rows] marks every row ever selected for an update;
data_usage reports per task and overall the share of the training data used (the paper: 66.3%).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# ----------------------------------------------------------------------------------------------
# Baseline samplers: same [b] layout into the [T*b] candidates; index t*b + j takes row j of task t,
# so positions j never collide. Tasks are drawn independently per position (mixed batches, as MT-U
# makes), except round_robin.

Sampler = Callable[[Array, Array, Array, int, float], Array]


def _layout(tasks: Array, b: int) -> Array:
  """Task of each position [b] -> candidate index task * b + position."""
  return (tasks * b + jnp.arange(b)).astype(jnp.int32)


def _draw(key: Array, weights: Array, b: int) -> Array:
  """b independent task draws with probability proportional to weights [T] (0 = never)."""
  weights = jnp.asarray(weights, jnp.float32)
  return jax.random.categorical(key, jnp.log(weights), shape=(b,))


def proportional(key: Array, step: Array, sizes: Array, b: int, alpha: float) -> Array:
  """p_t proportional to the task's training-set size N_t."""
  return _layout(_draw(key, sizes, b), b)


def temperature(key: Array, step: Array, sizes: Array, b: int, alpha: float) -> Array:
  """p_t proportional to N_t ** alpha (alpha = 1 / temperature): alpha 1 is proportional,
  alpha 0 uniform over non-empty tasks; e.g. 0.5 (square-root sampling) or 0.3 (XLM-R)."""
  sizes = jnp.asarray(sizes, jnp.float32)
  return _layout(_draw(key, jnp.where(sizes > 0, sizes ** alpha, 0.0), b), b)


def uniform(key: Array, step: Array, sizes: Array, b: int, alpha: float) -> Array:
  """p_t = 1 / (number of non-empty tasks)."""
  return _layout(_draw(key, jnp.asarray(sizes) > 0, b), b)


def round_robin(key: Array, step: Array, sizes: Array, b: int, alpha: float) -> Array:
  """The whole batch from task step % T (the usual one-task-per-batch round robin; per-position
  interleaving would be nearly the same as stratified uniform sampling)."""
  task = jnp.asarray(step, jnp.int32) % jnp.asarray(sizes).shape[0]
  return _layout(jnp.full((b,), task), b)


SAMPLERS: dict[str, Sampler] = {
    "proportional": proportional,
    "temperature": temperature,
    "uniform": uniform,
    "round_robin": round_robin,
}
MT_UNCERTAINTY = "mt_uncertainty"  # the sampler that scores with the model: mtu.select


def check_sampler(name: str) -> Sampler | None:
  """Validates a config's sampler name: the baseline sampler, or None for MT_UNCERTAINTY."""
  if name == MT_UNCERTAINTY:
    return None
  if name not in SAMPLERS:
    raise ValueError(f"unknown sampler {name!r}; known: {sorted([MT_UNCERTAINTY, *SAMPLERS])}")
  return SAMPLERS[name]


# ----------------------------------------------------------------------------------------------
# Loss of a mixed batch.

def per_task_mean_loss(loss: Array, task_id: Array, weight: Array, num_tasks: int
                       ) -> tuple[Array, Array, Array]:
  """Mean over the tasks present of each task's weighted mean loss (DESIGN 4.2 step 6).

  loss, weight [B] (weight 0 for padding rows), task_id [B] -> (scalar, sums [T], counts [T]),
  sums / counts being per-task weighted loss sums and weights for logging. A task with no weight
  in the batch does not count (and gets no NaN gradient).
  """
  sums = jax.ops.segment_sum(loss * weight, task_id, num_tasks)
  counts = jax.ops.segment_sum(weight.astype(loss.dtype), task_id, num_tasks)
  present = counts > 0  # absent tasks: sums 0, divided by 1
  mean = jnp.sum(sums / jnp.where(present, counts, 1.0)) / jnp.maximum(present.sum(), 1)
  return mean, sums, counts


# ----------------------------------------------------------------------------------------------
# Data accounting: which training examples were ever selected for an update.

def update_used(used: Array, uids: Array, weight: Array | None = None) -> Array:
  """Marks uids [b] as used in `used` [total_examples] bool (on device).

  Rows with weight 0, and uids outside [0, total_examples), are ignored.
  """
  n = used.shape[0]
  valid = (uids >= 0) & (uids < n)
  if weight is not None:
    valid &= weight > 0
  # Out-of-range indices are dropped by the scatter (negative ones would wrap, hence n).
  return used.at[jnp.where(valid, uids, n)].set(True, mode="drop")


class DataUsage(NamedTuple):
  """Percent of each task's examples ever selected (task name -> %), and over all tasks."""
  per_task: dict[str, float]
  overall: float


def data_usage(used: np.ndarray, sizes: Sequence[int], names: Sequence[str]) -> DataUsage:
  """Host-side report from the used mask [sum(sizes)]; uids of task t start at sum(sizes[:t])."""
  used = np.asarray(used, bool)
  if used.shape != (int(np.sum(sizes)),):
    raise ValueError(f"used mask has shape {used.shape}, tasks have {int(np.sum(sizes))} examples")
  bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
  per_task = {name: 100.0 * float(used[lo:hi].mean()) if hi > lo else 0.0
              for name, lo, hi in zip(names, bounds[:-1], bounds[1:])}
  return DataUsage(per_task, 100.0 * float(used.mean()) if used.size else 0.0)


def data_used_fractions(used: np.ndarray, sizes: Sequence[int], names: Sequence[str]
                        ) -> dict[str, float]:
  """data_usage as fractions: {task name: share of its rows ever selected, 'overall': ...}."""
  usage = data_usage(used, sizes, names)
  return {**{name: pct / 100.0 for name, pct in usage.per_task.items()},
          "overall": usage.overall / 100.0}
