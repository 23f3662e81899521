"""camtl-experiment: the run plan, the summary of finished arms, and a real resumable run."""
import json
import subprocess
import sys

import pytest

from camtl_jax import comparison
from camtl_jax.configs import glue5_minilm


FLOPS = {"glue5_minilm:camtl_mtu": 3.0e9, "glue5_minilm:mtl": 1.0e9,
         "glue5_minilm:layernorm": 1.2e9}


def test_the_glue5_plan_puts_the_new_arms_first_with_an_equal_single_task_budget():
  runs = comparison.planned_runs("glue5_minilm", (0, 1), total_steps=100,
                                 step_flops=FLOPS.__getitem__)
  seed0 = [r.arm for r in runs if r.seed == 0]
  assert seed0[:8] == (["camtl_mtu_paper"] + ["hf_single_task"] * 5
                       + ["mtl_matched", "camtl_matched"])
  assert [r.arm for r in runs[:14]] == seed0[:14]  # seed 0 of every main arm before seed 1
  assert {r.arm for r in runs} == (set(glue5_minilm.ARMS) - {"single_task"}) | {
      "single_task", "hf_single_task", "mtl_matched", "camtl_matched"}
  assert [r.arm for r in runs[-8:-5]] == ["attention", "adapter", "layernorm"]
  assert [(r.arm, r.seed) for r in runs[-5:]] == [("hf_single_task", 1)] * 5  # hours per seed
  single = [r for r in runs if r.arm == "single_task"]
  assert all(r.overrides[0] == "--config.total_steps=20" for r in single)  # 100 steps / 5 tasks
  assert len({r.folder for r in runs}) == len(runs)  # every run its own workdir
  assert single[0].folder == "single_task/glue_rte/seed0"
  hf = [r for r in runs if r.arm == "hf_single_task"]
  assert hf[0].runner == "hf" and hf[0].spec == "glue5_minilm:single_task:glue/rte"
  assert hf[0].folder == "hf_single_task/glue_rte/seed0"


def test_matched_arms_get_the_steps_that_spend_camtl_mtus_flops():
  runs = comparison.planned_runs("glue5_minilm", (0,), total_steps=2000,
                                 step_flops=FLOPS.__getitem__)
  by_arm = {r.arm: r for r in runs}
  # round(2000 * 3.0e9 / 1.0e9) and round(2000 * 3.0e9 / 1.2e9)
  assert by_arm["mtl_matched"].overrides == ("--config.total_steps=6000",
                                             "--config.eval_every=3000")
  assert by_arm["mtl_matched"].config == "glue5_minilm:mtl"
  assert by_arm["camtl_matched"].overrides[0] == "--config.total_steps=5000"
  assert by_arm["camtl_matched"].config == "glue5_minilm:layernorm"
  assert glue5_minilm.matched_steps(2000, 1.0, 3.0) == 667
  # Without FLOPs (no compile) the plan has no matched arm.
  assert "mtl_matched" not in {r.arm for r in comparison.planned_runs("glue5_minilm", (0,))}


def test_the_paper_arm_is_the_papers_selection_and_data_comes_from_the_command_line(
    monkeypatch):
  paper = glue5_minilm.get_config("camtl_mtu_paper")
  assert (paper.mtu_uncertainty, paper.mtu_min_share, paper.mtu_max_share) == (
      "normalised", 0.0, 1.0)
  assert paper.sampler == "mt_uncertainty"
  ours = glue5_minilm.get_config("camtl_mtu")
  assert (ours.mtu_uncertainty, ours.mtu_min_share, ours.mtu_max_share) == ("calibrated", 0.25,
                                                                           0.5)
  monkeypatch.delenv("CAMTL_DATA_DIR", raising=False)
  assert glue5_minilm.get_config().data_dir == "data"  # no fixed place above the repository
  monkeypatch.setenv("CAMTL_DATA_DIR", "/some/where")
  assert glue5_minilm.get_config("mtl").data_dir == "/some/where"


