"""camtl-experiment: the run plan, the summary of finished arms, and a real resumable run."""
import json
import subprocess
import sys

import pytest

from camtl_jax import comparison
from camtl_jax.configs import glue5_minilm


def test_the_glue5_plan_runs_the_main_comparison_first_with_an_equal_single_task_budget():
  runs = comparison.planned_runs("glue5_minilm", (0, 1), total_steps=100)
  arms = [r.arm for r in runs]
  assert arms[:7] == ["camtl_mtu", "mtl"] + ["single_task"] * 5
  assert [(r.arm, r.seed) for r in runs[7:14]] == [("camtl_mtu", 1), ("mtl", 1)] + [
      ("single_task", 1)] * 5  # every arm of the main comparison over the same seeds
  assert [r.arm for r in runs[14:]] == ["attention", "adapter", "layernorm"]
  assert {r.arm for r in runs} == set(glue5_minilm.ARMS)
  single = [r for r in runs if r.arm == "single_task"]
  assert all(r.overrides == ("--config.total_steps=20",) for r in single)  # 100 steps / 5 tasks
  assert len({r.folder for r in runs}) == len(runs)  # every run its own workdir
  assert single[0].folder == "single_task/glue_rte/seed0"


def test_an_experiment_config_without_arms_is_refused():
  with pytest.raises(ValueError, match="defines no experiment"):
    comparison.planned_runs("demo", (0,))


def _fake_result(workdir, results, used, seconds=10.0):
  workdir.mkdir(parents=True)
  (workdir / "results.json").write_text(json.dumps(
      {"step": 5, "score": 0.0, "results": results, "data_used": used}))
  (workdir / "wall_seconds.json").write_text(json.dumps({"seconds": seconds}))


def test_the_summary_averages_seeds_keeps_the_spread_and_merges_single_task_runs(tmp_path):
  runs = [comparison.ArmRun("mtl", 0, "glue5_minilm:mtl"),
          comparison.ArmRun("mtl", 1, "glue5_minilm:mtl"),
          comparison.ArmRun("single_task", 0, "glue5_minilm:single_task:glue/rte"),
          comparison.ArmRun("single_task", 0, "glue5_minilm:single_task:glue/cola"),
          comparison.ArmRun("camtl_mtu", 0, "glue5_minilm:camtl_mtu")]
  both = {"glue/rte": {"accuracy": 0.6}, "glue/cola": {"mcc": 0.2}}
  _fake_result(tmp_path / runs[0].folder, both, {"glue/rte": 0.5, "glue/cola": 0.1, "overall": 0.2})
  _fake_result(tmp_path / runs[1].folder, {"glue/rte": {"accuracy": 0.7}, "glue/cola": {"mcc": 0.4}},
               {"glue/rte": 0.5, "glue/cola": 0.3, "overall": 0.4})
  _fake_result(tmp_path / runs[2].folder, {"glue/rte": {"accuracy": 0.5}},
               {"glue/rte": 0.25, "overall": 0.25}, seconds=3.0)
  _fake_result(tmp_path / runs[3].folder, {"glue/cola": {"mcc": 0.1}},
               {"glue/cola": 0.05, "overall": 0.05}, seconds=4.0)
  summary = comparison.summarise(tmp_path, runs, "glue5_minilm", "camtl-experiment ...")
  mtl = summary["arms"]["mtl"]
  assert mtl["results"]["glue/rte"]["accuracy"] == pytest.approx(0.65)
  assert mtl["main_metric_spread"]["glue/cola"] == {"min": 0.2, "max": 0.4}
  assert mtl["mean"] == pytest.approx((0.65 + 0.3) / 2)
  assert mtl["data_used"] == {"glue/rte": 0.5, "glue/cola": pytest.approx(0.2),
                              "overall": pytest.approx(0.3)}
  assert mtl["seeds"] == [0, 1] and mtl["wall_seconds"] == 20.0
  single = summary["arms"]["single_task"]
  assert single["results"] == {"glue/rte": {"accuracy": 0.5}, "glue/cola": {"mcc": 0.1}}
  assert single["wall_seconds"] == 7.0
  assert summary["unfinished"] == ["camtl_mtu/seed0"] and "camtl_mtu" not in summary["arms"]
  table = comparison.results_markdown(summary)
  assert "| mtl | 2 | 0.650 [0.600, 0.700] | 0.300 [0.200, 0.400] | 0.4750 | 30.0% | 20 |" in table
  assert "Unfinished runs: camtl_mtu/seed0" in table
  comparison.write_outputs(tmp_path, summary)
  assert (tmp_path / "results.png").stat().st_size > 0


@pytest.mark.slow
def test_an_experiment_trains_its_arms_and_a_rerun_skips_the_finished_ones(tmp_path, shared_data):
  command = [sys.executable, "-m", "camtl_jax.cli.experiment", "--experiment", "glue5_minilm",
             "--out", str(tmp_path), "--seeds", "0", "--total_steps", "5",
             "--arms", "single_task", f"--config.data_dir={shared_data}",
             "--config.encoder_layers=1", "--config.max_eval_examples=8",
             "--config.max_length=32"]
  first = subprocess.run(command, capture_output=True, text=True, check=False)
  assert first.returncode == 0, first.stderr[-2000:]
  summary = json.loads((tmp_path / "results.json").read_text())
  assert set(summary["arms"]["single_task"]["results"]) == set(glue5_minilm.GLUE5)
  assert (tmp_path / "results.md").exists() and (tmp_path / "results.png").exists()
  again = subprocess.run(command, capture_output=True, text=True, check=False)
  assert again.returncode == 0, again.stderr[-2000:]
  assert again.stderr.count("finished earlier, skipped") == 5
  assert json.loads((tmp_path / "results.json").read_text())["arms"] == summary["arms"]


def test_a_bad_seed_list_is_one_line(capsys):
  from camtl_jax.cli import experiment  # pylint: disable=import-outside-toplevel
  assert experiment.main(["--experiment", "glue5_minilm", "--out", "/nonexistent/x",
                          "--seeds", "a,b"]) == 2
  assert "--seeds 'a,b': give integers" in capsys.readouterr().err


def test_an_arm_that_stops_on_a_user_error_shows_that_error(tmp_path):
  """The arm's own one-line error reaches the experiment's message, not only its log."""
  command = [sys.executable, "-m", "camtl_jax.cli.experiment", "--experiment", "glue5_minilm",
             "--out", str(tmp_path), "--seeds", "0", "--arms", "mtl",
             f"--config.data_dir={tmp_path / 'no_data'}"]
  stopped = subprocess.run(command, capture_output=True, text=True, check=False)
  assert stopped.returncode == 2, stopped.stderr[-2000:]
  lines = stopped.stderr.strip().splitlines()
  assert "Traceback" not in stopped.stderr
  assert lines[-1].startswith("camtl-experiment: error: mtl/seed0 stopped (exit 2): "), lines[-1]
  assert "no_data/glue/RTE/train.tsv: missing file for glue/rte split 'train'" in lines[-1]
