"""A comparison experiment: several arms (configs) trained one after another, one table at the end.

`camtl-experiment --experiment glue5_minilm --out DIR --seeds 0,1` runs every arm of the config
module's `experiment_arms(seeds)` as its own `camtl-train` process in DIR/<arm>, then writes
DIR/results.json, DIR/results.md and DIR/results.png. Each arm is an ordinary workdir, so:
  - a rerun skips an arm whose results.json exists and resumes a killed arm from its checkpoint;
  - an arm's own log, history.jsonl, sampling plot and results.txt sit in its folder.
A separate process per arm because JAX fixes its compilation-cache directory once per process and
a crash in one arm must not lose the others. All arms share DIR/compile_cache.

results.json: {"experiment", "command", "arms": {arm: {"results": {task: {metric: value}},
"mean": mean over tasks of the task's main (first) metric, "data_used": {task: fraction,
"overall"}, "wall_seconds", "seeds", "per_seed": [...]}}}. An arm with several seeds reports the
mean over seeds and, per task, the spread (min, max) of the main metric.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ArmRun:
  """One training run of the experiment: `arm` (the table row), its seed and the config string."""
  arm: str
  seed: int
  config: str                 # the --config value, e.g. 'glue5_minilm:mtl'
  overrides: tuple[str, ...] = ()  # extra --config.field=value flags of this run

  @property
  def folder(self) -> str:
    variant = "_".join(self.config.split(":")[2:]).replace("/", "_")  # single_task's task
    return f"{self.arm}/{variant + '/' if variant else ''}seed{self.seed}"


def planned_runs(experiment: str, seeds: Sequence[int], total_steps: int | None = None
                 ) -> list[ArmRun]:
  """The runs of `experiment`: a module of camtl_jax.configs exposing
  experiment_arms(seeds, total_steps) -> [(arm, seed, config, overrides)]."""
  module = importlib.import_module(f"camtl_jax.configs.{experiment}")
  if not hasattr(module, "experiment_arms"):
    raise ValueError(f"config {experiment!r} defines no experiment (no experiment_arms function)")
  return [ArmRun(*arm) for arm in module.experiment_arms(tuple(seeds), total_steps)]


def run_arm(run: ArmRun, out: Path, overrides: Sequence[str]) -> float:
  """Trains one run in out/<arm>/seed<S> unless it finished; returns the seconds it took now."""
  workdir = out / run.folder
  if (workdir / "results.json").exists():
    log.info("%s: finished earlier, skipped", run.folder)
    return 0.0
  command = [sys.executable, "-m", "camtl_jax.main", "--config", run.config,
             "--workdir", str(workdir), f"--config.seed={run.seed}",
             f"--config.compile_cache_dir={out / 'compile_cache'}", *run.overrides, *overrides]
  log.info("%s: %s", run.folder, " ".join(command))
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  with open(workdir / "camtl-train.log", "a", encoding="utf-8") as stream:
    finished = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, check=False)
  seconds = time.time() - start
  timing = workdir / "wall_seconds.json"
  spent = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
  timing.write_text(json.dumps({"seconds": spent + seconds}))
  if finished.returncode != 0 or not (workdir / "results.json").exists():
    raise RuntimeError(f"{run.folder} stopped (exit {finished.returncode}): "
                       f"{last_line(workdir / 'camtl-train.log')} (log: "
                       f"{workdir / 'camtl-train.log'}); rerun the same command to resume it")
  return seconds


def last_line(log_path: Path) -> str:
  """The last non-empty line of a run's log: its one-line error when it stopped on one."""
  lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
  lines = [line for line in lines if line]  # splitlines also splits the progress bar's \r
  return lines[-1] if lines else "(empty log)"


def main_metric(metrics: dict[str, float]) -> float:
  """The task's main metric: the first it reports (accuracy, F1, Pearson, MCC ...)."""
  return float(next(iter(metrics.values())))


def arm_summary(out: Path, runs: Sequence[ArmRun]) -> dict:
  """Mean over the seeds of one arm's finished runs (single-task arms merge their tasks)."""
  per_seed: dict[int, dict] = {}
  wall = 0.0
  for run in runs:
    workdir = out / run.folder
    result = json.loads((workdir / "results.json").read_text())
    merged = per_seed.setdefault(run.seed, {"results": {}, "data_used": {}, "steps": {}})
    merged["results"].update(result["results"])
    merged["data_used"].update({k: v for k, v in result["data_used"].items() if k != "overall"})
    merged["steps"][run.folder] = result["step"]
    timing = workdir / "wall_seconds.json"
    wall += json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
  seeds = sorted(per_seed)
  tasks = list(per_seed[seeds[0]]["results"])
  results, spread = {}, {}
  for task in tasks:
    metric_names = list(per_seed[seeds[0]]["results"][task])
    results[task] = {m: float(np.mean([per_seed[s]["results"][task][m] for s in seeds]))
                     for m in metric_names}
    mains = [main_metric(per_seed[s]["results"][task]) for s in seeds]
    spread[task] = {"min": float(min(mains)), "max": float(max(mains))}
  used = {task: float(np.mean([per_seed[s]["data_used"][task] for s in seeds])) for task in tasks}
  for s in seeds:
    per_seed[s]["mean"] = float(np.mean([main_metric(per_seed[s]["results"][t]) for t in tasks]))
  # One overall fraction needs one training set: only an arm whose runs share a config has it
  # (a single-task arm's tasks have different train sizes; their per-task fractions stand).
  same_config = len({r.config for r in runs}) == 1
  used["overall"] = float(np.mean([
      json.loads((out / r.folder / "results.json").read_text())["data_used"]["overall"]
      for r in runs])) if same_config else None
  return {"results": results, "mean": float(np.mean([per_seed[s]["mean"] for s in seeds])),
          "main_metric_spread": spread, "data_used": used, "wall_seconds": round(wall, 1),
          "seeds": seeds, "per_seed": [{"seed": s, **per_seed[s]} for s in seeds]}


