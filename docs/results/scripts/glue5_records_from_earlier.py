"""The per-arm records (docs/results/glue5_minilm/<arm>/seed<S>.json) of the arms measured before
the records existed: camtl_mtu, mtl and single_task at seeds 0 and 1, attention, adapter and
layernorm at seed 0, from docs/results/glue5_minilm.json (the command's results.json of those runs,
commits d99c1ce and e0588fb) and the figures its .md reports beside it (wall seconds per seed,
the selection shares). Run from the repository root:

  python docs/results/scripts/glue5_records_from_earlier.py DATA_DIR CACHE_DIR

DATA_DIR: the data folder (for the training-row counts); CACHE_DIR: where the FLOPs and parameter
counts are kept (camtl-experiment's measures, the same compiled programs as the plan's).
"""
import json
import sys
from pathlib import Path

from camtl_jax import comparison
from camtl_jax.cli import experiment as experiment_cli

EARLIER = Path("docs/results/glue5_minilm.json")
OUT = Path("docs/results/glue5_minilm")
OVERRIDES = ["--config.max_eval_examples=500", "--config.eval_every=1000",
             "--config.log_every=100"]
SPECS = {"camtl_mtu": "glue5_minilm:camtl_mtu", "mtl": "glue5_minilm:mtl",
         "attention": "glue5_minilm:attention", "adapter": "glue5_minilm:adapter",
         "layernorm": "glue5_minilm:layernorm"}
GLUE5 = ("glue/rte", "glue/mrpc", "glue/stsb", "glue/sst2", "glue/cola")
# Wall seconds per seed as glue5_minilm.md reports them (quiet machine, except single_task seed 1,
# beside a CI run); each arm's sum is its wall_seconds in the JSON.
WALL = {("camtl_mtu", 0): 1875, ("camtl_mtu", 1): 1930, ("mtl", 0): 441, ("mtl", 1): 432,
        ("single_task", 0): 1178, ("single_task", 1): 1780, ("attention", 0): 547.3,
        ("adapter", 0): 553.1, ("layernorm", 0): 596.2}
# Shares of all selections (glue5_minilm.md, "Data use", rounded to 0.1%): camtl_mtu seeds 0 and
# 1, mtl seed 0. attention/adapter/layernorm seed 0 sample as mtl seed 0 (proportional, same seed,
# same loader: their data_used equals mtl seed 0's to the last digit), so their rows are mtl's.
SHARES = {("camtl_mtu", 0): (0.368, 0.183, 0.075, 0.220, 0.155),
          ("camtl_mtu", 1): (0.471, 0.201, 0.073, 0.179, 0.077),
          ("mtl", 0): (0.029, 0.043, 0.065, 0.767, 0.095)}
COMMIT = {"camtl_mtu": "d99c1ce", "mtl": "d99c1ce", "single_task": "d99c1ce",
          "attention": "e0588fb", "adapter": "e0588fb", "layernorm": "e0588fb"}
NOTE = ("measured before per-arm records existed (docs/results/glue5_minilm.md, 'One command, one "
        "code version'); reused because the library code of those commits and of the commit the "
        "new arms run on differs only by docstrings and config.regression_loss_scale, whose "
        "default 1.0 computes the loss exactly as before; e0588fb is a clone's commit (d99c1ce "
        "plus the plan's single_task seed 1), not on main")


def main(data_dir: str, cache: str) -> None:
  measures = experiment_cli.measures(Path(cache), OUT, [f"--config.data_dir={data_dir}"])
  earlier = json.loads(EARLIER.read_text())
  for arm, summary in earlier["arms"].items():
    for seed_summary in summary["per_seed"]:
      seed = seed_summary["seed"]
      record = build(arm, seed, seed_summary, measures, data_dir, earlier["command"])
      path = comparison.record_path(OUT, arm, seed)
      path.parent.mkdir(parents=True, exist_ok=True)
      record = comparison.portable(record, "RUNS/quiet")  # that run's folder
      path.write_text(json.dumps(record, indent=1) + "\n")
      print(path, record["score"])


def build(arm, seed, s, measures, data_dir, command) -> dict:
  results = s["results"]
  train_rows = {t: measures.train_rows(t, data_dir) for t in results}
  scores = {t: comparison.task_score(t, m) for t, m in results.items()}
  if arm == "single_task":
    specs = [f"glue5_minilm:single_task:{t}" for t in GLUE5]
    steps = {f"single_task/{t.replace('/', '_')}/seed{seed}": 400 for t in GLUE5}
    rows_seen = {t: 400 * 16 for t in GLUE5}  # one task: every step trains b = 16 of its rows
    flops_per_step = {f: measures.step_flops(spec) for f, spec in zip(steps, specs)}
    params = sum(measures.parameters(spec) for spec in specs)
    settings_spec = specs[0]
  else:
    steps = {f"{arm}/seed{seed}": 2000}
    shares = SHARES.get((arm, seed)) or (SHARES[("mtl", 0)] if seed == 0 else None)
    rows_seen = {t: round(x * 2000 * 16) for t, x in zip(GLUE5, shares)} if shares else {}
    flops_per_step = {f"{arm}/seed{seed}": measures.step_flops(SPECS[arm])}
    params = measures.parameters(SPECS[arm])
    settings_spec = SPECS[arm]
  config = experiment_cli.common.load_config(settings_spec, [o[len("--config."):]
                                                            for o in OVERRIDES])
  if arm == "single_task":
    config.total_steps, config.eval_every = 400, 1000
  settings = {k: config.get(k) for k in comparison.SETTINGS}
  settings["frozen_layers"] = list(settings["frozen_layers"])
  settings["conditioning"] = config.model.conditioning
  known = bool(rows_seen)
  used = s["data_used"]
  return {
      "arm": arm, "seed": seed, "runner": "camtl-train",
      "configs": [settings_spec] if arm != "single_task" else
                 [f"glue5_minilm:single_task:{t}" for t in GLUE5],
      "overrides": [], "global_overrides": OVERRIDES, "commands": [command],
      "results": results, "task_scores": scores,
      "score": sum(scores.values()) / len(scores),
      "selected_step": s["steps"],
      "selected": ("the best dev score of the evaluations every 1000 steps (step 2000 of 2000)"
                   if arm != "single_task" else "dev at the end (step 400 of 400)"),
      "settings": settings, "steps": steps,
      "rows_seen": rows_seen, "rows_seen_total": sum(steps.values()) * 16,
      "rows_seen_note": ("from the selection shares glue5_minilm.md reports, rounded to 0.1%"
                         if known and arm != "single_task" else
                         None if known else "not recorded by the earlier runs"),
      "train_rows": train_rows,
      "epochs": {t: rows_seen[t] / train_rows[t] for t in results} if known else None,
      "epochs_total": sum(steps.values()) * 16 / sum(train_rows.values()),
      "data_used": used,
      "data_used_total": sum(used[t] * train_rows[t] for t in results) / sum(train_rows.values()),
      "flops_per_step": flops_per_step,
      "flops": sum(flops_per_step[f] * n for f, n in steps.items()),
      "flops_counted_by": "XLA cost_analysis of the compiled train step at max_length x steps",
      "parameters_to_serve": params, "wall_seconds": WALL[(arm, seed)],
      "machine": {"cpu": "the 2-core CPU machine of glue5_minilm.md", "cpus": 2},
      "code": {"commit": COMMIT[arm], "changed_files": []}, "reused": NOTE,
  }


if __name__ == "__main__":
  main(*sys.argv[1:3])
