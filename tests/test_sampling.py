"""Tests for camtl_jax/sampling.py (baseline samplers, per-task loss sums, data accounting)
against direct numpy computations."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camtl_jax import sampling


def test_unknown_sampler_names():
  with pytest.raises(ValueError, match=r"unknown sampler 'annealed'.*'mt_uncertainty'.*'uniform'"):
    sampling.check_sampler("annealed")
  assert sampling.check_sampler("mt_uncertainty") is None
  assert sampling.check_sampler("temperature") is sampling.temperature


# ---------------------------------------------------------------------------------------------
# Baseline samplers.

SIZES = jnp.array([1000.0, 100.0, 0.0, 10.0])


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _many_steps(name: str, steps: int, b: int, alpha: float = 0.5) -> jax.Array:
  """[steps, b] indices from fold_in(key, step), as the train step derives its rng."""
  base = jax.random.key(0)
  run = lambda s: sampling.SAMPLERS[name](jax.random.fold_in(base, s), s, SIZES, b, alpha)
  return jax.vmap(run)(jnp.arange(steps))


@pytest.mark.parametrize("name, probs", [
    ("proportional", SIZES / SIZES.sum()),
    ("temperature", SIZES ** 0.5 / (SIZES ** 0.5).sum()),
    ("uniform", np.array([1, 1, 0, 1]) / 3),
    ("round_robin", np.full(4, 0.25)),
])
def test_baseline_samplers_layout_and_proportions(name, probs):
  steps, b, num_tasks = 2000, 16, 4
  idx = np.asarray(_many_steps(name, steps, b))
  assert idx.shape == (steps, b)
  np.testing.assert_array_equal(idx % b, np.broadcast_to(np.arange(b), idx.shape))  # position j
  tasks = idx // b
  assert tasks.min() >= 0 and tasks.max() < num_tasks
  share = np.bincount(tasks.ravel(), minlength=num_tasks) / tasks.size
  np.testing.assert_allclose(share, probs, atol=0.01)
  if name != "round_robin":
    assert not np.any(tasks == 2)  # empty task never drawn
  # Pure function of (key, step): the same again.
  np.testing.assert_array_equal(idx, _many_steps(name, steps, b))


def test_round_robin_one_task_per_step():
  tasks = np.asarray(_many_steps("round_robin", 9, 5)) // 5
  np.testing.assert_array_equal(tasks, np.repeat((np.arange(9) % 4)[:, None], 5, axis=1))


# ---------------------------------------------------------------------------------------------
# Loss and data accounting.

def test_per_task_mean_loss_matches_numpy():
  rng = np.random.default_rng(4)
  num_tasks, n = 5, 30
  loss = rng.random(n).astype(np.float32)
  task_id = rng.choice([0, 1, 3], size=n).astype(np.int32)
  weight = (rng.random(n) < 0.8).astype(np.float32)
  weight[task_id == 3] = 0.0  # present but only padding rows: does not count
  fn = jax.jit(sampling.per_task_mean_loss, static_argnums=3)
  mean, sums, counts = fn(jnp.asarray(loss), jnp.asarray(task_id), jnp.asarray(weight), num_tasks)
  per_task = [loss[(task_id == t) & (weight > 0)].mean() for t in (0, 1)]
  np.testing.assert_allclose(mean, np.mean(per_task), rtol=1e-6)
  np.testing.assert_allclose(sums, [np.sum(loss * weight * (task_id == t)) for t in range(5)],
                             rtol=1e-6)
  np.testing.assert_array_equal(counts, [np.sum(weight * (task_id == t)) for t in range(5)])
  grad = jax.grad(lambda l: fn(l, jnp.asarray(task_id), jnp.asarray(weight), num_tasks)[0])(
      jnp.asarray(loss))
  assert np.all(np.isfinite(grad))
  # Each present task weighs 1/2 in total, split over its examples.
  np.testing.assert_allclose(np.asarray(grad)[(task_id == 0) & (weight > 0)],
                             0.5 / np.sum((task_id == 0) & (weight > 0)), rtol=1e-6)


def test_update_used_and_report():
  sizes, names = [4, 0, 6], ["a", "empty", "b"]
  used = jnp.zeros(10, bool)
  update = jax.jit(sampling.update_used)
  used = update(used, jnp.array([0, 1, 1, 7]), jnp.ones(4))
  used = update(used, jnp.array([9, 2, -1, 10]), jnp.array([1.0, 0.0, 1.0, 1.0]))  # 2 is padding
  np.testing.assert_array_equal(np.flatnonzero(used), [0, 1, 7, 9])
  report = sampling.data_usage(np.asarray(used), sizes, names)
  assert report.per_task == {"a": 50.0, "empty": 0.0, "b": pytest.approx(100 * 2 / 6)}
  assert report.overall == pytest.approx(40.0)
  with pytest.raises(ValueError, match="shape"):
    sampling.data_usage(np.zeros(3, bool), sizes, names)
