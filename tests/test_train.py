"""The training engine end to end: in process on the micro config (default tier; 1 vs 8 devices in
the 8-device run), in processes (kill, resume: integration), and learning on the tiny config (2
real MiniLM layers: research)."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from camtl_jax import checkpoint, experiment, mtu, sharding, train, update
from camtl_jax.configs import tiny
from tests.conftest import micro_config, shared_compile_cache
from camtl_jax.models.heads import TaskSpec
from camtl_jax.tasks.base import CLASSIFICATION, REGRESSION, TAGGING

REPO = Path(__file__).resolve().parents[1]


def _config(**overrides):
  c = micro_config(**overrides)
  c.lock()
  return c


def _tiny_config(**overrides):
  c = tiny.get_config()
  c.unlock()
  for key, value in overrides.items():
    c[key] = value
  c.lock()
  return c


# The micro config with tiny's schedule: 12 steps, a checkpoint every 3, so a kill lands mid-run.
MICRO_RUN = ("--config.total_steps=12", "--config.checkpoint_every=3", "--config.eval_every=6",
             "--config.log_every=4")
MICRO_STEPS = 12


def _train_cmd(workdir, *overrides, devices=1, config="micro"):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  schedule = MICRO_RUN if config == "micro" else ()
  cmd = [sys.executable, "-m", "camtl_jax.main", "--config", config,
         "--workdir", str(workdir), shared_compile_cache(), *schedule, *overrides]
  return cmd, env


def _run(workdir, *overrides, devices=1, timeout=600, config="micro"):
  cmd, env = _train_cmd(workdir, *overrides, devices=devices, config=config)
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _history(workdir):
  lines = (Path(workdir) / "history.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines if '"loss"' in line]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One uninterrupted tiny run (2 real MiniLM layers) in a subprocess."""
  workdir = tmp_path_factory.mktemp("uninterrupted_tiny")
  _run(workdir, config="tiny")
  return workdir


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
  """One uninterrupted 12-step micro run in a subprocess (shared by the process tests)."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  _run(workdir)
  return workdir


def test_resume_from_an_earlier_checkpoint_equals_the_uninterrupted_run_bitwise(micro_workdir,
                                                                                tmp_path):
  """In process: the 4-step micro run, restored at its step-2 checkpoint and continued, ends
  with every state leaf bit-identical to the uninterrupted run's."""
  import shutil
  resumed = tmp_path / "resumed"
  shutil.copytree(micro_workdir, resumed)
  last = micro_config().total_steps
  shutil.rmtree(resumed / "checkpoints" / str(last))
  assert sorted(checkpoint.make_manager(resumed, async_save=False).all_steps()) == [2]
  train.train_and_evaluate(micro_config(), str(resumed))
  step_a, state_a = checkpoint.load_state(micro_workdir, last)
  step_b, state_b = checkpoint.load_state(resumed, last)
  assert step_a == step_b == last
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)


@pytest.mark.research
def test_tiny_run_writes_results_and_learns(tiny_run):
  results = json.loads((tiny_run / "results.json").read_text())
  assert set(results["results"]) == set(tiny.get_config().tasks)
  assert 0 < results["data_used"]["overall"] <= 1
  assert (tiny_run / "sampling.png").stat().st_size > 1000
  history = _history(tiny_run)
  shares = history[-1]["task_share"]
  assert abs(sum(shares.values()) - 1) < 1e-6


@pytest.mark.research
def test_tiny_run_lowers_the_loss_on_its_training_candidates(tiny_run, tmp_path):
  # MT-U trains on the most uncertain candidates, so the logged loss of the selected batches need
  # not fall step by step; the deterministic per-task-mean loss on fixed candidate sets must.
  run = experiment.build_run(_tiny_config(), tmp_path)
  initial, _, _ = train.init_state(run)
  _, final = checkpoint.load_state(tiny_run)

  def loss(params):
    total = 0.0
    for step in range(4):
      flat = mtu.flatten_candidates(run.loader.candidates(step))
      out = run.model.apply({"params": params}, flat, deterministic=True)
      weights = update.example_weights(flat["task_id"], flat["weight"], len(run.tasks))
      total += float(jnp.sum(weights * out["loss"]))
    return total / 4

  before, after = loss(initial["params"]), loss(final["params"])
  assert after < before, (before, after)


