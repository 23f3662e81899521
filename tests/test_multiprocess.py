"""Two JAX processes on localhost (4 fake CPU devices each, gloo collectives) train the micro config
with a checkpoint and a resume, and match one process on 8 devices with the same global batch.

Each process builds only its half of every candidate set (input_pipeline.CandidateLoader's host
slice) and sharding.global_batch assembles the global arrays; evaluation gathers predictions from
both processes; Orbax writes one checkpoint from both.

Tolerance. The same program runs in both setups; only the order of the floating-point sums across
devices differs (gloo's all-reduce between the processes vs XLA's in-process one), ~1e-7 relative
in the gradients. Adam divides each gradient entry by its own magnitude, so in the first steps an
entry whose true value is near 0 can move by up to the learning rate (3e-4) either way. Measured on
this task mix: losses equal to 6 digits, parameters within 2e-6. On other mixes of the demo tasks
we measured loss differences up to 2e-4 relative and parameter differences up to 4e-4 (about one
learning-rate step), so we assert rtol 1e-3 on the logged losses and atol 2e-3 (a few learning-
rate steps) on the final parameters: a wrong batch slice, a missing gradient all-reduce or a
mis-restored checkpoint change the losses by far more (the step-4 loss moves by ~10% per step).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from camtl_jax import checkpoint
from tests.conftest import shared_compile_cache

REPO = Path(__file__).resolve().parents[1]
# Quick: the micro config (b = 8: one example per device) without its multiple-choice task (K=1
# halves the encoder rows), one small eval batch per task, evaluation only at the end of each run.
TASKS = ("demo/sentiment", "demo/similarity", "demo/entities", "demo/span")
# The default MT-U (calibrated scores, floor and cap). Its selection compares scores after
# mtu.quantise_scores, so the layouts' float noise cannot reorder near-ties at the top-b cut
# (an earlier version's 2x4- and 1x8-device runs differed from step 6 on, loss 1.777 vs 1.819;
# with today's code this test passed with and without the rounding).
OVERRIDES = (f"--config.tasks={TASKS!r}", "--config.eval_every=100",
             "--config.max_eval_examples=8", "--config.eval_batch_size=8")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_PLATFORMS="cpu")


def _cmd(workdir, steps: int) -> list[str]:
  return [sys.executable, "-m", "camtl_jax.main", "--config", "micro",
          "--workdir", str(workdir), shared_compile_cache(), f"--config.total_steps={steps}",
          "--config.batch_size=8", *OVERRIDES]


def _two_processes(workdir, steps: int, timeout: int = 600, extra: tuple[str, ...] = (),
                   while_running=None, status: int = 0) -> list[str]:
  """Runs the two processes to their end (while_running(procs) is called once both started);
  asserts both exit with `status` and returns their logs."""
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(workdir, steps) + [*extra, "--jax_distributed",
                              f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                              f"--process_id={i}"],
      cwd=REPO, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  try:
    if while_running is not None:
      while_running(procs)
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == status, f"process {i}: rc {p.returncode}\n{log[-4000:]}"
  return logs


def _one_process(workdir, steps: int, timeout: int = 600) -> list[str]:
  proc = subprocess.run(_cmd(workdir, steps), cwd=REPO, env=_env(8), capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return [proc.stderr]


def _losses(workdir) -> list[tuple[int, float]]:
  lines = (Path(workdir) / "history.jsonl").read_text().splitlines()
  return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


@pytest.mark.integration
def test_two_processes_resumed_equal_one_process_on_eight_devices(tmp_path):
  # The two processes train the 4 steps, lose their step-4 checkpoint and rerun: they resume at
  # step 2 and train steps 3 and 4 again (the same programs, loaded from the compilation cache).
  # One process on 8 devices trains the 4 steps uninterrupted.
  two, one = tmp_path / "two", tmp_path / "one"
  _two_processes(two, 4)
  shutil.rmtree(two / "checkpoints" / "4")
  assert sorted(p.name for p in (two / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
  logs = _two_processes(two, 4)
  assert all("restored checkpoint 2" in log for log in logs), [log[-2000:] for log in logs]
  (one_log,) = _one_process(one, 4)
  assert "restored checkpoint" not in one_log
  # The resumed run replaced the history after step 2: step 4's loss is the rerun's.
  losses_two, losses_one = _losses(two), _losses(one)
  assert [s for s, _ in losses_two] == [s for s, _ in losses_one] == [2, 4]  # logged every 2
  np.testing.assert_allclose([l for _, l in losses_two], [l for _, l in losses_one], rtol=1e-3)
  step_two, state_two = checkpoint.load_state(two)
  step_one, state_one = checkpoint.load_state(one)
  assert step_two == step_one == 4
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-3), state_two["params"],
               state_one["params"])
  results = json.loads((two / "results.json").read_text())
  assert set(results["results"]) == set(TASKS)


def _wait_for_logged_step(workdir: Path, procs, timeout: float = 600) -> None:
  """Returns once history.jsonl holds a train record (both processes are in the loop)."""
  deadline = time.monotonic() + timeout
  history = workdir / "history.jsonl"
  while time.monotonic() < deadline:
    if history.exists() and any('"loss"' in line for line in history.read_text().splitlines()):
      return
    if any(p.poll() is not None for p in procs):
      return  # one died early: the caller's returncode assertions show its log
    time.sleep(0.5)
  raise AssertionError(f"no train record in {history} after {timeout} s")


@pytest.mark.integration
@pytest.mark.parametrize("signalled", [0, 1])
def test_sigterm_to_one_process_stops_both_at_one_saved_step(tmp_path, signalled):
  # A preemption notice reaches one host of a pod; every process must save the same step and
  # exit 143 (Orbax's preemption sync point), never train on or die without a checkpoint.
  workdir = tmp_path / "run"

  def sigterm_one(procs):
    _wait_for_logged_step(workdir, procs)
    procs[signalled].send_signal(signal.SIGTERM)
  # One classification task: the signal handling is under test, not the task mix.
  logs = _two_processes(workdir, 400, timeout=300,
                        extra=("--config.tasks=('demo/sentiment',)", "--config.log_every=1",
                               "--config.checkpoint_every=1000"),
                        while_running=sigterm_one, status=143)
  stopped = [re.findall(r"stopped at step (\d+); rerun", log) for log in logs]
  assert stopped[0] and stopped[0] == stopped[1], [log[-2000:] for log in logs]
  step = int(stopped[0][0])
  assert 0 < step < 400
  assert checkpoint.load_state(workdir)[0] == step
