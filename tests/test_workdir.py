"""One run per workdir, and the faults around it: a refused run changes no file, trajectory changes
are refused unless allowed, a locked workdir stops a second run, SIGTERM saves and resumes, the best
step survives resumes and is the one prediction loads."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from camtl_jax import checkpoint, workdir as workdir_lib
from tests.conftest import MICRO_12_STEPS, shared_compile_cache, trained_tiny_workdir

REPO = Path(__file__).resolve().parents[1]


# The compilation-cache tests compile from an empty cache: one classification task and two steps
# (its train step compiles in 11.4 s, the five demo tasks' in 12.9 s, on 2 CPU cores).
ONE_TASK_RUN = ("--config.tasks=('demo/sentiment',)", "--config.total_steps=2",
                "--config.eval_every=2")


def _cmd(path, *overrides):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return [sys.executable, "-m", "camtl_jax.main", "--config", "micro", "--workdir", str(path),
          shared_compile_cache(), *MICRO_12_STEPS, *overrides], env


def _train(path, *overrides, timeout=600):
  cmd, env = _cmd(path, *overrides)
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _micro12(tmp_path_factory) -> Path:
  return trained_tiny_workdir(tmp_path_factory, "micro12", *MICRO_12_STEPS, config="micro")


def _snapshot(path: Path) -> dict[str, str]:
  return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def trained_copy(tmp_path_factory, tmp_path):
  """A copy of the session's 12-step micro run in a process (all five demo tasks)."""
  copy = tmp_path / "copy"
  shutil.copytree(_micro12(tmp_path_factory), copy)
  return copy


def _error_line(proc) -> str:
  lines = [line for line in proc.stderr.splitlines() if line.startswith("camtl-train: error: ")]
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
  return lines[0]


@pytest.mark.integration
def test_a_refused_run_changes_no_file_and_names_the_differing_leaves(trained_copy):
  before = _snapshot(trained_copy)
  line = _error_line(_train(trained_copy, "--config.tasks=('demo/sentiment', 'demo/span')",
                            "--config.max_length=48"))
  assert "tasks: ['demo/sentiment', 'demo/similarity'" in line and "-> ['demo/sentiment'" in line
  assert "model.max_length: 32 -> 48" in line
  assert _snapshot(trained_copy) == before
  assert workdir_lib.load(trained_copy).step in (6, 12)  # still loads


@pytest.mark.integration
def test_trajectory_changes_are_refused_unless_allowed(trained_copy):
  before = _snapshot(trained_copy)
  line = _error_line(_train(trained_copy, "--config.batch_size=8", "--config.seed=3",
                            "--config.loss_weighting=example_mean"))
  assert "batch_size: 4 -> 8" in line and "seed: 0 -> 3" in line
  assert "loss_weighting: <absent> -> 'example_mean'" in line, line
  assert "allow_resume_changes" in line and _snapshot(trained_copy) == before
  # Allowed, it trains on through the compiled step with the other loss weighting.
  allowed = _train(trained_copy, "--config.seed=3", "--config.loss_weighting=example_mean",
                   "--config.allow_resume_changes=True")
  assert allowed.returncode == 0, allowed.stderr[-3000:]
  assert "resuming with changed settings" in allowed.stderr and "seed: 0 -> 3" in allowed.stderr


@pytest.mark.integration
def test_a_second_run_on_a_locked_workdir_stops_with_a_clear_message(trained_copy):
  with workdir_lib.WorkdirLock(trained_copy):
    line = _error_line(_train(trained_copy))
  assert "another run" in line and str(os.getpid()) in line
  assert not (trained_copy / ".lock").exists()


@pytest.mark.integration
def test_sigterm_saves_the_step_and_a_rerun_resumes_bitwise(tmp_path_factory, tmp_path):
  path = tmp_path / "term"
  # Only the stop itself saves mid-run; the cache at camtl-train's default, the workdir's own.
  cmd, env = _cmd(path, "--config.checkpoint_every=1000", "--config.compile_cache_dir=workdir")
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  history = path / "history.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not (
      history.exists() and '"loss"' in history.read_text()):
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before the signal; make it longer"
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]  # saved, not finished: 128 + SIGTERM
  stopped = [line for line in err.splitlines() if "stopped at step" in line]
  assert stopped and "rerun the same command to resume" in stopped[0], err[-2000:]
  step = int(stopped[0].split("stopped at step ")[1].split(";")[0])
  assert 4 <= step < 12 and step in checkpoint.make_manager(path, read_only=True).all_steps()
  assert (path / "compile_cache").is_dir()  # camtl-train's default: the workdir's own cache
  rerun = _train(path, "--config.checkpoint_every=1000", "--config.compile_cache_dir=workdir")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  # The resumed run does not compile its train step again.
  assert "(from the persistent compilation cache)" in rerun.stderr, rerun.stderr[-3000:]
  _, resumed = checkpoint.load_state(path, 12)
  _, uninterrupted = checkpoint.load_state(_micro12(tmp_path_factory), 12)
  jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)


