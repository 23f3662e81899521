# Adds the runs finished under RUNS_DIR/glue5_2000 (2026-12-04: the ablation arms attention,
# adapter, layernorm at seed 0 and single_task at seed 1) to the committed 2000-step GLUE-5 summary.
# Every committed arm/seed whose workdir is not there is rebuilt from the committed per-seed record
# (results.json; an arm's committed wall seconds go to its first folder), then comparison.summarise
# makes the summary over all planned runs of seeds 0, 1 as camtl-experiment does
# (arms in plan order; single_task seed 1 after the ablation arms).
# Run from the repository root (RUNS_DIR as given to the scripts that made the runs):
#   python docs/results/scripts/glue5_merge_runs.py RUNS_DIR
import json, pathlib, sys
from camtl_jax import comparison

repo = pathlib.Path(".")
path = repo / "docs/results/glue5_minilm.json"
committed = json.loads(path.read_text())
out = pathlib.Path(sys.argv[1]) / "glue5_2000"
runs = comparison.planned_runs("glue5_minilm", (0, 1))
# The plan of seeds 0, 1 runs single_task at the first seed only; its finished seed-1 runs count too.
planned = {r.folder for r in runs}
runs += [r for r in comparison.planned_runs("glue5_minilm", (1,))
         if r.folder not in planned and (out / r.folder / "results.json").exists()]
for arm, summary in committed["arms"].items():
  wall_written = False
  for record in summary["per_seed"]:
    for run in [r for r in runs if r.arm == arm and r.seed == record["seed"]]:
      folder = out / run.folder
      if (folder / "results.json").exists():
        continue
      tasks = [t for t in record["results"] if arm != "single_task" or t == run.config.split(":", 2)[2]]
      used = {t: record["data_used"][t] for t in tasks}
      overall = summary["data_used"]["overall"] if arm != "single_task" else used[tasks[0]]
      folder.mkdir(parents=True, exist_ok=True)
      (folder / "results.json").write_text(json.dumps({
          "results": {t: record["results"][t] for t in tasks}, "step": record["steps"][run.folder],
          "data_used": dict(used, overall=overall)}))
      (folder / "wall_seconds.json").write_text(json.dumps(
          {"seconds": 0.0 if wall_written else summary["wall_seconds"]}))
      wall_written = True
merged = comparison.summarise(out, runs, "glue5_minilm", committed["command"])
path.write_text(json.dumps(merged, indent=2))
comparison.plot_results(merged, repo / "docs/results/glue5_minilm.png")
print(comparison.results_markdown(merged))
