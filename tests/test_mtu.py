"""Tests for camtl_jax/mtu.py's uncertainty, scores and selection against direct numpy
computations, everything under jax.jit."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camtl_jax import mtu
from camtl_jax.tasks.base import CLASSIFICATION, MULTIPLE_CHOICE, REGRESSION, SPAN, TAGGING

MASK = -1e9
# One task per head type, plus a 1-class classification task (degenerate: H = H_max = 0).
INFO = mtu.TaskInfo(
    types=(CLASSIFICATION, MULTIPLE_CHOICE, SPAN, TAGGING, REGRESSION, CLASSIFICATION),
    num_labels=(3, 4, 0, 5, 0, 1))
B_PER_TASK, K, L, C_MAX, C_TAG = 6, 4, 10, 4, 7


def np_entropy(logits: np.ndarray) -> float:
  """Entropy of softmax(logits) over the given (valid) entries only."""
  logits = np.asarray(logits, np.float64)
  p = np.exp(logits - logits.max())
  p /= p.sum()
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def make_candidates(seed: int = 0, info: mtu.TaskInfo = INFO, per_task: int = B_PER_TASK):
  """Random model outputs and batch for per_task candidates of every task, laid out [T, b]."""
  rng = np.random.default_rng(seed)
  num_tasks = len(info.types)
  b = num_tasks * per_task
  task_id = np.repeat(np.arange(num_tasks), per_task).astype(np.int32)
  attention_mask = np.zeros((b, K, L), np.int32)
  attention_mask[:, 0, :4] = 1
  n_choices = rng.integers(1, K + 1, size=b)  # MC examples use 1..K choice rows
  for i in range(b):
    if info.types[task_id[i]] == MULTIPLE_CHOICE:
      attention_mask[i, :n_choices[i], :3] = 1
  context_mask = (rng.random((b, L)) < 0.5).astype(np.int32)
  context_mask[:, 0] = rng.integers(0, 2, size=b)  # [CLS] must count either way
  token_labels = np.where(rng.random((b, L)) < 0.4, rng.integers(0, 5, size=(b, L)), -1)
  token_labels[0] = -1  # an example with no labelled token
  outputs = {
      "cls_logits": 3 * rng.normal(size=(b, C_MAX)),
      "choice_logits": 3 * rng.normal(size=(b, K)),
      "regression": rng.normal(size=b),
      "regression_log_var": rng.normal(size=b),
      "start_logits": 3 * rng.normal(size=(b, L)),
      "end_logits": 3 * rng.normal(size=(b, L)),
      "tag_logits": 3 * rng.normal(size=(b, L, C_TAG)),
  }
  # The model masks invalid entries with -1e9 (and one huge value at a masked class must not leak).
  num_labels = np.array(info.num_labels)[task_id]
  outputs["cls_logits"][np.arange(C_MAX) >= num_labels[:, None]] = MASK
  outputs["cls_logits"][:, -1] = np.where(num_labels < C_MAX, 50.0, outputs["cls_logits"][:, -1])
  outputs["choice_logits"][~attention_mask.any(-1)] = MASK
  outputs = {k: jnp.asarray(v, jnp.float32) for k, v in outputs.items()}
  batch = {"task_id": task_id, "attention_mask": attention_mask, "context_mask": context_mask,
           "token_labels": token_labels.astype(np.int32)}
  return outputs, {k: jnp.asarray(v) for k, v in batch.items()}


def np_uncertainty(outputs, batch, info) -> tuple[np.ndarray, np.ndarray]:
  """Per-example loops, straight from the definitions."""
  out = {k: np.asarray(v) for k, v in outputs.items()}
  bt = {k: np.asarray(v) for k, v in batch.items()}
  h, h_max = [], []
  for i, t in enumerate(bt["task_id"]):
    kind, c = info.types[t], info.num_labels[t]
    if kind == CLASSIFICATION:
      h.append(np_entropy(out["cls_logits"][i, :c]))
      h_max.append(np.log(c))
    elif kind == MULTIPLE_CHOICE:
      valid = bt["attention_mask"][i].any(-1)
      h.append(np_entropy(out["choice_logits"][i][valid]))
      h_max.append(np.log(valid.sum()))
    elif kind == SPAN:
      allowed = bt["context_mask"][i].astype(bool)
      allowed[0] = True
      h.append(0.5 * (np_entropy(out["start_logits"][i][allowed])
                      + np_entropy(out["end_logits"][i][allowed])))
      h_max.append(np.log(allowed.sum()))
    elif kind == TAGGING:
      tokens = np.flatnonzero(bt["token_labels"][i] >= 0)
      h.append(np.mean([np_entropy(out["tag_logits"][i, j, :c]) for j in tokens]) if len(tokens)
               else 0.0)
      h_max.append(np.log(c))
    else:
      h.append(min(np.exp(out["regression_log_var"][i]), 1.0))
      h_max.append(1.0)
  return np.array(h), np.array(h_max)


uncertainty = jax.jit(mtu.uncertainty, static_argnums=2)


def test_uncertainty_per_head_type_matches_numpy():
  outputs, batch = make_candidates()
  h, h_max = uncertainty(outputs, batch, INFO)
  ref_h, ref_max = np_uncertainty(outputs, batch, INFO)
  assert np.all(np.isfinite(h)) and np.all(np.isfinite(h_max))
  np.testing.assert_allclose(h, ref_h, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(h_max, ref_max, rtol=1e-6, atol=1e-6)
  u = np_u(h, h_max)
  assert np.all((u >= 0) & (u <= 1 + 1e-6))
  one_class = np.asarray(batch["task_id"]) == 5
  assert np.all(np.asarray(h)[one_class] == 0) and np.all(np.asarray(h_max)[one_class] == 0)


def test_uncertainty_only_present_head_types():
  """A run with only classification and regression tasks passes only their outputs."""
  info = mtu.TaskInfo((CLASSIFICATION, REGRESSION), (4, 0))
  outputs, batch = make_candidates(info=info)
  outputs = {k: outputs[k] for k in ("cls_logits", "regression", "regression_log_var")}
  batch = {"task_id": batch["task_id"]}
  h, h_max = uncertainty(outputs, batch, info)
  np.testing.assert_allclose(h, np_uncertainty(outputs, batch, info)[0], rtol=1e-4, atol=1e-5)


def test_uniform_prediction_scores_one():
  info = mtu.TaskInfo((CLASSIFICATION, SPAN, TAGGING, REGRESSION), (3, 0, 5, 0))
  outputs, batch = make_candidates(info=info, per_task=2)
  outputs = {k: jnp.zeros_like(v) for k, v in outputs.items()}  # uniform softmax, log_var 0
  h, h_max = uncertainty(outputs, batch, info)
  u = np_u(h, h_max)
  has_support = np.asarray(h_max) > 0
  np.testing.assert_allclose(u[has_support], 1.0, rtol=1e-5)


def test_regression_uncertainty_responds_to_log_var():
  info = mtu.TaskInfo((REGRESSION,), (0,))
  log_var = jnp.array([-50.0, -2.0, -0.5, 0.0, 3.0, 1e4])
  h, h_max = uncertainty({"regression_log_var": log_var}, {"task_id": jnp.zeros(6, jnp.int32)},
                         info)
  np.testing.assert_allclose(h, [0.0, np.exp(-2.0), np.exp(-0.5), 1.0, 1.0, 1.0], rtol=1e-6,
                             atol=1e-20)
  np.testing.assert_array_equal(h_max, 1.0)


def test_regression_selection_rate_responds_to_difficulty():
  """STS-B-like candidates compete with a classification task: the harder the model finds them
  (larger predicted variance), the more of them MT-U picks."""
  info = mtu.TaskInfo((CLASSIFICATION, REGRESSION), (3, 0))
  rng = np.random.default_rng(0)
  b = 64
  task_id = jnp.repeat(jnp.arange(2), b)
  cls_logits = jnp.asarray(2.0 * rng.normal(size=(2 * b, 3)), jnp.float32)
  shares = []
  for mean_log_var in (-4.0, -2.0, -1.0, -0.3):
    log_var = jnp.asarray(mean_log_var + 0.5 * rng.normal(size=2 * b), jnp.float32)
    outputs = {"cls_logits": cls_logits, "regression_log_var": log_var}
    idx, _ = select(outputs, {"task_id": task_id}, info, b, "paper")
    shares.append(float(np.mean(np.asarray(idx) >= b)))
  assert shares == sorted(shares) and shares[0] < 0.2 and shares[-1] > 0.6, shares


# ---------------------------------------------------------------------------------------------
# Scores and selection.

def np_scores(h, h_max, task_id, num_tasks, mode):
  h, h_max, task_id = map(np.asarray, (h, h_max, task_id))
  u = np.where(h_max > 0, h / np.where(h_max > 0, h_max, 1), 0.0)
  present = [t for t in range(num_tasks) if np.any(task_id == t)]
  if mode == "paper":
    h_hat = max(h[task_id == t].mean() for t in present)
    return np.where(h_max > 0, h / (h_hat * np.where(h_max > 0, h_max, 1)), 0.0)
  u_bar = {t: u[task_id == t].mean() for t in present}
  top = max(u_bar.values())
  return np.array([u[i] * u_bar[t] / top for i, t in enumerate(task_id)])


def np_u(h, h_max) -> np.ndarray:
  """u = H / H_max, 0 where H_max = 0."""
  h, h_max = np.asarray(h), np.asarray(h_max)
  return np.where(h_max > 0, h / np.where(h_max > 0, h_max, 1.0), 0.0)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def select(outputs, candidates, task_info: mtu.TaskInfo, b: int, mode: str = "paper"):
  """Score and select as the step does with the floor and cap off: (indices [b], scores [B])."""
  h, h_max = mtu.uncertainty(outputs, candidates, task_info)
  scores = mtu.mt_uncertainty_scores(h, h_max, candidates["task_id"], len(task_info.types), mode)
  return mtu.select_top(scores, b), scores


@pytest.mark.parametrize("mode", ["paper", "task_weighted"])
def test_selection_matches_numpy(mode):
  outputs, batch = make_candidates(seed=1)
  idx, scores = select(outputs, batch, INFO, B_PER_TASK, mode)
  ref_h, ref_max = np_uncertainty(outputs, batch, INFO)
  ref = np_scores(ref_h, ref_max, batch["task_id"], len(INFO.types), mode)
  np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(idx, np.argsort(-ref, kind="stable")[:B_PER_TASK])
  assert len(set(np.asarray(idx).tolist())) == B_PER_TASK


@pytest.mark.parametrize("mode", ["paper", "task_weighted"])
def test_scores_random_candidates_and_absent_tasks(mode):
  rng = np.random.default_rng(2)
  num_tasks, n = 7, 40
  task_id = rng.choice([0, 2, 3, 6], size=n)  # tasks 1, 4, 5 have no candidate
  h_max = np.log(np.array([2, 3, 1, 5, 2, 2, 9]))[task_id]
  h = rng.random(n) * h_max
  scores = jax.jit(mtu.mt_uncertainty_scores, static_argnums=(3, 4))(
      jnp.asarray(h, jnp.float32), jnp.asarray(h_max, jnp.float32), jnp.asarray(task_id),
      num_tasks, mode)
  ref = np_scores(h, h_max, task_id, num_tasks, mode)
  np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-7)
  idx = jax.jit(mtu.select_top, static_argnums=1)(scores, 9)
  np.testing.assert_array_equal(idx, np.argsort(-np.asarray(scores), kind="stable")[:9])


def test_paper_mode_ranks_by_normalised_entropy():
  rng = np.random.default_rng(3)
  task_id = np.repeat(np.arange(4), 8)
  h_max = np.log(np.array([2, 3, 5, 20]))[task_id]
  h = rng.random(32) * h_max
  scores = mtu.mt_uncertainty_scores(jnp.asarray(h), jnp.asarray(h_max),
                                          jnp.asarray(task_id), 4)
  np.testing.assert_array_equal(np.argsort(-np.asarray(scores)), np.argsort(-(h / h_max)))


def test_select_top_ties_and_nan():
  scores = jnp.array([0.5, 0.9, 0.5, 0.9, jnp.nan, 0.5])
  np.testing.assert_array_equal(mtu.select_top(scores, 4), [1, 3, 0, 2])
  np.testing.assert_array_equal(mtu.select_top(jnp.zeros(6), 3), [0, 1, 2])


def test_calibrated_regression_uncertainty_and_running_mse_match_numpy():
  info = mtu.TaskInfo(("classification", "regression", "regression"), (2, 1, 1))
  rng = np.random.default_rng(0)
  task = np.array([0, 1, 1, 2, 2, 2, 1, 0])
  log_var = rng.normal(size=8).astype(np.float32)
  h = rng.random(8).astype(np.float32)
  h_max = np.full(8, np.log(2), np.float32)
  mse = np.array([1.0, 0.2, 3.0], np.float32)
  out_h, out_max = mtu.calibrated_regression_uncertainty(
      jnp.asarray(h), jnp.asarray(h_max), {"regression_log_var": jnp.asarray(log_var)},
      jnp.asarray(task), info, jnp.asarray(mse))
  expected = h.astype(np.float64).copy()
  for t in (1, 2):
    rows = task == t
    expected[rows] = np.minimum(mse[t] * np.exp(log_var[rows] - log_var[rows].mean()), 1.0)
  np.testing.assert_allclose(out_h, expected, rtol=1e-5)
  np.testing.assert_allclose(out_max, np.where(task > 0, 1.0, h_max), rtol=1e-6)
  # Task 2 (mse 3 > 1) saturates at 1: a task the model cannot learn stays maximally uncertain.
  assert np.all(np.asarray(out_h)[task == 2] == 1.0)

  squared = rng.random(8).astype(np.float32)
  weight = np.ones(8, np.float32)
  new = mtu.running_regression_mse(jnp.asarray(mse), jnp.asarray(squared), jnp.asarray(task),
                                        jnp.asarray(weight), info, decay=0.9)
  ref = mse.astype(np.float64).copy()
  for t in (1, 2):
    ref[t] = 0.9 * mse[t] + 0.1 * squared[task == t].mean()
  np.testing.assert_allclose(new, ref, rtol=1e-6)


def test_unknown_score_and_uncertainty_modes():
  with pytest.raises(ValueError, match=r"unknown mt_uncertainty_score 'max'.*'paper'"):
    mtu.check_score_mode("max")
  with pytest.raises(ValueError, match=r"unknown mtu_uncertainty 'entropy'.*'calibrated'"):
    mtu.check_uncertainty_mode("entropy")
