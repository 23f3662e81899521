# Tabulates the glue5_minilm sweep (docs/results/scripts/glue5_sweep.sh, glue5_sweep_base.sh) into
# docs/results/glue5_sweep.json: per setting, the dev main metrics at every evaluated step, their
# mean, and the mean training loss over the last 500 steps; and CoLA alone for 1600 steps.
# Run from the repository root (RUNS_DIR: the sweep scripts'):
#   python docs/results/scripts/glue5_sweep_assemble.py RUNS_DIR COMMIT
import json, pathlib, sys
from camtl_jax import comparison

repo, commit = pathlib.Path("."), sys.argv[2]
sweep = pathlib.Path(sys.argv[1]) / "sweep"


def history(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]


def dev_by_step(records: list[dict]) -> dict:
  out = {}
  for r in records:
    if "dev" in r:
      main = {t: comparison.main_metric(m) for t, m in r["dev"].items()}
      out[str(r["step"])] = {"main": main, "mean": sum(main.values()) / len(main)}
  return out


def late_loss(records: list[dict], last: int, window: int = 500) -> float:
  losses = [r["loss"] for r in records if "loss" in r and r["step"] > last - window]
  return sum(losses) / len(losses)


settings = {}
for folder in sorted(sweep.glob("lr*_wu*")):
  workdir = folder / "mtl" / "seed0"
  if not (workdir / "results.json").exists():
    continue
  lr, warmup = folder.name[2:].split("_wu")
  records = history(workdir)
  wall = json.loads((workdir / "wall_seconds.json").read_text())["seconds"]
  settings[folder.name] = {"learning_rate": float(lr), "warmup_fraction": float(warmup),
                           "dev": dev_by_step(records), "train_loss_last_500": late_loss(records, 2000),
                           "wall_seconds": wall}
cola = {}
for workdir in sorted(sweep.glob("cola_1600_lr*")):
  if not (workdir / "results.json").exists():
    continue
  records = history(workdir)
  cola[workdir.name] = {
      "learning_rate": float(workdir.name.split("_lr")[1]),
      "dev_mcc": {str(r["step"]): r["dev"]["glue/cola"]["mcc"] for r in records if "dev" in r},
      "train_loss": {str(r["step"]): r["loss"] for r in records if "loss" in r}}
summary = {"code": commit, "arm": "mtl", "seed": 0, "total_steps": 2000,
           "scripts": ["docs/results/scripts/glue5_sweep.sh",
                       "docs/results/scripts/glue5_sweep_base.sh"],
           "settings": settings, "cola_alone": cola}
(repo / "docs/results/glue5_sweep.json").write_text(json.dumps(summary, indent=2))
for name, s in settings.items():
  steps = " | ".join(f"step {k}: " + " ".join(f"{v:.3f}" for v in d["main"].values())
                     + f" mean {d['mean']:.4f}" for k, d in s["dev"].items())
  print(f"{name}: {steps} | loss {s['train_loss_last_500']:.4f} | {s['wall_seconds']:.0f} s")
for name, c in cola.items():
  print(name, c["dev_mcc"], {k: round(v, 3) for k, v in c["train_loss"].items()})