def test_one_task_score_rule_the_mean_of_the_benchmark_metrics():
  from camtl_jax.tasks import metrics, registry  # pylint: disable=import-outside-toplevel
  mrpc = {"f1": 0.8, "accuracy": 0.6}
  assert comparison.task_score(registry.get_task("glue/mrpc"), mrpc) == pytest.approx(0.7)
  assert comparison.task_score(registry.get_task("glue/mrpc"), mrpc) == metrics.main_score(
      registry.get_task("glue/mrpc"), mrpc)  # what selects checkpoints
  assert not hasattr(comparison, "main_metric")  # no second rule under another name
  assert metrics.score_metrics(registry.get_task("glue/mrpc")) == ("f1", "accuracy")
  assert comparison.score_name(registry.get_task("glue/stsb")) == "mean of pearson, spearman"
  assert comparison.score_name(registry.get_task("glue/cola")) == "mcc"


def test_an_experiment_config_without_arms_is_refused():
  with pytest.raises(ValueError, match="defines no experiment"):
    comparison.planned_runs("demo", (0,))


def _fake_run(workdir, results, used, seconds=10.0, steps=100, shares=None, step=50):
  workdir.mkdir(parents=True)
  (workdir / "results.json").write_text(json.dumps(
      {"step": step, "score": 0.0, "results": results, "data_used": used}))
  (workdir / "wall_seconds.json").write_text(json.dumps({"seconds": seconds}))
  config = glue5_minilm.get_config("mtl")
  config.total_steps, config.eval_every = steps, steps // 2
  (workdir / "config.json").write_text(config.to_json())
  shares = shares or {t: 1 / len(results) for t in results}
  (workdir / "history.jsonl").write_text(json.dumps({"step": steps, "task_share": shares}) + "\n")


MEASURES = comparison.Measures(step_flops=lambda spec: 1e9, parameters=lambda spec: 1000,
                               train_rows=lambda task, data_dir: 800)