@pytest.mark.integration
def test_best_step_survives_a_resume_and_is_what_prediction_loads(trained_copy):
  import json
  proc = _train(trained_copy, "--config.total_steps=18", "--config.keep_checkpoints=1",
                "--config.allow_resume_changes=True")
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((trained_copy / "results.json").read_text())
  evals = {int(s): e["score"] for s, e in checkpoint.load_meta(
      trained_copy, max(checkpoint.make_manager(trained_copy, read_only=True).all_steps())
  )["evals"].items()}
  assert set(evals) == {6, 12, 18} and results["step"] == max(evals, key=evals.get)
  assert (trained_copy / "checkpoints" / str(results["step"])).is_dir()
  assert workdir_lib.select_step(trained_copy) == results["step"]
  assert workdir_lib.load(trained_copy).step == results["step"]


@pytest.mark.integration
def test_a_repeated_run_loads_its_programs_from_a_shared_compilation_cache(tmp_path):
  """With config.compile_cache_dir shared, the second run of the same config compiles nothing
  (and says so) and computes exactly what the first did."""
  cache = f"--config.compile_cache_dir={tmp_path / 'cache'}"
  first = _train(tmp_path / "a", *ONE_TASK_RUN, cache)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "compiled the train step in" in first.stderr
  assert "persistent compilation cache" not in first.stderr
  assert any((tmp_path / "cache").iterdir()) and not (tmp_path / "a" / "compile_cache").exists()
  second = _train(tmp_path / "b", *ONE_TASK_RUN, cache)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "(from the persistent compilation cache)" in second.stderr, second.stderr[-3000:]
  assert ((tmp_path / "a" / "results.json").read_text()
          == (tmp_path / "b" / "results.json").read_text())


@pytest.mark.integration
def test_an_empty_compile_cache_dir_turns_the_cache_off(tmp_path):
  run = _train(tmp_path / "run", *ONE_TASK_RUN, "--config.compile_cache_dir=")
  assert run.returncode == 0, run.stderr[-3000:]
  assert not (tmp_path / "run" / "compile_cache").exists()


# ------------------------------------------------------------------------------------------------
# Refused runs write nothing (in process, the micro config)


def test_a_data_change_seen_only_in_the_row_counts_is_refused_before_caches_are_written(
    micro_workdir, tmp_path):
  from camtl_jax import train
  from tests.conftest import micro_config
  copy = tmp_path / "copy"
  shutil.copytree(micro_workdir, copy)
  # The user's data grew by one row (the sentiment task's train file): the config is unchanged.
  with open(copy / "demo_data" / "sentiment" / "train.tsv", "a") as train_file:
    train_file.write("a fine movie .\t1\n")
  before = _snapshot(copy)
  with pytest.raises(checkpoint.WorkdirMismatch, match=r"train_rows\[0\]: 2000 -> 2001"):
    train.train_and_evaluate(micro_config(), str(copy))
  assert _snapshot(copy) == before


def test_a_run_refused_for_missing_data_leaves_no_workdir_behind(tmp_path):
  from camtl_jax import train
  from tests.conftest import micro_config
  config = micro_config(data_dir=str(tmp_path / "no_data"))
  with pytest.raises((FileNotFoundError, ValueError), match="no_data"):
    train.train_and_evaluate(config, str(tmp_path / "new" / "run"))
  assert not (tmp_path / "new" / "run").exists()
  (tmp_path / "mine").mkdir()  # a folder the user made stays
  with pytest.raises((FileNotFoundError, ValueError), match="no_data"):
    train.train_and_evaluate(config, str(tmp_path / "mine"))
  assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_an_old_config_json_is_upgraded_with_the_behaviour_it_was_trained_with(tmp_path):
  """A config.json written before newer fields existed reads back with every field of base():
  the MT-U and packing options at the values that reproduce the old run (LEGACY_VALUES), the
  others at base()'s defaults; fields it holds are kept."""
  from camtl_jax.configs import common
  old = common.base().to_dict()
  for key in ("mtu_uncertainty", "mtu_min_share", "mtu_max_share", "pack_candidates",
              "pack_update", "loss_weighting", "task_specs", "bench_encoder"):
    del old[key]
  del old["model"]["attention_blocks"]
  old["batch_size"] = 7
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(__import__("json").dumps(old))
  config = workdir_lib.load_config(tmp_path)
  assert (config.mtu_uncertainty, config.mtu_min_share, config.mtu_max_share,
          config.pack_candidates, config.pack_update) == ("normalised", 0.0, 1.0, False, False)
  assert (config.loss_weighting, tuple(config.task_specs), config.bench_encoder) == (
      "task_mean", (), "")
  assert config.model.attention_blocks == 0 and config.batch_size == 7
  assert set(config.to_dict()) == set(common.base().to_dict())