@pytest.mark.integration
def test_sigkill_and_restart_equals_uninterrupted_bitwise(micro_run, tmp_path):
  workdir = tmp_path / "killed"
  cmd, env = _train_cmd(workdir)
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpts = workdir / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    steps = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
    if steps and max(steps) >= 3:
      break
    time.sleep(0.05)
  time.sleep(0.3)  # land somewhere inside the following steps
  assert proc.poll() is None, "the run finished before it could be killed; make it longer"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(checkpoint.make_manager(workdir, async_save=False).all_steps())
  assert killed_at < MICRO_STEPS
  _run(workdir)  # same command: resumes from the workdir
  step_a, state_a = checkpoint.load_state(micro_run)
  step_b, state_b = checkpoint.load_state(workdir)
  assert step_a == step_b == MICRO_STEPS
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)


@pytest.mark.integration
def test_corrupt_latest_checkpoint_falls_back_with_warning(micro_run, tmp_path, caplog):
  import shutil
  workdir = tmp_path / "corrupt"
  shutil.copytree(micro_run, workdir)
  manager = checkpoint.make_manager(workdir, async_save=False)
  latest, previous = sorted(manager.all_steps())[-1], sorted(manager.all_steps())[-2]
  for f in (workdir / "checkpoints" / str(latest) / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b"\0garbage" * 3)
  run = experiment.build_run(_config(total_steps=MICRO_STEPS), workdir)
  state, *_ = train.init_state(run)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  with caplog.at_level("WARNING"):
    restored = checkpoint.restore_latest(manager, abstract, train.run_fingerprint(run), workdir)
  assert restored is not None and int(restored[0]["step"]) == previous
  assert f"checkpoint {latest}" in caplog.text


def test_changed_task_list_on_same_workdir_is_refused(micro_workdir, tmp_path):
  import shutil
  workdir = tmp_path / "mismatch"
  shutil.copytree(micro_workdir, workdir)
  config = _config(tasks=("demo/sentiment", "demo/entities"), total_steps=20)
  with pytest.raises(checkpoint.WorkdirMismatch, match="tasks"):
    train.train_and_evaluate(config, str(workdir))


# ------------------------------------------------------------------------------------------------
# In-process checks of the compiled step


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
  # The paper's MT-U exactly (no calibration, no floor or cap): the selection test below checks
  # the compiled step against an independent numpy version of the paper's formula.
  workdir = tmp_path_factory.mktemp("engine")
  run = experiment.build_run(_config(mtu_uncertainty="normalised", mtu_min_share=0.0,
                                     mtu_max_share=1.0, batch_size=8), workdir)  # 8 devices
  state, steps = train.compile_run(run)
  return run, steps, jax.device_put(state, steps.shardings)


def _candidates(run, step):
  return sharding.global_batch(run.loader.candidates(step), run.mesh, example_axis=1)


@pytest.mark.multidevice
def test_frozen_leaves_bit_identical_trainable_moved(engine):
  run, steps, state = engine
  before = jax.device_get(state["params"])
  state = jax.tree.map(jnp.copy, state)  # p_train donates its input
  for step in range(3):
    state, _ = steps.p_train(state, _candidates(run, step), None)
  after = jax.device_get(state["params"])
  moved = jax.tree.map(lambda a, b, l: (l, bool(np.any(a != b))), before, after,
                       steps.ctx.labels)
  flags = jax.tree.leaves(moved, is_leaf=lambda x: isinstance(x, tuple))
  assert all(not changed for label, changed in flags if label == "frozen")
  assert sum(changed for label, changed in flags if label == "trainable") > 0.9 * sum(
      1 for label, _ in flags if label == "trainable")


