"""Checkpoints move between device layouts (integration: subprocesses with 8 fake CPU devices).

A micro run checkpointed at step 2 of 4 on 8 devices (data parallel, and FSDP) resumes on 1 device
and on a 2 x 4 ('data', 'model') mesh; a 1-device checkpoint resumes on 8. The restored state
carries the new layout's shardings, the continued run trains on the same examples, and predict
works on every workdir.

The continued runs agree with the uninterrupted run within RTOL/ATOL (float32 sums split 8, 2 or
1 ways): dropout masks are keyed by each example's (or packed row's) place in the step's batch
(models.bert.RowDropout), not by the update chunk, whose rows are rounded to the device count. With
chunk-keyed masks (before) the step-4 parameters differed by up to 6.2e-4, the size of two steps
(docs/results/checkpoint_topology.md).

FSDP splits only leaves of at least sharding.FSDP_MIN_SIZE elements; the micro model (hidden 32)
has none, so the FSDP runs lower that floor to 1 to split every divisible leaf."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from camtl_jax import checkpoint

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
# Float tolerance between layouts: float32 sums over 8 examples split 8, 2 or 1 ways.
RTOL, ATOL = 1e-4, 1e-5
KERNEL = ("params", "encoder", "layer_1", "intermediate", "kernel")
# Two of the demo tasks (one classification, one regression) keep the number of programs small.
BASE = ("--config.batch_size=8", "--config.total_steps=4", "--config.checkpoint_every=2",
        "--config.eval_every=4", "--config.tasks=('demo/sentiment','demo/similarity')")

# Runs micro jobs in one process (its device count is the process's): train (optionally from a
# copy of another workdir cut back to step 2), then report the restored state's layout and a
# prediction.
DRIVER = r"""
import json, shutil, sys
from pathlib import Path
import jax
from camtl_jax import checkpoint, experiment, predict, sharding, train, workdir
from camtl_jax.cli import common

out = []
for job in json.loads(sys.argv[1]):
  sharding.FSDP_MIN_SIZE = 1 if job["fsdp"] else 2 ** 18
  path = Path(job["workdir"])
  if job.get("resume_from"):
    shutil.copytree(job["resume_from"], path)
    for step in (p for p in (path / "checkpoints").iterdir() if p.name.isdigit()):
      if int(step.name) > 2:
        shutil.rmtree(step)
  config = common.load_config("micro", job["overrides"])
  train.train_and_evaluate(config, str(path))
  run = experiment.build_run(config, path)
  manager = checkpoint.make_manager(path, async_save=False, read_only=True)
  fresh = train.init_state(run)[0]  # the shapes; the shardings are this process's mesh's
  shardings = train.state_shardings(run.mesh, config.mesh.fsdp, fresh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), fresh,
                          shardings)
  state, _ = checkpoint.restore_latest(manager, abstract, train.run_fingerprint(run), path)
  leaf = state
  for key in job["leaf"]:
    leaf = leaf[key]
  trained = workdir.load(path)
  task = trained.tasks[0]
  records = predict.predict(trained, task.name, [predict.text_example(task, "a great movie")])
  out.append({"workdir": str(path), "devices": jax.device_count(),
              "mesh": dict(run.mesh.shape), "step": int(state["step"]),
              "leaf_spec": [str(a) for a in leaf.sharding.spec],
              "leaf_devices": len(leaf.sharding.device_set),
              "leaf_shard_shape": list(leaf.addressable_shards[0].data.shape),
              "prediction": records[0]})
