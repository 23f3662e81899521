# docs/results/mtu_mixing_probes.json: the probes of why COPA does not learn in the mixed run
# (docs/results/mtu_mixing.md). Per probe: its script, the code it ran, the shares of all
# selections, COPA's mean uncertainty and selected loss per log step, and the dev results when it
# finished (the no-WNUT probe was stopped at step 300). A probe whose workdir is gone keeps its
# committed record; the probes run from commit d99c1ce on (COPA alone, both runs at seed 1,
# calibration only) also keep every task's share per log step, and those from commit c128387 on
# every task's mean uncertainty too; the gradient-balancing probes each task's loss factor per log
# step. Run from the repository root (RUNS_DIR: the probe scripts'):
#   python docs/results/scripts/mtu_probes_assemble.py RUNS_DIR
import json, pathlib, sys
from camtl_jax import reporting

repo, runs_dir = pathlib.Path("."), pathlib.Path(sys.argv[1])
PROBES = {
    "no_wnut17": ("mtu_mixed_no_wnut", "mtu_probe_no_wnut.sh", "commit 5a6d181"),
    "example_mean": ("mtu_mixed_rows", "mtu_probe_example_mean.sh", "commit e1dbea5"),
    "no_cap": ("mtu_mixed_nocap", "mtu_probe_no_cap.sh", "commit e1dbea5"),
    "copa_alone": ("mtu_copa_alone", "mtu_probe_seed1.sh", "commit d99c1ce"),
    "paper_seed1": ("mtu_paper_seed1", "mtu_probe_seed1.sh", "commit d99c1ce"),
    "mixed_seed1": ("mtu_mixed_seed1", "mtu_probe_seed1.sh", "commit d99c1ce"),
    "calibrated_only": ("mtu_calibrated_only", "mtu_probe_calibrated_only.sh", "commit d99c1ce"),
    "mixed_lr3e-4": ("mtu_mixed_lr3e-4", "mtu_probe_lr3e-4.sh", "commit e0588fb"),
    "mixed_c128387": ("mtu_u_levels", "mtu_probe_u_levels.sh", "commit c128387"),
    "paper_c128387": ("mtu_paper_today", "mtu_rerun_today.sh", "commit c128387"),
    "copa_alone_b4": ("mtu_copa_alone_b4", "mtu_probe_batch.sh", "commit c128387"),
    "mixed_b16": ("mtu_mixed_b16", "mtu_probe_batch.sh", "commit c128387"),
    "pair_wnut17_uniform": ("mtu_pair_wnut17", "mtu_probe_pairs.sh", "commit c128387"),
    "pair_stsb_uniform": ("mtu_pair_glue_stsb", "mtu_probe_pairs.sh", "commit c128387"),
    "pair_rte_uniform": ("mtu_pair_glue_rte", "mtu_probe_pairs.sh", "commit c128387"),
    "uniform6_b24": ("mtu_uniform6_b24", "mtu_probe_uniform6.sh", "commit c128387"),
    "pair_stsb_uniform_scale0.5": ("mtu_pair_stsb_half", "mtu_probe_regression_scale.sh",
                                   "commit 124df6e"),
    "mixed_scale0.5": ("mtu_mixed_stsb_half", "mtu_probe_regression_scale.sh", "commit 124df6e"),
    "mixed_example_mean_scale0.5": ("mtu_mixed_rows_stsb_half", "mtu_probe_example_mean_scale.sh",
                                    "commit 124df6e"),
    "mixed_fixed_balance": ("mtu_fixed_balance", "mtu_probe_fixed_balance.sh", "commit 1411d15"),
    "mixed_gradient_balance": ("mtu_balance10_s0", "mtu_probe_gradient_balance.sh",
                               "commit 1411d15 + gradient_balance_probe.patch"),
    "mixed_gradient_balance_seed1": ("mtu_balance10_s1", "mtu_probe_gradient_balance.sh",
                                     "commit 1411d15 + gradient_balance_probe.patch"),
    **{f"{arm}_46901a5_seed{s}": (f"mtu_{arm}_46901a5_s{s}", "mtu_rerun_46901a5.sh",
                                  "commit 46901a5")
       for arm in ("mixed", "paper") for s in (0, 1)},
}
path = repo / "docs/results/mtu_mixing_probes.json"
out = json.loads(path.read_text()) if path.exists() else {}
for name, (folder, script, code) in PROBES.items():
  workdir = runs_dir / folder
  if not (workdir / "history.jsonl").exists():
    continue
  records = reporting.train_records(workdir / "history.jsonl")
  probe = {"script": f"docs/results/scripts/{script}", "code": code,
           "last_logged_step": records[-1]["step"],
           "copa": [{"step": r["step"], "uncertainty": r["task_uncertainty"]["superglue/copa"],
                     "selected_loss": r["task_loss"]["superglue/copa"],
                     "share": r["task_share"]["superglue/copa"]} for r in records],
           "shares": [{"step": r["step"], "shares": r["task_share"]} for r in records],
           "uncertainty": [{"step": r["step"], "uncertainty": r["task_uncertainty"]}
                           for r in records]}
  if "task_loss_scale" in records[-1]:  # the gradient-balancing probes: each task's loss factor
    probe["loss_factors"] = [{"step": r["step"], "factors": r["task_loss_scale"]} for r in records]
  if (workdir / "results.json").exists():
    summary = reporting.sampling_summary(workdir)
    late = [iv for iv in summary["interval_shares"] if iv["step"] > summary["total_steps"] // 10]
    probe.update(total_shares=summary["total_shares"], dev=summary["dev"],
                 dev_score=summary["dev_score"], data_used=summary["data_used"],
                 min_total_share=min(summary["total_shares"].values()),
                 max_interval_share_after_10pct=max(max(iv["shares"].values()) for iv in late))
  out[name] = probe
path.write_text(json.dumps(out, indent=2))
for name, probe in out.items():
  print(name, probe["last_logged_step"], probe.get("dev"), probe.get("dev_score"))