@pytest.mark.multidevice
def test_chunked_eval_forward_equals_one_pass(engine):
  """eval_step run 8 examples at a time (as on CPU by default) gives every example, of every
  head type, the outputs of the one-pass forward."""
  run, steps, state = engine
  examples = mtu.flatten_candidates(jax.device_get(_candidates(run, 0)))  # [T*b, ...]
  examples = sharding.global_batch(examples, run.mesh, example_axis=0)
  forward = lambda chunk: train.recompile(steps, eval_chunk_rows=chunk).p_eval(  # noqa: E731
      state["params"], examples, None)
  one_pass, chunked = jax.device_get(forward(0)), jax.device_get(forward(8))
  assert len(run.tasks) * run.config.batch_size > 8 and set(chunked) == set(one_pass)
  for key, value in one_pass.items():
    np.testing.assert_allclose(chunked[key], value, atol=1e-5, rtol=1e-5, err_msg=key)


@pytest.mark.multidevice
def test_one_and_eight_devices_give_the_same_losses(engine):
  """The step compiled for one device and for the engine's eight (the 8-device run) starts from
  the same state, trains on the same examples and reaches the same losses and parameters: only the
  reduction order of the sharded sums differs."""
  if jax.device_count() == 1:
    pytest.skip("compares 1 device with 8: runs in the 8-device run")
  run, steps, state = engine
  one_run = dataclasses.replace(run, mesh=sharding.make_mesh(1, jax.devices()[:1]))
  one_state, one_steps = train.compile_run(one_run)
  one_state = jax.device_put(one_state, one_steps.shardings)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(one_state["params"]),
               jax.device_get(state["params"]))
  eight_state, losses = jax.tree.map(jnp.copy, state), {1: [], 8: []}
  for step in range(3):
    one_state, one_metrics = one_steps.p_train(
        one_state, sharding.global_batch(run.loader.candidates(step), one_run.mesh,
                                         example_axis=1), None)
    eight_state, eight_metrics = steps.p_train(eight_state, _candidates(run, step), None)
    losses[1].append(float(one_metrics["loss"]))
    losses[8].append(float(eight_metrics["loss"]))
  np.testing.assert_allclose(losses[1], losses[8], rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               jax.device_get(one_state["params"]), jax.device_get(eight_state["params"]))


@pytest.mark.integration
def test_nan_guard_covers_the_updated_parameters(engine):
  """A NaN learning rate gives finite loss and gradients but NaN parameters: the step is skipped
  (parameters and optimizer state bit-identical) and counted. The config refuses such a rate;
  this checks the step itself."""
  run, steps, state = engine
  tx, _ = experiment.make_optimizer(run.config, state["params"], run.model.encoder.num_layers,
                                    learning_rate=float("nan"))
  p_nan = train.recompile(steps, tx=tx).p_train
  before = jax.device_get(state)
  after, metrics = p_nan(jax.tree.map(jnp.copy, state), _candidates(run, 0), None)
  after = jax.device_get(after)
  jax.tree.map(np.testing.assert_array_equal, before["params"], after["params"])
  jax.tree.map(np.testing.assert_array_equal, before["opt_state"], after["opt_state"])
  assert int(after["skipped"]) == 1 and int(after["bad_run"]) == 1 and int(after["step"]) == 1
  assert float(metrics["skipped"]) == 1.0
  # At the consecutive-bad-step limit the state halts on the device: a finite step changes nothing.
  p_halt = train.recompile(steps, max_bad_steps=1).p_train
  halted, _ = p_halt(jax.device_put(after, steps.shardings), _candidates(run, 1), None)
  halted = jax.device_get(halted)
  jax.tree.map(np.testing.assert_array_equal, before["params"], halted["params"])
  assert int(halted["bad_run"]) == 2
  with pytest.raises(ValueError, match="learning_rate=nan must be a finite number > 0"):
    experiment.validate_config(_config(learning_rate=float("nan")), 2, run.mesh)