def test_records_of_finished_arms_and_the_tables_built_from_them(tmp_path):
  runs = [comparison.ArmRun("mtl", 0, "glue5_minilm:mtl"),
          comparison.ArmRun("mtl", 1, "glue5_minilm:mtl"),
          comparison.ArmRun("camtl_mtu", 0, "glue5_minilm:camtl_mtu"),
          comparison.ArmRun("camtl_mtu", 1, "glue5_minilm:camtl_mtu"),
          comparison.ArmRun("single_task", 0, "glue5_minilm:single_task:glue/rte"),
          comparison.ArmRun("single_task", 0, "glue5_minilm:single_task:glue/mrpc")]
  rte_mrpc = lambda rte, f1, acc: {"glue/rte": {"accuracy": rte},  # noqa: E731
                                   "glue/mrpc": {"f1": f1, "accuracy": acc}}
  used = {"glue/rte": 0.5, "glue/mrpc": 0.25, "overall": 0.4}
  _fake_run(tmp_path / runs[0].folder, rte_mrpc(0.6, 0.8, 0.6), used, seconds=20.0,
            shares={"glue/rte": 0.25, "glue/mrpc": 0.75})
  _fake_run(tmp_path / runs[1].folder, rte_mrpc(0.7, 0.9, 0.7), used)
  _fake_run(tmp_path / runs[2].folder, rte_mrpc(0.8, 0.8, 0.8), used)
  _fake_run(tmp_path / runs[4].folder, {"glue/rte": {"accuracy": 0.5}}, {"glue/rte": 1.0})
  written = comparison.write_finished_records(tmp_path, runs, ["--config.max_eval_examples=8"],
                                              MEASURES)
  assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
      "records/camtl_mtu/seed0.json", "records/mtl/seed0.json", "records/mtl/seed1.json"]
  record = json.loads((tmp_path / "records/mtl/seed0.json").read_text())
  assert record["task_scores"] == {"glue/rte": 0.6, "glue/mrpc": pytest.approx(0.7)}
  assert record["score"] == pytest.approx(0.65)
  # 100 steps of b = 16: 400 RTE and 1200 MRPC rows of 800 each.
  assert record["rows_seen"] == {"glue/rte": 400, "glue/mrpc": 1200}
  assert record["epochs"] == {"glue/rte": 0.5, "glue/mrpc": 1.5}
  assert record["data_used_total"] == pytest.approx((0.5 * 800 + 0.25 * 800) / 1600)
  assert record["flops"] == 1e11 and record["parameters_to_serve"] == 1000
  assert record["selected_step"] == {"mtl/seed0": 50} and record["wall_seconds"] == 20.0
  assert record["settings"]["sampler"] == "proportional" and "--config.max_eval_examples=8" in (
      record["commands"][0])
  # A committed record of camtl_mtu seed 1 completes the pair; single_task seed 0 is missing MRPC.
  committed = tmp_path / "committed"
  other = dict(json.loads((tmp_path / "records/camtl_mtu/seed0.json").read_text()), seed=1,
               score=0.9)
  comparison.record_path(committed, "camtl_mtu", 1).parent.mkdir(parents=True)
  comparison.record_path(committed, "camtl_mtu", 1).write_text(json.dumps(other))
  summary = comparison.summarise(tmp_path, runs, "glue5_minilm", "camtl-experiment ...",
                                 committed)
  mtl = summary["arms"]["mtl"]
  assert mtl["score"] == {"mean": pytest.approx(0.7), "min": pytest.approx(0.65),
                          "max": pytest.approx(0.75)}
  paired = summary["paired_difference"]["mtl"]
  assert paired["per_seed"] == {0: pytest.approx(0.8 - 0.65), 1: pytest.approx(0.9 - 0.75)}
  assert summary["missing"] == ["single_task seed 0"]
  table = comparison.results_markdown(summary)
  assert "| mtl | 2 | 0.650 [0.600, 0.700] | 0.750 [0.700, 0.800] | 0.7000 [0.6500, 0.7500] | "\
         "0.1500 [0.1500, 0.1500] (n = 2) |" in table
  assert "| mtl | 1k | 1.6k (1.00) | 37.5% (of 1,600) | n/a | 100G | 20, 10 |" in table
  assert "Not yet finished (no record): single_task seed 0" in table
  assert "adaptation: rte accuracy; mrpc mean of f1, accuracy. Score = the mean of the 2" in table
  assert "proportional, 100 steps of b = 16" in table
  comparison.write_outputs(tmp_path, summary)
  assert (tmp_path / "results.png").stat().st_size > 0


def test_collect_copies_new_records_and_writes_the_tables(tmp_path):
  runs = [comparison.ArmRun("mtl", 0, "glue5_minilm:mtl"),
          comparison.ArmRun("mtl", 1, "glue5_minilm:mtl")]
  _fake_run(tmp_path / runs[0].folder, {"glue/rte": {"accuracy": 0.6}}, {"glue/rte": 0.5})
  comparison.write_finished_records(tmp_path, runs, [], MEASURES)
  (tmp_path / "step_flops.json").write_text(json.dumps({"glue5_minilm:mtl": 2.0}))
  committed = tmp_path / "committed"
  committed.mkdir()
  (committed / "step_flops.json").write_text(json.dumps({"glue5_minilm:mtl": 1.0}))
  (tmp_path / "committed.md").write_text(f"# x\n{comparison.TABLES_START}\nold\n"
                                         f"{comparison.TABLES_END}\nprose\n")
  new = comparison.collect(tmp_path, runs, committed, "glue5_minilm", "camtl-experiment ...")
  document = (tmp_path / "committed.md").read_text()
  assert "old" not in document and document.endswith("<!-- /tables -->\nprose\n")
  assert "| mtl | 1 | 0.600 | 0.6000 |" in document
  assert new == [comparison.record_path(committed, "mtl", 0)]
  record = json.loads(new[0].read_text())
  assert record["commands"][0].startswith("python -m camtl_jax.main --config glue5_minilm:mtl "
                                          "--workdir OUT/mtl/seed0 ")
  assert str(tmp_path) not in new[0].read_text()
  assert json.loads((committed / "step_flops.json").read_text()) == {"glue5_minilm:mtl": 1.0}
  table = (committed / "results.md").read_text()
  assert "| mtl | 1 | 0.600 | 0.6000 |" in table and "no record): mtl seed 1" in table
  assert comparison.collect(tmp_path, runs, committed, "glue5_minilm", "x") == []  # only new ones


