"""Multi-Task Uncertainty (MT-U) sampling (DESIGN 4.2): the scoring forward's groups, uncertainty
per head type, the scores and the selection, jit-able jnp. The baseline samplers are in sampling.py.

A step draws candidates [T, b] (b per task), flattened to B = T*b with each candidate's task in
task_id [B]. The scoring functions take task_id and do not assume a layout; the step passes the
candidates slot-major (flatten_candidates: index j*T + t is slot j of task t), so where scores tie
exactly the lower index wins slot by slot: tied tasks take turns, and a later task in config.tasks
is not put behind the earlier ones. MT-U scores every candidate from one deterministic forward
(score_uncertainty, split into the static ScoreGroups of score_groups) and keeps the top b
(`select`, which train.train_step calls):

  H, H_max = uncertainty(outputs, candidates, task_info)         # per candidate, [B] each
  scores = mt_uncertainty_scores(H, H_max, task_id, T, 'paper')  # [B]
  idx = select_top(scores, b)                                    # [b] into the B candidates

Per-head-type uncertainty H with its maximum H_max (the entropy of the uniform distribution over
what the head may predict), so u = H / H_max is in [0, 1]:
  classification   H(softmax over the task's C_t classes), H_max = log C_t
  multiple_choice  H over the valid choices (rows of attention_mask with a token), log(#valid)
  span             mean of start and end entropies over the allowed positions (context + [CLS]),
                   H_max = log(#allowed)
  tagging          mean over labelled tokens (token_labels >= 0) of the per-token entropy, log C_t
  regression       H = min(sigma^2, 1) with sigma^2 = exp(regression_log_var), H_max = 1.
Regression has no softmax; targets are standardised, so the prior predictive variance is 1 and
sigma^2 / 1 is the fraction of the prior uncertainty the model still has. An example the model
cannot predict better than the prior scores u = 1, like a uniform softmax; a confidently predicted
one scores near 0. STS-B-like tasks thus compete with the others (the original code gave them
entropy 0, so they were never picked).

Degenerate supports (C_t = 1, one valid choice, no labelled token) have H = H_max = 0 and u = 0:
nothing is uncertain about a single outcome. Divisions are guarded, so no NaN appears.

One meaning of u across head types (`mode='calibrated'`, the default; 'normalised' is the list
above, kept for reproducing earlier runs). The paper defines U for classification only, and
normalising every head by the log of its support size is not comparable: at the same top-1
confidence 0.9, H / H_max is 0.47 for a binary task, 0.36 for 3 classes, 0.22 for a 13-tag token
and 0.15 for a span over 384 positions, and a tagged sentence of 18 confident 'O' tokens (p .999)
and 2 uncertain entity tokens (p .6) averages to 0.069. Under the hard top-b cut such offsets
between head types exclude whole tasks. 'calibrated' reads each head's uncertainty as that of a
binary decision, "is the top prediction right?", from its top-1 probability p1:
h2(max(p1, 1/2)), the binary entropy in bits (1 at p1 <= 1/2, 0.47 at 0.9, 0.08 at 0.99):
  classification   unchanged, the paper's H / log C_t (so are multiple-choice tasks, over choices)
  span             the mean over start and end of h2(max(p1, 1/2)) over the allowed positions:
                   independent of how many positions the window has
  tagging          the largest per-token h2(max(p1, 1/2)) over the labelled tokens: the example is
                   as uncertain as its most uncertain tag, so easy 'O' tokens cannot hide the
                   entities (18 'O' at .999 and 2 entity tokens at .6 score 0.97, not 0.069)
  regression       u = h2(1 - v / 2), v = min(r_t * exp(lv_i - max_t lv), 1): the fraction of the
                   prior variance left (r_t the running MSE, the variance head ranking within the
                   task, centred on the task's largest log-variance so that v <= r_t) read as a
                   binary confidence: v = 1 (no better than the prior) is a coin flip, v = 0.2 is
                   p = 0.9 (u 0.47, a binary classifier at 0.9). No clipping at 1 for candidates
                   below the task's most uncertain one, so a fresh regression task does not tie at
                   H_max with half of its candidates (it did: STS-B took 95-97% of the selections
                   in its first 20 steps).
For a binary task h2(q) equals the paper's H / log 2, so every head agrees with the paper where the
paper is defined for two outcomes.

No capture, no starvation (`select_with_shares`): the hard top-b cut turns small systematic
offsets into total exclusion, and a task whose candidates stay uncertain because it does not learn
would take the whole budget. Two per-step options (config mtu_min_share, mtu_max_share): a
fraction of the b slots is a floor that goes round the tasks (each slot takes its task's most
uncertain candidate; every task gets its turn every few steps), and no task gets more than
mtu_max_share of the b (a cap; at least 2 / T, so it never forces an even split); the rest is the
global top-b, by score. With either option on, scores within 1.5e-5 of each other tie
(`quantise_scores`) and go to the lower candidate index, so float noise from the device layout
does not change the selection. Both off (0, 1) is exactly `select_top`, the paper's selection.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from camtl_jax import packing, sharding
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.tasks.base import (CLASSIFICATION, MULTIPLE_CHOICE, REGRESSION, SPAN, TAGGING,
                                  TASK_TYPES, Task)

if TYPE_CHECKING:  # experiment imports this module (TaskInfo, the mode checks)
  from camtl_jax.experiment import StepContext

Array = jax.Array
Batch = Mapping[str, Array]

# _entropy re-masks invalid entries with this finite value (not -inf): a row with no valid entry
# then has a finite softmax instead of NaN, and its terms are zeroed by the mask.
_MASK = -1e9


class TaskInfo(NamedTuple):
  """Static per-task facts (hashable: pass as a static jit argument or close over it).

  types: head type of each task (tasks.base.TASK_TYPES), in run task-id order.
  num_labels: classes of each task (classification: C_t, tagging: number of tags; else unused).
  """
  types: tuple[str, ...]
  num_labels: tuple[int, ...]

  @classmethod
  def from_tasks(cls, tasks: Sequence[Task | Any]) -> "TaskInfo":
    """From tasks.base.Task or models.heads.TaskSpec records (anything with .type, .num_labels)."""
    return cls(tuple(t.type for t in tasks), tuple(t.num_labels for t in tasks))


# ----------------------------------------------------------------------------------------------
# Per-head-type uncertainty.

def _safe_div(a: Array, b: Array) -> Array:
  """a / b where b > 0, else 0 (also safe under grad: the unused branch never divides by 0)."""
  ok = b > 0
  return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)


def _log_count(count: Array) -> Array:
  """log(count), with log(0) := 0 for rows that have no support at all."""
  return jnp.log(jnp.maximum(count, 1).astype(jnp.float32))


def _entropy(logits: Array, valid: Array) -> Array:
  """Entropy (nats) of softmax(logits) restricted to `valid`, over the last axis.

  logits, valid: [..., C] -> [...]. p log p is taken as 0 where p = 0, and rows with no valid
  entry give 0.
  """
  logits = jnp.where(valid, logits.astype(jnp.float32), _MASK)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  return -jnp.sum(jnp.where(valid & (p > 0), p * log_p, 0.0), axis=-1)


def _class_valid(num_classes: Array, width: int) -> Array:
  """[B] classes per example -> [B, width] mask of the valid class indices."""
  return jnp.arange(width) < num_classes[:, None]


def _classification(outputs: Batch, batch: Batch, num_labels: Array) -> tuple[Array, Array]:
  logits = outputs["cls_logits"]  # [B, C_max]
  h = _entropy(logits, _class_valid(num_labels, logits.shape[-1]))
  return h, _log_count(num_labels)


def _multiple_choice(outputs: Batch, batch: Batch, num_labels: Array) -> tuple[Array, Array]:
  valid = jnp.any(batch["attention_mask"] > 0, axis=-1)  # [B, K]: choice rows with a token
  return _entropy(outputs["choice_logits"], valid), _log_count(valid.sum(-1))


def _span(outputs: Batch, batch: Batch, num_labels: Array) -> tuple[Array, Array]:
  # [CLS] (position 0) is the "no answer in this window" target, so it is always allowed; the
  # input pipeline already sets it in context_mask, OR-ing it here keeps this self-contained.
  allowed = (batch["context_mask"] > 0) | (jnp.arange(batch["context_mask"].shape[-1]) == 0)
  h = 0.5 * (_entropy(outputs["start_logits"], allowed) + _entropy(outputs["end_logits"], allowed))
  return h, _log_count(allowed.sum(-1))


def _tagging(outputs: Batch, batch: Batch, num_labels: Array) -> tuple[Array, Array]:
  logits = outputs["tag_logits"]  # [B, L, C_tag_max]
  valid = _class_valid(num_labels, logits.shape[-1])[:, None, :]
  per_token = _entropy(logits, valid)  # [B, L]
  labelled = batch["token_labels"] >= 0
  # Every token shares H_max = log C_t, so mean(H_tok) / log C_t = mean(H_tok / log C_t).
  h = _safe_div(jnp.sum(jnp.where(labelled, per_token, 0.0), -1), labelled.sum(-1))
  return h, _log_count(num_labels)


def _regression(outputs: Batch, batch: Batch, num_labels: Array) -> tuple[Array, Array]:
  # min(exp(lv), 1) = exp(min(lv, 0)): the same value, and exp never overflows.
  log_var = outputs["regression_log_var"].astype(jnp.float32)
  return jnp.exp(jnp.minimum(log_var, 0.0)), jnp.ones_like(log_var)


def binary_entropy_bits(q: Array) -> Array:
  """h2(q) = -(q log q + (1 - q) log(1 - q)) / log 2, in [0, 1], 0 log 0 := 0."""
  q = jnp.clip(q, 0.0, 1.0)
  terms = jnp.where(q > 0, q * jnp.log(jnp.maximum(q, 1e-38)), 0.0) + jnp.where(
      q < 1, (1 - q) * jnp.log(jnp.maximum(1 - q, 1e-38)), 0.0)
  return -terms / jnp.log(2.0)


def _top_one_uncertainty(logits: Array, valid: Array) -> Array:
  """h2(max(p1, 1/2)), p1 the probability of the most probable valid entry, over the last axis:
  [..., C] -> [...] in [0, 1]; 0 where fewer than two entries are valid. Depends on the top-1
  confidence only, so heads of any support size agree at the same confidence."""
  log_p = jax.nn.log_softmax(jnp.where(valid, logits.astype(jnp.float32), _MASK), axis=-1)
  p1 = jnp.exp(jnp.max(log_p, axis=-1))
  return jnp.where(valid.sum(-1) >= 2, binary_entropy_bits(jnp.maximum(p1, 0.5)), 0.0)


def _calibrated_span(outputs: Batch, batch: Batch, num_labels: Array) -> tuple[Array, Array]:
  allowed = (batch["context_mask"] > 0) | (jnp.arange(batch["context_mask"].shape[-1]) == 0)
  u = 0.5 * (_top_one_uncertainty(outputs["start_logits"], allowed)
             + _top_one_uncertainty(outputs["end_logits"], allowed))
  return u, jnp.where(allowed.sum(-1) >= 2, 1.0, 0.0)


def _calibrated_tagging(outputs: Batch, batch: Batch, num_labels: Array) -> tuple[Array, Array]:
  logits = outputs["tag_logits"]  # [B, L, C_tag_max]
  valid = _class_valid(num_labels, logits.shape[-1])[:, None, :]
  labelled = batch["token_labels"] >= 0
  per_token = _top_one_uncertainty(logits, jnp.broadcast_to(valid, logits.shape))  # [B, L]
  u = jnp.max(jnp.where(labelled, per_token, 0.0), axis=-1)
  return u, jnp.where(labelled.any(-1) & (num_labels >= 2), 1.0, 0.0)


UncertaintyFn = Callable[[Batch, Batch, Array], tuple[Array, Array]]
UNCERTAINTY: dict[str, UncertaintyFn] = {
    CLASSIFICATION: _classification,
    MULTIPLE_CHOICE: _multiple_choice,
    SPAN: _span,
    TAGGING: _tagging,
    REGRESSION: _regression,
}
# mode -> the head types whose definition differs from UNCERTAINTY's (module docstring).
UNCERTAINTY_MODES: dict[str, dict[str, UncertaintyFn]] = {
    "normalised": {},
    "calibrated": {SPAN: _calibrated_span, TAGGING: _calibrated_tagging},
}


def check_uncertainty_mode(mode: str) -> None:
  if mode not in UNCERTAINTY_MODES:
    raise ValueError(f"unknown mtu_uncertainty {mode!r}; known: {sorted(UNCERTAINTY_MODES)}")


def uncertainty(outputs: Batch, batch: Batch, task_info: TaskInfo,
                mode: str = "normalised") -> tuple[Array, Array]:
  """Per-example entropy H [B] and its maximum H_max [B] (u = H / H_max in [0, 1]).

  outputs: the model's per-example outputs, only the keys of head types present in the run:
    cls_logits [B, C_max], choice_logits [B, K], regression_log_var [B], start_logits /
    end_logits [B, L], tag_logits [B, L, C_tag_max]. Masked entries may hold any value: validity
    is recomputed here from task_info and the batch.
  batch: task_id [B]; attention_mask [B, K, L] (multiple choice), context_mask [B, L] (span),
    token_labels [B, L] (tagging).
  mode: 'normalised' (H / H_max per head type) or 'calibrated' (module docstring).
  Each head type present is evaluated on all B examples (cheap next to the forward) and each
  example keeps its own type's value; the loop is over head types (<= 5), not over tasks.
  """
  check_uncertainty_mode(mode)
  functions = dict(UNCERTAINTY, **UNCERTAINTY_MODES[mode])
  task_id = batch["task_id"]
  num_labels = jnp.asarray(task_info.num_labels, jnp.int32)[task_id]
  type_index = np.array([TASK_TYPES.index(t) for t in task_info.types], np.int32)
  example_type = jnp.asarray(type_index)[task_id]
  h = h_max = jnp.zeros(task_id.shape, jnp.float32)
  for head_type in sorted(set(task_info.types), key=TASK_TYPES.index):
    this = example_type == TASK_TYPES.index(head_type)
    h_t, h_max_t = functions[head_type](outputs, batch, num_labels)
    h, h_max = jnp.where(this, h_t, h), jnp.where(this, h_max_t, h_max)
  return h, h_max


# ----------------------------------------------------------------------------------------------
# MT-U scores and selection.

def calibrated_regression_uncertainty(h: Array, h_max: Array, outputs: Batch, task_id: Array,
                                      task_info: TaskInfo, running_mse: Array,
                                      mode: str = "normalised") -> tuple[Array, Array]:
  """Replaces the regression rows of (H, H_max) by u = min(r_t * exp(lv_i - mean_t lv), 1).

  r_t [T] is the task's running mean squared error on its standardised targets (the train state
  keeps it as an EMA over each step's candidates, scored deterministically: score_uncertainty):
  the fraction of the prior variance the model has not yet explained, like 1 - R^2. It sets the
  task's level: a fresh model has r_t = 1, as uncertain as a uniform softmax; a task the model has
  learned sinks towards 0, and one it cannot learn (noisy targets) stays near 1 and keeps being
  picked. The variance head's log-variance lv_i (trained by
  the aux NLL, slow to move at fine-tuning learning rates) only ranks examples within the task,
  through its deviation from the task's mean over the candidates, so the level is never counted
  twice.

  h, h_max: [B] from `uncertainty`; outputs: must hold 'regression_log_var' when a regression task
  is present; task_id [B]; running_mse [T] float32. mode 'calibrated': u = h2(1 - v / 2) with the
  log-variance centred on the task's largest instead of its mean (module docstring).
  """
  is_regression = np.array([t == REGRESSION for t in task_info.types])
  if not is_regression.any():
    return h, h_max
  rows = jnp.asarray(is_regression)[task_id]
  log_var = outputs["regression_log_var"].astype(jnp.float32)
  num_tasks = len(task_info.types)
  if mode == "calibrated":
    centre = jax.ops.segment_max(jnp.where(rows, log_var, -jnp.inf), task_id, num_tasks)
    centre = jnp.where(jnp.isfinite(centre), centre, 0.0)
  else:
    centre, _ = task_means(jnp.where(rows, log_var, 0.0), task_id, num_tasks)
  log_u = jnp.log(jnp.maximum(running_mse[task_id], 1e-12)) + log_var - centre[task_id]
  u = jnp.exp(jnp.minimum(log_u, 0.0))
  if mode == "calibrated":
    u = binary_entropy_bits(1.0 - 0.5 * u)
  return jnp.where(rows, u, h), jnp.where(rows, 1.0, h_max)


def running_regression_mse(running_mse: Array, squared_error: Array, task_id: Array,
                           weight: Array, task_info: TaskInfo, decay: float = 0.9) -> Array:
  """EMA update of each regression task's mean squared error from this step's candidates.

  squared_error [B] (the regression head's per-example loss), task_id [B], weight [B] -> [T].
  Tasks absent from the batch, and non-regression tasks, keep their value.
  """
  num_tasks = len(task_info.types)
  sums = jax.ops.segment_sum(squared_error * weight, task_id, num_tasks)
  counts = jax.ops.segment_sum(weight, task_id, num_tasks)
  batch_mse = sums / jnp.maximum(counts, 1.0)
  is_regression = jnp.asarray([t == REGRESSION for t in task_info.types])
  update = is_regression & (counts > 0)
  return jnp.where(update, decay * running_mse + (1 - decay) * batch_mse, running_mse)


def task_means(x: Array, task_id: Array, num_tasks: int) -> tuple[Array, Array]:
  """Per-task mean of x [B] and whether the task has any example: ([T], [T] bool)."""
  sums = jax.ops.segment_sum(x, task_id, num_tasks)
  counts = jax.ops.segment_sum(jnp.ones_like(x), task_id, num_tasks)
  return _safe_div(sums, counts), counts > 0


def _paper_scores(h: Array, h_max: Array, task_id: Array, num_tasks: int) -> Array:
  """U = H / (H_hat * H'_t), H_hat = max over tasks present of the task's mean H."""
  h_bar, present = task_means(h, task_id, num_tasks)
  h_hat = jnp.max(jnp.where(present, h_bar, 0.0))
  return _safe_div(h, h_hat * h_max)


def _task_weighted_scores(h: Array, h_max: Array, task_id: Array, num_tasks: int) -> Array:
  """U = u * ubar_t / max_t' ubar_t' (the original code), u = H / H_max."""
  u = _safe_div(h, h_max)
  u_bar, present = task_means(u, task_id, num_tasks)
  weight = _safe_div(u_bar, jnp.max(jnp.where(present, u_bar, 0.0)))
  return u * weight[task_id]


ScoreFn = Callable[[Array, Array, Array, int], Array]
SCORE_MODES: dict[str, ScoreFn] = {"paper": _paper_scores, "task_weighted": _task_weighted_scores}


def check_score_mode(mode: str) -> ScoreFn:
  """The score function of `mode`; ValueError naming the known modes (for config validation)."""
  if mode not in SCORE_MODES:
    raise ValueError(f"unknown mt_uncertainty_score {mode!r}; known: {sorted(SCORE_MODES)}")
  return SCORE_MODES[mode]


def mt_uncertainty_scores(h: Array, h_max: Array, task_id: Array, num_tasks: int,
                          mode: str = "paper") -> Array:
  """MT-U score [B] of each candidate from H, H_max, task_id [B] (DESIGN 4.2 step 4).

  'paper': U = H / (H_hat * H'_t), Hbar_t = mean of H over task t's candidates, H_hat = max_t Hbar_t
    (one number per step, so it ranks by H / H'_t).
  'task_weighted': U = u * ubar_t / max_t' ubar_t', which favours tasks uncertain on average.
  Tasks with no candidate are ignored in the max; all scores are in [0, 1] except paper-mode
  scores, which may exceed 1 (H / H_hat).
  """
  return check_score_mode(mode)(h, h_max, task_id, num_tasks)


def select_top(scores: Array, b: int) -> Array:
  """Indices [b] of the b highest scores [B], highest first.

  Ties go to the lowest index (lax.top_k's documented order), so with candidates laid out
  [T, b] earlier tasks / earlier rows win ties and the choice is deterministic. NaN scores are
  treated as -inf: never preferred to a real score.
  """
  scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
  return jax.lax.top_k(scores, b)[1]


def task_ranks(scores: Array, task_id: Array, num_tasks: int) -> Array:
  """Rank [B] of each candidate among its own task's by score (0 = the task's highest); NaN last.
  One sort by (task, -score), O(B log B)."""
  s = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
  order = jnp.lexsort((-s, task_id))
  sorted_tasks = task_id[order]
  first = jnp.searchsorted(sorted_tasks, jnp.arange(num_tasks), side="left")
  ranks = jnp.arange(scores.shape[0]) - first[sorted_tasks]
  return jnp.zeros(scores.shape, jnp.int32).at[order].set(ranks.astype(jnp.int32))


def floor_quota(step: Array, floor_slots: int, num_tasks: int) -> Array:
  """[T] int: how many of this step's `floor_slots` guaranteed slots each task gets. The slots
  go round the tasks from step to step (slot i of step s to task (s * F + i) % T), so over T
  steps every task gets F of them: a floor of F / T candidates per step on average, with static
  shapes whatever F and T are."""
  owners = (jnp.asarray(step, jnp.int32) * floor_slots + jnp.arange(floor_slots)) % num_tasks
  return jnp.zeros(num_tasks, jnp.int32).at[owners].add(1)


SCORE_QUANTUM = 2.0 ** -16  # ~1.5e-5: 10x the float noise of the scores, far below real gaps


def quantise_scores(scores: Array) -> Array:
  """Scores [B] rounded to multiples of SCORE_QUANTUM, so near-equal scores tie exactly and the tie
  goes to the lower candidate index. Why: the scores carry float noise of ~1e-7 to 1e-6 that
  depends on the device layout (the order of the gradient all-reduce's sums), and at init many
  candidates score the same up to that noise (a fresh regression head is constant); unrounded,
  the top-b cut among them follows the noise (an earlier version's 2 processes x 4 devices picked
  other candidates than 1 x 8 from step 6 on). A difference of 1.5e-5 in u carries no information
  about which example is more useful, so nothing is lost. +-inf pass unchanged."""
  return jnp.round(scores / SCORE_QUANTUM) * SCORE_QUANTUM


def select_with_shares(scores: Array, task_id: Array, num_tasks: int, b: int, step: Array,
                       floor_slots: int, max_per_task: int) -> Array:
  """Indices [b] of the top b scores [B] under a per-task floor and cap (module docstring).

  floor_slots F: this step's F guaranteed slots (floor_quota) each take the owning task's most
  uncertain candidate not yet taken, before any other; max_per_task: a task's candidates beyond
  its max_per_task most uncertain are never taken. Scores are compared after quantise_scores
  (ties to the lower index). F = 0 and max_per_task >= b is exactly select_top (no rounding).
  Needs F <= b <= max_per_task * T (experiment.validate_config checks).
  """
  if floor_slots <= 0 and max_per_task >= b:
    return select_top(scores, b)
  s = quantise_scores(jnp.where(jnp.isnan(scores), -jnp.inf, scores))
  ranks = task_ranks(s, task_id, num_tasks)
  quota = floor_quota(step, floor_slots, num_tasks)[task_id]
  floor_bonus = 1.0 + jnp.max(jnp.where(jnp.isfinite(s), jnp.abs(s), 0.0))
  s = jnp.where(ranks < quota, s + 2 * floor_bonus, s)  # above every other score
  s = jnp.where(ranks >= max_per_task, -jnp.inf, s)
  return jax.lax.top_k(s, b)[1]



# ----------------------------------------------------------------------------------------------
# The scoring forward and the selection of a step.

def flatten_candidates(candidates: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """[T, b, ...] -> [b*T, ...]; row j*T + t is slot j of task t.

  Slot-major order: with the slots (axis 1) split over 'data', each device's candidates form one
  contiguous block of the flat array, so flattening moves no data between devices.
  """
  return {k: jnp.swapaxes(v, 0, 1).reshape((-1,) + v.shape[2:]) for k, v in candidates.items()}


@dataclasses.dataclass(frozen=True)
class ScoreGroup:
  """Tasks scored by one forward: their task ids, the choice rows kept (None: all K) and the head
  types run (None: all)."""
  task_ids: tuple[int, ...]
  num_choices: int | None = None
  head_types: tuple[str, ...] | None = None


def score_groups(task_info: TaskInfo) -> tuple[ScoreGroup, ...]:
  """How the scoring forward splits the candidates (static).

  A batch with a multiple-choice task has K > 1 choice rows for every example, and for the other
  task types K - 1 of them are empty padding. When both kinds of task are present, the other tasks
  are scored with K = 1 and the multiple-choice tasks with all K: two forwards over
  T_other * b + T_mc * b * K rows instead of one over T * b * K (24 tasks with COPA: 25 * b rows
  instead of 48 * b). Otherwise one group of every task.
  """
  mc = tuple(t for t, kind in enumerate(task_info.types) if kind == MULTIPLE_CHOICE)
  other = tuple(t for t, kind in enumerate(task_info.types) if kind != MULTIPLE_CHOICE)
  if not mc or not other:
    return (ScoreGroup(tuple(range(len(task_info.types)))),)
  return (ScoreGroup(other, 1, camtl_lib.non_choice_types(task_info.types)),
          ScoreGroup(mc, None, (MULTIPLE_CHOICE,)))


def _group_uncertainty(ctx: StepContext, params, candidates: dict[str, jax.Array],
                       group: ScoreGroup, regression_mse: jax.Array, packed_rows=None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(H, H_max) [b, T_g] of one group's candidates, and its tasks' updated running MSE [T_g].

  The uncertainty functions see the group's tasks renumbered 0..T_g-1 (their own TaskInfo); the
  model sees the real task ids. packed_rows: the candidates of the group's tasks packed
  (packing.py), for a group without choices; None: the padded candidates.
  """
  ids = np.asarray(group.task_ids)
  if len(ids) < ctx.num_tasks:
    candidates = {k: v[ids] for k, v in candidates.items()}  # static gather over the task axis
  if group.num_choices is not None:
    candidates = {k: v[:, :, :group.num_choices] if k in camtl_lib.CHOICE_KEYS else v
                  for k, v in candidates.items()}
  flat = sharding.constrain(flatten_candidates(candidates), ctx.example_sharding)
  apply = functools.partial(ctx.model.apply, {"params": jax.lax.stop_gradient(params)},
                            deterministic=True, head_types=group.head_types)
  if packed_rows is None or not ctx.score_chunk_rows:
    outputs = apply(flat, packed=packed_rows)
  else:  # only the chunks of rows in use (packing.chunked_forward)
    outputs = packing.chunked_forward(
        lambda rows, index: apply(dict(flat, unpack_index=index), packed=rows), packed_rows,
        flat["unpack_index"], ctx.score_chunk_rows)
  local = np.zeros(ctx.num_tasks, np.int32)
  local[ids] = np.arange(len(ids))
  task_id = jnp.asarray(local)[flat["task_id"]]
  info = TaskInfo(tuple(ctx.task_info.types[t] for t in ids),
                  tuple(ctx.task_info.num_labels[t] for t in ids))
  mse = regression_mse[ids]
  if "regression" in outputs:
    squared = jnp.square(outputs["regression"] - flat["target"])
    mse = running_regression_mse(mse, squared, task_id, flat["weight"], info)
  h, h_max = uncertainty(outputs, dict(flat, task_id=task_id), info, ctx.uncertainty_mode)
  h, h_max = calibrated_regression_uncertainty(h, h_max, outputs, task_id, info, mse,
                                               ctx.uncertainty_mode)
  return h.reshape(-1, len(ids)), h_max.reshape(-1, len(ids)), mse


def score_uncertainty(ctx: StepContext, params, candidates: dict[str, jax.Array],
                      regression_mse: jax.Array, packed_rows=None
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """MT-U's deterministic forward over candidates [T, b, ...] (per score_groups) ->
  H, H_max [b*T] in the flat order of flatten_candidates, and the updated running MSE [T].

  Regression tasks: their level of uncertainty is the running MSE of the candidates' predictions
  (calibrated_regression_uncertainty), refreshed here every step from all b candidates
  of each regression task, so it never goes stale while a task is not being selected.
  """
  groups = score_groups(ctx.task_info)
  hs, h_maxs = [], []
  for group in groups:  # one or two static groups; packing covers the group without choices
    rows = packed_rows if group.head_types != (MULTIPLE_CHOICE,) else None
    h, h_max, mse = _group_uncertainty(ctx, params, candidates, group, regression_mse, rows)
    regression_mse = regression_mse.at[np.asarray(group.task_ids)].set(mse)
    hs.append(h)
    h_maxs.append(h_max)
  order = np.argsort(np.concatenate([g.task_ids for g in groups]))  # columns back to task order
  restore = lambda parts: jnp.concatenate(parts, axis=1)[:, order].reshape(-1)  # noqa: E731
  return restore(hs), restore(h_maxs), regression_mse


def select(ctx: StepContext, params, candidates: dict[str, jax.Array], flat: dict[str, jax.Array],
           step: jax.Array, regression_mse: jax.Array, packed_rows=None
           ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """MT-U's choice of the step's b examples: indices [b] into the T*b flat candidates (flat, in
  the order of flatten_candidates), per-candidate (H, H_max) [T*b] for logging, and the updated
  running regression MSE [T].

  A deterministic forward without gradient over all candidates (score_uncertainty), the scores
  (mt_uncertainty_scores, ctx.score_mode), and the top b under the per-task floor and cap
  (select_with_shares).
  """
  entropy, max_entropy, regression_mse = score_uncertainty(ctx, params, candidates,
                                                           regression_mse, packed_rows)
  scores = mt_uncertainty_scores(entropy, max_entropy, flat["task_id"], ctx.num_tasks,
                                 ctx.score_mode)
  idx = select_with_shares(scores, flat["task_id"], ctx.num_tasks, ctx.batch_size, step,
                           ctx.floor_slots, ctx.max_per_task)
  return idx, entropy, max_entropy, regression_mse