def test_optimizer_state_holds_no_frozen_leaves(engine):
  run, steps, state = engine
  labels = steps.ctx.labels
  n_trainable = sum(np.size(x) for x, l in zip(jax.tree.leaves(state["params"]),
                                                jax.tree.leaves(labels)) if l == "trainable")
  n_frozen = sum(np.size(x) for x, l in zip(jax.tree.leaves(state["params"]),
                                             jax.tree.leaves(labels)) if l == "frozen")
  assert n_frozen > 0
  n_opt = sum(np.size(x) for x in jax.tree.leaves(state["opt_state"]))
  assert n_opt <= 2 * n_trainable + 100  # Adam mu and nu for trainable leaves, a few counters


def test_selection_in_compiled_step_equals_numpy(engine):
  run, steps, state = engine
  ctx = steps.ctx
  candidates = jax.device_get(_candidates(run, 5))
  flat = mtu.flatten_candidates(candidates)
  mse = state["regression_mse"]
  # The demo suite has a multiple-choice task beside the others: the step scores them in two
  # forwards (mtu.score_groups); the numpy reference reads one forward over every candidate.
  assert len(mtu.score_groups(ctx.task_info)) == 2
  idx, entropy, max_entropy, mse = jax.jit(
      lambda p, c, f: train.select(ctx, p, c, f, 5, jax.random.key(0), mse))(
          state["params"], candidates, flat)
  outputs = jax.device_get(run.model.apply({"params": state["params"]}, flat, deterministic=True))
  h, h_max = (np.asarray(x, np.float64) for x in mtu.uncertainty(outputs, flat, ctx.task_info))
  task = np.asarray(flat["task_id"])
  regression = np.array([t == "regression" for t in ctx.task_info.types])[task]
  log_var = np.asarray(outputs["regression_log_var"], np.float64)
  mean_lv = {t: log_var[task == t].mean() for t in np.unique(task)}
  calibrated = np.asarray(mse)[task] * np.exp(log_var - np.array([mean_lv[t] for t in task]))
  h = np.where(regression, np.minimum(calibrated, 1.0), h)
  h_max = np.where(regression, 1.0, h_max)
  # The split forward's uncertainties equal the single forward's, candidate by candidate.
  np.testing.assert_allclose(np.asarray(entropy), h, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(max_entropy), h_max, rtol=1e-6)
  mean_h = np.array([h[task == t].mean() for t in range(ctx.num_tasks)])
  scores = h / (mean_h.max() * h_max)  # the paper's U(x) = H / (H_hat * H'_t)
  chosen = np.asarray(idx)
  assert len(set(chosen.tolist())) == ctx.batch_size
  # The top b of the numpy scores, up to float32-vs-float64 rounding among near-ties at the cut.
  threshold = np.sort(scores)[::-1][ctx.batch_size - 1]
  tol = 1e-5
  assert np.all(scores[chosen] >= threshold - tol)
  assert set(np.flatnonzero(scores > threshold + tol)) <= set(chosen.tolist())


def test_score_groups_encode_padding_choice_rows_only_for_multiple_choice_tasks():
  info = mtu.TaskInfo(("classification", "multiple_choice", "regression", "span"),
                           (3, 2, 1, 1))
  other, mc = mtu.score_groups(info)
  assert other == mtu.ScoreGroup((0, 2, 3), 1, ("classification", "regression", "span"))
  assert mc == mtu.ScoreGroup((1,), None, ("multiple_choice",))
  no_mc = mtu.TaskInfo(("classification", "span"), (3, 1))
  assert mtu.score_groups(no_mc) == (mtu.ScoreGroup((0, 1)),)
  only_mc = mtu.TaskInfo(("multiple_choice",), (4,))
  assert mtu.score_groups(only_mc) == (mtu.ScoreGroup((0,)),)


def test_mixed_batch_loss_is_mean_of_per_task_means():
  rng = np.random.default_rng(0)
  task = rng.integers(0, 5, size=40)
  task[task == 3] = 1  # task 3 absent: it must not count
  loss = rng.random(40).astype(np.float32)
  weight = np.ones(40, np.float32)
  weight[-3:] = 0  # padding rows
  w = np.asarray(update.example_weights(jnp.asarray(task), jnp.asarray(weight), 5))
  present = [t for t in range(5) if np.any((task == t) & (weight > 0))]
  expected = np.mean([loss[(task == t) & (weight > 0)].mean() for t in present])
  np.testing.assert_allclose(np.sum(w * loss), expected, rtol=1e-6)
  # loss_weighting="example_mean": the mean over the real examples, each task weighted by its rows.
  w = np.asarray(update.example_weights(jnp.asarray(task), jnp.asarray(weight), 5, "example_mean"))
  np.testing.assert_allclose(np.sum(w * loss), loss[weight > 0].mean(), rtol=1e-6)
  assert np.all(w[weight == 0] == 0)