print("RESULT " + json.dumps(out))
"""


def _run_jobs(devices: int, jobs: list[dict]) -> dict[str, dict]:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(jobs)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=3600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  (line,) = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  return {Path(r["workdir"]).name: r for r in json.loads(line[len("RESULT "):])}


def _job(root: Path, name: str, fsdp: bool = False, model: int = 1, resume_from: str = "") -> dict:
  # One compilation cache for all runs: the runs on one layout compile each program once.
  overrides = list(BASE) + [f"--config.mesh.fsdp={fsdp}", f"--config.mesh.model={model}",
                            f"--config.compile_cache_dir={root / 'compile_cache'}"]
  return {"workdir": str(root / name), "overrides": [o[len("--config."):] for o in overrides],
          "fsdp": fsdp, "leaf": list(KERNEL),
          "resume_from": str(root / resume_from) if resume_from else ""}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("topology")
  results = {}
  results.update(_run_jobs(8, [_job(root, "dp8"), _job(root, "fsdp8", fsdp=True)]))
  results.update(_run_jobs(1, [_job(root, "one1"),
                               _job(root, "dp8_to_1", resume_from="dp8"),
                               _job(root, "fsdp8_to_1", fsdp=True, resume_from="fsdp8")]))
  results.update(_run_jobs(8, [_job(root, "dp8_to_2x4", model=4, resume_from="dp8"),
                               _job(root, "fsdp8_to_2x4", fsdp=True, model=4,
                                    resume_from="fsdp8"),
                               _job(root, "one1_to_8", resume_from="one1")]))
  return root, results


def _state(root: Path, name: str, step: int = 4):
  loaded_step, state = checkpoint.load_state(root / name, step)  # onto this process's device
  assert loaded_step == step
  return state


@pytest.mark.parametrize("resumed, uninterrupted", [
    ("dp8_to_1", "dp8"), ("dp8_to_2x4", "dp8"), ("fsdp8_to_1", "fsdp8"),
    ("fsdp8_to_2x4", "fsdp8"), ("one1_to_8", "one1")])
def test_resumed_run_agrees_with_the_uninterrupted_run(runs, resumed, uninterrupted):
  root, results = runs
  assert results[resumed]["step"] == 4
  a, b = _state(root, resumed), _state(root, uninterrupted)
  # Resumed from step 2, not trained from scratch: its step-2 checkpoint is the original's.
  for x, y in zip(jax.tree.leaves(_state(root, resumed, 2)),
                  jax.tree.leaves(_state(root, uninterrupted, 2))):
    np.testing.assert_array_equal(x, y)
  assert int(a["step"]) == int(b["step"]) == 4
  np.testing.assert_array_equal(a["used"], b["used"])  # the same examples were trained on
  paths = jax.tree_util.tree_flatten_with_path(a)[0]
  for (path, x), y in zip(paths, jax.tree.leaves(b)):
    if np.issubdtype(np.asarray(x).dtype, np.floating):
      np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=jax.tree_util.keystr(path))
  moved = max(float(np.max(np.abs(x - y))) for x, y in
              zip(jax.tree.leaves(a["params"]),
                  jax.tree.leaves(_state(root, resumed, 2)["params"])))
  assert moved > 10 * ATOL  # steps 3 and 4 changed the parameters: the comparison can fail


def test_uninterrupted_runs_on_one_and_eight_devices_agree(runs):
  """The whole run (train_and_evaluate, checkpoints, the loop's batches) on 1 device and on 8."""
  root, _ = runs
  a, b = _state(root, "one1"), _state(root, "dp8")
  np.testing.assert_array_equal(a["used"], b["used"])
  for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
    np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL)
  losses = [[json.loads(line)["loss"] for line in (root / name / "history.jsonl").read_text()
             .splitlines() if '"loss"' in line] for name in ("one1", "dp8")]
  assert len(losses[0]) >= 2
  np.testing.assert_allclose(losses[0], losses[1], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name, devices, mesh, spec, shard_rows", [
    ("dp8", 8, {"data": 8, "model": 1}, [], 32),
    ("fsdp8", 8, {"data": 8, "model": 1}, ["data"], None),
    ("dp8_to_1", 1, {"data": 1, "model": 1}, [], 32),
    ("fsdp8_to_1", 1, {"data": 1, "model": 1}, [], 32),
    ("dp8_to_2x4", 8, {"data": 2, "model": 4}, [], 32),
    ("fsdp8_to_2x4", 8, {"data": 2, "model": 4}, ["data"], None),
    ("one1_to_8", 8, {"data": 8, "model": 1}, [], 32)])
def test_restore_lays_the_state_out_for_the_new_mesh(runs, name, devices, mesh, spec, shard_rows):
  r = runs[1][name]
  assert (r["devices"], r["mesh"], r["leaf_devices"]) == (devices, mesh, devices)
  # FSDP splits the kernel's largest divisible axis over 'data' (the 2 x 4 mesh: 2 ways).
  assert [s for s in r["leaf_spec"] if s != "None"] == spec
  full = r["leaf_shard_shape"] if not spec else None
  if shard_rows is not None:
    assert full[0] == shard_rows  # replicated: every device holds the whole [32, 64] kernel
  else:
    assert np.prod(r["leaf_shard_shape"]) * mesh["data"] == 32 * 64


def test_predict_works_on_every_layout(runs):
  _, results = runs
  assert len(results) == 8
  for name, r in results.items():
    p = r["prediction"]["probabilities"]
    assert set(p) == {"0", "1"} and abs(sum(p.values()) - 1) < 1e-5, name
    assert r["prediction"]["label"] == max(p, key=p.get)


def test_continued_run_trains_on_the_same_examples(runs):
  root, _ = runs
  for resumed, original in (("dp8_to_1", "dp8"), ("dp8_to_2x4", "dp8"), ("fsdp8_to_1", "fsdp8"),
                            ("fsdp8_to_2x4", "fsdp8"), ("one1_to_8", "one1")):
    a, b = _state(root, resumed), _state(root, original)
    assert int(a["step"]) == int(b["step"]) == 4
    np.testing.assert_array_equal(a["used"], b["used"])
