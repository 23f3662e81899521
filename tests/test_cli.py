"""The commands as a user meets them: --help is fast and lists the flags (a process each:
integration), a user's mistake is one line `camtl-X: error: ...` with exit status 2 (no
traceback), configs load from any folder (in process)."""
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _run(module: str, *args: str, cwd=None, timeout=120) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _module(script: str) -> str:
  return SCRIPTS[script].partition(":")[0]


def _main(module: str, *args: str, capsys) -> subprocess.CompletedProcess:
  """The command's main(argv) run in this process, as a CompletedProcess (stdout, stderr)."""
  import importlib  # pylint: disable=import-outside-toplevel
  capsys.readouterr()
  code = importlib.import_module(module).main(list(args))
  out, err = capsys.readouterr()
  return subprocess.CompletedProcess(args, code, out, err)


@pytest.mark.integration
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_exits_0_and_lists_the_flags_within_3_seconds(script, tmp_path):
  start = time.perf_counter()
  proc = _run(_module(script), "--help", cwd=tmp_path)
  seconds = time.perf_counter() - start
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("usage:") and "--verbose" in proc.stdout
  assert seconds < 3.0, f"{script} --help took {seconds:.1f} s"


def _one_line_error(proc: subprocess.CompletedProcess, prog: str) -> str:
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 2, proc.stderr
  assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
  assert "Traceback" not in proc.stderr
  return lines[0]


@pytest.mark.parametrize("args,expected", [
    (("--config", "tiny", "--config.tasks=('glue/rtee',)"), "unknown task 'glue/rtee'"),
    (("--config", "tiny", "--config.batchsize=4"),
     "unknown config field config.batchsize (did you mean config.batch_size?)"),
    (("--config", "config_config"), "unknown config 'config_config'"),
    (("--config", "/nonexistent/config.py"), "config file /nonexistent/config.py not found"),
    (("--config", "tiny", "--config.frozen_layers=(0, 7)"), "outside the encoder's 2 layers"),
    (("--config", "tiny", "--config.sampler=most_confident"), "unknown sampler"),
    (("--config", "tiny", "--config.learning_rate=-1.0"), "must be a finite number > 0"),
    (("--config", "tiny", "--config.batch_size=-3"), "config.batch_size=-3 must be >= 1"),
    (("--config", "tiny", "--config.grad_accum_steps=0"), "config.grad_accum_steps=0 must be >= 1"),
    (("--config", "tiny", "--config.loss_weighting=per_token"),
     "config.loss_weighting='per_token' unknown"),
    (("--config", "tiny", "--config.regression_loss_scale=0.0"),
     "config.regression_loss_scale=0.0 must be > 0"),
])
def test_training_mistakes_are_one_line_before_anything_loads(tmp_path, args, expected, capsys,
                                                              monkeypatch):
  monkeypatch.chdir(tmp_path)
  start = time.perf_counter()
  proc = _main("camtl_jax.main", *args, "--workdir", str(tmp_path / "w"), capsys=capsys)
  assert expected in _one_line_error(proc, "camtl-train")
  assert time.perf_counter() - start < 30  # no weights, no data read
  assert not (tmp_path / "w").exists()


def test_verbose_shows_the_traceback(tmp_path, capsys):
  # --verbose lets the exception through, so Python prints its traceback.
  with pytest.raises(ValueError, match="unknown task 'glue/rtee'"):
    _main("camtl_jax.main", "--config", "tiny", "--config.tasks=('glue/rtee',)",
          "--workdir", str(tmp_path / "w"), "--verbose", capsys=capsys)


def test_other_commands_report_mistakes_in_one_line(tmp_path, capsys):
  assert "does not exist" in _one_line_error(
      _main("camtl_jax.cli.predict", "--workdir", str(tmp_path / "none"), "--task", "x",
            "--text", "hi", capsys=capsys), "camtl-predict")
  assert "unknown variant" in _one_line_error(
      _main("camtl_jax.cli.bench", "--config", "bench", "--variants", "fast", capsys=capsys),
      "camtl-bench")
  assert "unknown config" in _one_line_error(
      _main("camtl_jax.cli.params", "--config", "glue_bse", capsys=capsys), "camtl-params")


def test_shipped_and_file_configs_load_from_any_folder(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  by_name = _main("camtl_jax.cli.params", "--config", "tiny", capsys=capsys)
  by_path = _main("camtl_jax.cli.params", "--config", str(REPO / "configs/tiny.py"),
                  capsys=capsys)
  assert by_name.returncode == by_path.returncode == 0, by_name.stderr + by_path.stderr
  assert by_name.stdout == by_path.stdout and "5 tasks" in by_name.stdout


def test_constants_the_commands_repeat_for_a_fast_help_equal_the_librarys():
  """cli/ modules spell out a few library constants so --help imports nothing heavy."""
  from camtl_jax import predict, train
  from camtl_jax.perf import bench
  from camtl_jax.cli import bench as cli_bench, compile_tpu, predict as cli_predict
  assert cli_bench.VARIANTS == bench.ORDER and cli_bench.OPTIONAL == bench.OPTIONAL
  assert compile_tpu.NOMINAL_ROWS_PER_TASK == train.NOMINAL_ROWS_PER_TASK
  assert cli_predict.FORMATS == predict.FORMATS and cli_predict.ON_LONG == predict.ON_LONG