def test_arms_with_a_committed_record_are_not_run(tmp_path):
  committed = tmp_path / "committed"
  record = {"arm": "camtl_mtu_paper", "seed": 0, "runner": "camtl-train",
            "results": {"glue/rte": {"accuracy": 0.6}}, "task_scores": {"glue/rte": 0.6},
            "score": 0.6, "rows_seen": {"glue/rte": 10}, "rows_seen_total": 10,
            "epochs_total": None, "data_used": {"glue/rte": 0.1}, "data_used_total": None,
            "train_rows": {"glue/rte": None}, "flops": None, "parameters_to_serve": None,
            "wall_seconds": 1.0, "selected": "x", "code": {"commit": "abc"},
            "settings": {"conditioning": "camtl", "sampler": "mt_uncertainty",
                         "mtu_uncertainty": "normalised", "mtu_min_share": 0.0,
                         "mtu_max_share": 1.0, "total_steps": 10, "batch_size": 16}}
  comparison.record_path(committed, "camtl_mtu_paper", 0).parent.mkdir(parents=True)
  comparison.record_path(committed, "camtl_mtu_paper", 0).write_text(json.dumps(record))
  out = tmp_path / "out"
  summary = comparison.run_experiment("glue5_minilm", out, (0,), [], "camtl-experiment ...",
                                      arms=("camtl_mtu_paper",), committed=committed)
  assert not (out / "camtl_mtu_paper").exists()  # nothing trained
  assert summary["arms"]["camtl_mtu_paper"]["score"]["mean"] == 0.6 and not summary["missing"]
  assert "normalised, floor 0, cap 1" in (out / "results.md").read_text()


@pytest.mark.integration
def test_an_experiment_trains_its_arms_and_a_rerun_skips_the_finished_ones(tmp_path, shared_data):
  command = [sys.executable, "-m", "camtl_jax.cli.experiment", "--experiment", "glue5_minilm",
             "--out", str(tmp_path), "--seeds", "0", "--total_steps", "5",
             "--committed", str(tmp_path / "none"),
             "--arms", "mtl", f"--data-dir={shared_data}",
             "--config.encoder_layers=1", "--config.max_eval_examples=8",
             "--config.max_length=32"]
  first = subprocess.run(command, capture_output=True, text=True, check=False)
  assert first.returncode == 0, first.stderr[-2000:]
  summary = json.loads((tmp_path / "results.json").read_text())
  assert set(summary["arms"]["mtl"]["results"]) == set(glue5_minilm.GLUE5)
  assert (tmp_path / "records" / "mtl" / "seed0.json").exists()
  assert (tmp_path / "results.md").exists() and (tmp_path / "results.png").exists()
  again = subprocess.run(command, capture_output=True, text=True, check=False)
  assert again.returncode == 0, again.stderr[-2000:]
  assert again.stderr.count("finished earlier, skipped") == 1
  assert json.loads((tmp_path / "results.json").read_text())["arms"] == summary["arms"]


