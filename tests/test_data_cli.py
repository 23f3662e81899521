"""Tests of the `camtl-data` command (camtl_jax/tasks/cli.py)."""
import os
import subprocess
import sys

import pytest

from camtl_jax.cli import data as cli
from camtl_jax.tasks import demo


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  return demo.write_demo_data(tmp_path_factory.mktemp("demo"))


def test_list(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert out.splitlines()[0].split() == ["name", "type", "labels", "metrics"]
  assert any(line.split()[:3] == ["glue/mrpc", "classification", "2"] for line in out.splitlines())
  for name in demo.DEMO_TASK_NAMES:
    assert name in out


@pytest.mark.integration
def test_console_script_runs():
  # The installed entry point if present, else the module: both go through cli.main.
  exe = os.path.join(os.path.dirname(sys.executable), "camtl-data")
  cmd = ([exe, "list"] if os.path.exists(exe)
         else [sys.executable, "-m", "camtl_jax.cli.data", "list"])
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "demo/sentiment" in result.stdout and "wnut17" in result.stdout


def test_demo_command(tmp_path, capsys):
  assert cli.main(["demo", str(tmp_path / "d"), "--seed", "3"]) == 0
  assert "demo/span" in capsys.readouterr().out
  assert (tmp_path / "d" / "span" / "train.json").is_file()


def test_stats_on_demo(demo_dir, minilm_path, capsys):
  argv = ["stats", "demo/choice", "--data-dir", demo_dir, "--tokenizer", str(minilm_path),
          "--max-length", "16"]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "train: 2000 examples" in out and "test: 200 examples" in out
  assert "labels: 0 " in out and "unlabelled" in out  # test has no labels
  assert "tokens p50" in out and "p99" in out and "truncated at max length 16" in out
  assert cli.main(argv[:-1] + ["512"]) == 0
  assert " 0 of 2000 (0.0%) truncated" in capsys.readouterr().out


def test_stats_without_tokenizer_and_missing_split(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(cli, "_default_tokenizer", lambda: None)
  demo.write_demo_data(tmp_path)
  os.remove(tmp_path / "similarity" / "test.tsv")
  assert cli.main(["stats", "demo/similarity", "--data-dir", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "token lengths skipped" in out and "test: not found" in out
  assert "labels: mean" in out


def test_stats_bad_data_and_unknown_task(tmp_path, capsys):
  demo.write_demo_data(tmp_path)
  with open(tmp_path / "sentiment" / "dev.tsv", "a", encoding="utf-8") as f:
    f.write("a sentence\tmaybe\n")
  assert cli.main(["stats", "demo/sentiment", "--data-dir", str(tmp_path)]) == 1
  assert "camtl-data: error: dev: " in capsys.readouterr().err
  assert cli.main(["stats", "glue/mrcp", "--data-dir", str(tmp_path)]) == 2
  assert "glue/mrpc" in capsys.readouterr().err  # close-match hint


def test_stats_on_real_mrpc(shared_data, capsys):
  assert cli.main(["stats", "glue/mrpc", "--data-dir", str(shared_data)]) == 0
  out = capsys.readouterr().out
  assert "train: 3668 examples" in out and "dev: 408 examples" in out
