# Assembles docs/results/mtu_mixing.json from the two workdirs of the MT-U mixing runs
# (docs/results/scripts/glue5_ablation_mtu_mixing.sh, second part): per run
# reporting.sampling_summary, the tasks' head types, the MT-U options and the two targets'
# measures; then the runs' plots. Run from the repository root (RUNS_DIR: the script's):
#   python docs/results/scripts/mtu_mixing_assemble.py RUNS_DIR COMMIT
import json, pathlib, shutil, sys
from camtl_jax import reporting
from camtl_jax.tasks import registry

repo, out, commit = pathlib.Path("."), pathlib.Path(sys.argv[1]), sys.argv[2]
runs = {"mixed": out / "mtu_mixed", "paper": out / "mtu_paper"}
OPTIONS = ("mtu_uncertainty", "mtu_min_share", "mtu_max_share", "mt_uncertainty_score")
summary = {}
for name, workdir in runs.items():
  config = json.loads((workdir / "config.json").read_text())
  run = reporting.sampling_summary(workdir)
  run["head_types"] = {t: registry.get_task(t).type for t in config["tasks"]}
  run["options"] = {k: config[k] for k in OPTIONS}
  late = [iv for iv in run["interval_shares"] if iv["step"] > run["total_steps"] // 10]
  run["max_interval_share_after_10pct"] = max(max(iv["shares"].values()) for iv in late)
  run["min_total_share"] = min(run["total_shares"].values())
  summary[name] = run
  for png in workdir.glob("*sampling*.png"):
    shutil.copy(png, repo / f"docs/results/mtu_mixing_{name}.png")
summary["command"] = (repo / "docs/results/scripts/glue5_ablation_mtu_mixing.sh").read_text()
summary["code"] = f"commit {commit} (a clone, PYTHONPATH set to it)"
(repo / "docs/results/mtu_mixing.json").write_text(json.dumps(summary, indent=2))
for name in runs:
  r = summary[name]
  print(name, {t: round(v, 3) for t, v in r["total_shares"].items()},
        "min", round(r["min_total_share"], 3), "max late", round(r["max_interval_share_after_10pct"], 3))
  print("  dev", {t: {m: round(v, 3) for m, v in ms.items()} for t, ms in r["dev"].items()},
        "score", round(r["dev_score"], 4), "used", round(r["data_used"]["overall"], 3))