def test_a_bad_seed_list_is_one_line(capsys):
  from camtl_jax.cli import experiment  # pylint: disable=import-outside-toplevel
  assert experiment.main(["--experiment", "glue5_minilm", "--out", "/nonexistent/x",
                          "--seeds", "a,b"]) == 2
  assert "--seeds 'a,b': give integers" in capsys.readouterr().err


@pytest.mark.integration
def test_an_arm_that_stops_on_a_user_error_shows_that_error(tmp_path):
  """The arm's own one-line error reaches the experiment's message, not only its log."""
  command = [sys.executable, "-m", "camtl_jax.cli.experiment", "--experiment", "glue5_minilm",
             "--out", str(tmp_path), "--seeds", "0", "--arms", "mtl",
             "--committed", str(tmp_path / "none"), f"--config.data_dir={tmp_path / 'no_data'}"]
  stopped = subprocess.run(command, capture_output=True, text=True, check=False)
  assert stopped.returncode == 2, stopped.stderr[-2000:]
  lines = stopped.stderr.strip().splitlines()
  assert "Traceback" not in stopped.stderr
  assert lines[-1].startswith("camtl-experiment: error: mtl/seed0 stopped (exit 2): "), lines[-1]
  assert "camtl-train: error: missing data files (data_dir " in lines[-1]  # the arm's own line


@pytest.mark.integration
def test_the_hf_recipe_trains_and_scores_with_our_metrics(tmp_path, shared_data, monkeypatch):
  """hf_single_task's runner on 64 STS-B rows (real MiniLM): results.json in camtl-train's form,
  scored by camtl_jax.tasks.metrics, counted FLOPs, every epoch scored, the epoch save removed."""
  from camtl_jax.cli import common  # pylint: disable=import-outside-toplevel
  from camtl_jax.perf import hf_finetune  # pylint: disable=import-outside-toplevel
  data = tmp_path / "data" / "glue" / "STS-B"
  data.mkdir(parents=True)
  for split, rows in (("train", 65), ("dev", 33)):
    lines = (shared_data / "glue" / "STS-B" / f"{split}.tsv").read_text().splitlines()[:rows]
    (data / f"{split}.tsv").write_text("\n".join(lines) + "\n")
  monkeypatch.setitem(hf_finetune.RECIPE, "epochs", 2)
  config = common.load_config("glue5_minilm:single_task:glue/stsb",
                              [f"data_dir={tmp_path / 'data'}", "max_eval_examples=16"])
  result = hf_finetune.finetune(config, tmp_path / "w")
  assert set(result["results"]["glue/stsb"]) == {"pearson", "spearman"}
  assert result["rows_seen"] == {"glue/stsb": 128} and result["step"] in (2, 4)
  assert result["flops"] > 128 * 2 * 22e6  # at least 2 FLOPs per weight per row forward
  assert [e["epoch"] for e in result["epochs"]] == [1, 2]
  assert not (tmp_path / "w/checkpoint.pt").exists()

  # Killed after its first save (mid-epoch: 2 steps an epoch, a save every step), rerun: the
  # same scores and FLOPs to the last digit as the unbroken run above.
  monkeypatch.setattr(hf_finetune, "SAVE_EVERY_STEPS", 1)
  save, saves = hf_finetune._save, []  # pylint: disable=protected-access

  def save_then_die(state, path):
    save(state, path)
    saves.append((state["epoch"], state["batch"]))
    if len(saves) == 1:
      raise KeyboardInterrupt

  monkeypatch.setattr(hf_finetune, "_save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    hf_finetune.finetune(config, tmp_path / "resumed")
  assert saves == [(0, 1)] and (tmp_path / "resumed/checkpoint.pt").exists()
  resumed = hf_finetune.finetune(config, tmp_path / "resumed")
  assert saves[1:] == [(1, 0), (1, 1), (2, 0)]  # it went on from epoch 0's step 1
  for key in ("results", "epochs", "flops", "step", "last"):
    assert resumed[key] == result[key], key
