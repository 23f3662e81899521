# docs/results/mtu_mixing_probes.json: the three probes of why COPA does not learn in the mixed run
# (docs/results/mtu_mixing.md). Per probe: its script, the code it ran, the shares of all
# selections, COPA's mean uncertainty and selected loss per log step, and the dev results when it
# finished (the no-WNUT probe was stopped at step 300).
#   python docs/results/scripts/mtu_probes_assemble.py REPO
import json, pathlib, sys
from camtl_jax import reporting

repo = pathlib.Path(sys.argv[1])
PROBES = {
    "no_wnut17": ("mtu_mixed_no_wnut", "mtu_probe_no_wnut.sh", "commit 5a6d181"),
    "example_mean": ("mtu_mixed_rows", "mtu_probe_example_mean.sh", "commit e1dbea5"),
    "no_cap": ("mtu_mixed_nocap", "mtu_probe_no_cap.sh", "commit e1dbea5"),
}
out = {}
for name, (folder, script, code) in PROBES.items():
  workdir = pathlib.Path("/work/runs") / folder
  records = reporting.train_records(workdir / "history.jsonl")
  probe = {"script": f"docs/results/scripts/{script}", "code": code,
           "last_logged_step": records[-1]["step"],
           "copa": [{"step": r["step"], "uncertainty": r["task_uncertainty"]["superglue/copa"],
                     "selected_loss": r["task_loss"]["superglue/copa"],
                     "share": r["task_share"]["superglue/copa"]} for r in records]}
  if (workdir / "results.json").exists():
    summary = reporting.sampling_summary(workdir)
    late = [iv for iv in summary["interval_shares"] if iv["step"] > summary["total_steps"] // 10]
    probe.update(total_shares=summary["total_shares"], dev=summary["dev"],
                 dev_score=summary["dev_score"], data_used=summary["data_used"],
                 min_total_share=min(summary["total_shares"].values()),
                 max_interval_share_after_10pct=max(max(iv["shares"].values()) for iv in late))
  out[name] = probe
(repo / "docs/results/mtu_mixing_probes.json").write_text(json.dumps(out, indent=2))
for name, probe in out.items():
  print(name, probe["last_logged_step"], probe.get("dev"), probe.get("dev_score"))