def test_regression_loss_scale_weights_only_the_regression_tasks():
  # config.regression_loss_scale=0.5: the regression task's examples count half (the Gaussian
  # NLL at unit variance), every other weight as without the option, which stays bit-identical.
  task = jnp.asarray([0, 0, 1, 1, 1, 2])
  weight = jnp.ones(6, jnp.float32)
  tasks = [TaskSpec("glue/rte", CLASSIFICATION, 2), TaskSpec("glue/stsb", REGRESSION),
           TaskSpec("wnut17", TAGGING, 13)]  # what model.tasks holds
  scale = experiment.task_loss_scale(ml_collections.ConfigDict({"regression_loss_scale": 0.5}),
                                     tasks)
  assert scale == (1.0, 0.5, 1.0)
  assert experiment.task_loss_scale(ml_collections.ConfigDict({"regression_loss_scale": 1.0}),
                                    tasks) is None
  plain = np.asarray(update.example_weights(task, weight, 3))
  scaled = np.asarray(update.example_weights(task, weight, 3, "task_mean", scale))
  np.testing.assert_array_equal(scaled, plain * np.asarray([1, 1, .5, .5, .5, 1], np.float32))
  np.testing.assert_array_equal(update.example_weights(task, weight, 3, "task_mean", None), plain)


def test_bad_configs_fail_before_compilation(tmp_path):
  with pytest.raises(ValueError, match="frozen_layers"):
    experiment.build_run(_config(frozen_layers=(0, 7)), tmp_path)
  with pytest.raises(ValueError, match="sampler"):
    experiment.build_run(_config(sampler="most_confident"), tmp_path)
  with pytest.raises(ValueError, match="batch_size=6 is not divisible by the 4"):
    sharding.check_divisible(6, _fake_mesh(4), "config.batch_size")


def _fake_mesh(n):
  class FakeMesh:
    shape = {"data": n, "model": 1}
  return FakeMesh()


def _regression_share(tmp_path, targets: str, steps: int = 40) -> float:
  """Share of selected examples that come from the regression task over the last half of a run
  whose regression targets are 'constant' (perfectly predictable) or 'noise' (unlearnable)."""
  config = _tiny_config(tasks=("demo/sentiment", "demo/similarity"), total_steps=steps,
                   learning_rate=1e-3, warmup_fraction=0.0)
  run = experiment.build_run(config, tmp_path)
  target = run.train_splits[1].arrays["target"]
  target[:] = 0.0 if targets == "constant" else np.random.default_rng(0).normal(0, 1, target.shape)
  state, compiled = train.compile_run(run)
  state = jax.device_put(state, compiled.shardings)
  counts = []
  for step in range(steps):
    state, metrics = compiled.p_train(state, _candidates(run, step), None)
    counts.append(metrics["task_count"])
  late = np.sum(jax.device_get(counts[steps // 2:]), axis=0)
  return float(late[1] / late.sum())


@pytest.mark.research
def test_regression_task_made_harder_is_selected_more(tmp_path):
  # MT-U scores a regression task by its running candidate MSE as a fraction of the prior variance
  # (mtu.calibrated_regression_uncertainty): predictable targets sink towards 0 and are left
  # alone; unlearnable ones stay at 1 and compete with the classifier's normalised entropy.
  easy = _regression_share(tmp_path / "easy", "constant")
  hard = _regression_share(tmp_path / "hard", "noise")
  print(f"regression share: easy {easy:.3f}, hard {hard:.3f}")
  assert hard > easy + 0.3, (easy, hard)


