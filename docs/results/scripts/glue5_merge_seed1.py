# Adds camtl_mtu seed 1 (its workdir under RUNS_DIR/glue5_2000, glue5_seed1_run.sh) to the
# committed 2000-step GLUE-5 summary: camtl_mtu seed 0's results.json is rebuilt from the committed
# per-seed record, then comparison.arm_summary averages the two seeds as camtl-experiment does.
# Run from the repository root:
#   python docs/results/scripts/glue5_merge_seed1.py RUNS_DIR
import json, pathlib, shutil, sys
from camtl_jax import comparison

repo = pathlib.Path(".")
summary = json.loads((repo / "docs/results/glue5_minilm.json").read_text())
out = pathlib.Path(sys.argv[1]) / "glue5_2000"
seed0 = summary["arms"]["camtl_mtu"]
record = seed0["per_seed"][0]
folder = out / "camtl_mtu/seed0"
folder.mkdir(parents=True, exist_ok=True)
(folder / "results.json").write_text(json.dumps({
    "results": record["results"], "step": record["steps"]["camtl_mtu/seed0"],
    "data_used": dict(record["data_used"], overall=seed0["data_used"]["overall"])}))
(folder / "wall_seconds.json").write_text(json.dumps({"seconds": seed0["wall_seconds"]}))
runs = [r for r in comparison.planned_runs("glue5_minilm", (0, 1)) if r.arm == "camtl_mtu"]
summary["arms"]["camtl_mtu"] = comparison.arm_summary(out, runs)
summary["unfinished"] = [f for f in summary["unfinished"] if f != "camtl_mtu/seed1"]
(repo / "docs/results/glue5_minilm.json").write_text(json.dumps(summary, indent=2))
comparison.plot_results(summary, repo / "docs/results/glue5_minilm.png")
print(comparison.results_markdown(summary))