def summarise(out: Path, runs: Sequence[ArmRun], experiment: str, command: str) -> dict:
  """results.json of the finished arms (an unfinished arm is listed under 'unfinished')."""
  arms: dict[str, list[ArmRun]] = {}
  for run in runs:
    arms.setdefault(run.arm, []).append(run)
  summary = {"experiment": experiment, "command": command, "arms": {}, "unfinished": []}
  for arm, arm_runs in arms.items():
    done = [r for r in arm_runs if (out / r.folder / "results.json").exists()]
    summary["unfinished"] += [r.folder for r in arm_runs if r not in done]
    if not done:
      continue
    # A single-task arm counts only when every task of a seed finished.
    seeds_done = {r.seed for r in arm_runs} - {r.seed for r in arm_runs if r not in done}
    done = [r for r in done if r.seed in seeds_done]
    if done:
      summary["arms"][arm] = arm_summary(out, done)
  return summary


def results_markdown(summary: dict) -> str:
  """The table of results.md: per arm, each task's main metric (seed spread) and the mean."""
  arms = summary["arms"]
  if not arms:
    return "No arm has finished yet.\n"
  tasks = list(next(iter(arms.values()))["results"])
  header = "| arm | seeds | " + " | ".join(tasks) + " | mean | data used | wall s |"
  lines = [f"# {summary['experiment']}", "", f"Command: `{summary['command']}`", "",
           "Main metric per task (RTE/SST-2 accuracy, MRPC F1, STS-B Pearson, CoLA MCC); "
           "with several seeds: mean [min, max].", "", header,
           "|" + "---|" * (len(tasks) + 5)]
  for arm, s in arms.items():
    cells = []
    for task in tasks:
      value = main_metric(s["results"][task]) if task in s["results"] else float("nan")
      low, high = s["main_metric_spread"][task]["min"], s["main_metric_spread"][task]["max"]
      cells.append(f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if len(s["seeds"]) > 1 else ""))
    overall = s["data_used"].get("overall")
    used = f"{overall:.1%}" if overall is not None else "see json"
    lines.append(f"| {arm} | {len(s['seeds'])} | " + " | ".join(cells)
                 + f" | {s['mean']:.4f} | {used} | {s['wall_seconds']:.0f} |")
  lines += ["", "Data used per task (fraction of its training rows ever selected):", ""]
  lines += [f"- {arm}: " + ", ".join(f"{t} {v:.1%}" for t, v in s["data_used"].items()
                                     if t != "overall" and v is not None)
            for arm, s in arms.items()]
  if summary["unfinished"]:
    lines += ["", "Unfinished runs: " + ", ".join(summary["unfinished"])]
  return "\n".join(lines) + "\n"


def plot_results(summary: dict, out_png: Path) -> None:
  """Per task and arm the dev main metric (bar = seed mean, whisker = seed min..max), and the
  fraction of each task's training data used."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  arms = summary["arms"]
  if not arms:
    return
  tasks = list(next(iter(arms.values()))["results"])
  fig, (ax_dev, ax_used) = plt.subplots(1, 2, figsize=(13, 4.5))
  width = 0.8 / len(arms)
  x = np.arange(len(tasks))
  for i, (arm, s) in enumerate(arms.items()):
    values = [main_metric(s["results"][t]) for t in tasks]
    low = [v - s["main_metric_spread"][t]["min"] for v, t in zip(values, tasks)]
    high = [s["main_metric_spread"][t]["max"] - v for v, t in zip(values, tasks)]
    ax_dev.bar(x + i * width, values, width, yerr=[low, high], capsize=2, label=arm)
    ax_used.bar(x + i * width, [s["data_used"][t] for t in tasks], width, label=arm)
  for ax, label in ((ax_dev, "dev main metric"), (ax_used, "fraction of train data used")):
    ax.set_xticks(x + 0.4 - width / 2, [t.split("/")[-1] for t in tasks])
    ax.set_xlabel("task")
    ax.set_ylabel(label)
    ax.legend(fontsize=7)
  ax_dev.set_title("Dev metric per task and arm (whiskers: seed min..max)")
  ax_used.set_title("Data used per task")
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)


def write_outputs(out: Path, summary: dict) -> None:
  (out / "results.json").write_text(json.dumps(summary, indent=2))
  (out / "results.md").write_text(results_markdown(summary))
  plot_results(summary, out / "results.png")


def run_experiment(experiment: str, out: Path, seeds: Sequence[int], overrides: Sequence[str],
                   command: str, arms: Sequence[str] = (), total_steps: int | None = None
                   ) -> dict:
  """Runs the (selected) arms in order, rewriting the summary after each; returns it."""
  runs = planned_runs(experiment, seeds, total_steps)
  if arms:
    unknown = set(arms) - {r.arm for r in runs}
    if unknown:
      raise ValueError(f"--arms {sorted(unknown)} not in {experiment}: "
                       f"{sorted({r.arm for r in runs})}")
    runs = [r for r in runs if r.arm in arms]
  out.mkdir(parents=True, exist_ok=True)
  os.environ.setdefault("PYTHONUNBUFFERED", "1")
  for run in runs:
    run_arm(run, out, overrides)
    write_outputs(out, summarise(out, runs, experiment, command))
  summary = summarise(out, runs, experiment, command)
  write_outputs(out, summary)
  return summary
