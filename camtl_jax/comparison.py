"""A comparison experiment: several arms (configs) trained one after another, one table at the end.

`camtl-experiment --experiment glue5_minilm --out DIR --seeds 0,1` runs every run of the config
module's `experiment_arms(seeds, total_steps, step_flops)` as its own process in
DIR/<arm>/[task/]seed<S>: `camtl-train`, or for a config 'hf:SPEC' HF transformers' recipe
(camtl_jax/perf/hf_finetune.py). Each run is an ordinary workdir, so a rerun skips a finished run
and resumes a killed one. A separate process per run because JAX fixes its compilation-cache
directory once per process and a crash in one run must not lose the others.

Records. When every run of an arm and seed has finished, DIR/records/<arm>/seed<S>.json holds
what a reader needs of it (`arm_record`): metrics and task scores, the selected step, the
commands, config and overrides, sampler and options, rows seen and epochs, the fraction of the
training rows used with its denominator, FLOPs (per step x steps), the parameters stored to serve
all the tasks, wall seconds, the machine and the code's commit. A folder of committed records
(`committed`, e.g. docs/results/glue5_minilm) makes the command skip those arms and seeds, so a
plan finishes across sittings and machines; the tables are built from records only.

A task's score is one rule everywhere: `task_score` = metrics.main_score, the mean of the task's
benchmark metrics (MRPC F1 and accuracy, STS-B Pearson and Spearman, one metric elsewhere), the
rule that selects checkpoints (train.py) and scores adaptation. An arm's score is the mean of its
task scores. results.json: {"experiment", "command", "arms": {arm: arm_summary}, "missing",
"unfinished"}.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from camtl_jax.tasks.base import Task

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"
# The module each kind of run starts (python -m MODULE --config SPEC --workdir DIR ...).
RUNNERS = {"camtl-train": "camtl_jax.main", "hf": "camtl_jax.cli.hf_finetune"}
REFERENCE_ARM = "camtl_mtu"  # the arm the paired differences are taken against


@dataclasses.dataclass(frozen=True)
class ArmRun:
  """One training run of the experiment: `arm` (the table row), its seed and the config string
  ('hf:SPEC' runs SPEC's task with HF transformers' recipe instead of camtl-train)."""
  arm: str
  seed: int
  config: str                 # the --config value, e.g. 'glue5_minilm:mtl'
  overrides: tuple[str, ...] = ()  # extra --config.field=value flags of this run

  @property
  def runner(self) -> str:
    return "hf" if self.config.startswith(HF_PREFIX) else "camtl-train"

  @property
  def spec(self) -> str:
    """The config spec without the runner prefix."""
    return self.config[len(HF_PREFIX):] if self.runner == "hf" else self.config

  @property
  def folder(self) -> str:
    variant = "_".join(self.spec.split(":")[2:]).replace("/", "_")  # single_task's task
    return f"{self.arm}/{variant + '/' if variant else ''}seed{self.seed}"


@dataclasses.dataclass
class Measures:
  """What the records need beyond the workdirs, by config spec (camtl-experiment measures them:
  XLA's FLOPs of one compiled train step, the parameter count; tests pass fakes)."""
  step_flops: Callable[[str], float] | None = None
  parameters: Callable[[str], int] | None = None
  train_rows: Callable[[Task, str], int] | None = None  # (task, data_dir) -> training rows


def planned_runs(experiment: str, seeds: Sequence[int], total_steps: int | None = None,
                 step_flops: Callable[[str], float] | None = None) -> list[ArmRun]:
  """The runs of `experiment`: a module of camtl_jax.configs exposing
  experiment_arms(seeds, total_steps, step_flops) -> [(arm, seed, config, overrides)]."""
  module = importlib.import_module(f"camtl_jax.configs.{experiment}")
  if not hasattr(module, "experiment_arms"):
    raise ValueError(f"config {experiment!r} defines no experiment (no experiment_arms function)")
  return [ArmRun(*arm) for arm in module.experiment_arms(tuple(seeds), total_steps, step_flops)]


def record_path(folder: Path, arm: str, seed: int) -> Path:
  """Where the record of one arm and seed lives under a records folder."""
  return Path(folder) / arm / f"seed{seed}.json"


def run_command(run: ArmRun, out: Path, overrides: Sequence[str]) -> list[str]:
  """The command line of one run."""
  cache = ([f"--config.compile_cache_dir={out / 'compile_cache'}"]
           if run.runner == "camtl-train" else [])
  return [sys.executable, "-m", RUNNERS[run.runner], "--config", run.spec,
          "--workdir", str(out / run.folder), f"--config.seed={run.seed}", *cache,
          *run.overrides, *overrides]


def run_arm(run: ArmRun, out: Path, overrides: Sequence[str]) -> float:
  """Trains one run in out/<arm>/seed<S> unless it finished; returns the seconds it took now."""
  workdir = out / run.folder
  if (workdir / "results.json").exists():
    log.info("%s: finished earlier, skipped", run.folder)
    return 0.0
  command = run_command(run, out, overrides)
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


def task_score(task: Task, metrics: Mapping[str, float]) -> float:
  """THE score of a task's dev metrics (metrics.main_score: the mean of its benchmark metrics),
  the rule checkpoint selection and adaptation use."""
  from camtl_jax.tasks import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  return metrics_lib.main_score(task, metrics)


def score_name(task: Task) -> str:
  """What task_score averages for the task, in words."""
  from camtl_jax.tasks import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  return metrics_lib.score_name(task)


def run_tasks(workdir: Path, names: Sequence[str]) -> dict[str, Task]:
  """The tasks a finished run trained on, by name: from its tasks.json (a spec file's tasks
  included, without the spec file), else the registry's (the HF recipe's workdirs)."""
  from camtl_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from camtl_jax.tasks import registry  # pylint: disable=import-outside-toplevel
  if (workdir / workdir_lib.TASKS_FILE).is_file():
    return {task.name: task for task in workdir_lib.load_task_records(workdir)[0]}
  return {name: registry.get_task(name) for name in names}


# ------------------------------------------------------------------------------------------------
# Records of finished arms


def code_version() -> dict:
  """The commit of the code that runs, and its tracked files under camtl_jax/ and configs/
  that differ from it (those files are taken from another commit or are being edited)."""
  root = Path(__file__).resolve().parents[1]

  def git(*args):
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() if done.returncode == 0 else None
  commit = git("rev-parse", "HEAD")
  changed = git("diff", "HEAD", "--name-only", "--", "camtl_jax", "configs")
  return {"commit": commit, "changed_files": changed.split() if changed else []}


def machine() -> dict:
  """What ran it: the CPU model, the number of CPUs, the system."""
  model = platform.processor() or ""
  cpuinfo = Path("/proc/cpuinfo")
  if cpuinfo.exists():
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")]
    model = names[0] if names else model
  return {"cpu": model, "cpus": os.cpu_count(), "system": platform.platform()}


def _rows_seen(workdir: Path, batch_size: int) -> dict[str, float]:
  """Training rows per task of a camtl-train run: each log interval's task shares of the
  selections x its steps x b (history.jsonl)."""
  from camtl_jax import reporting  # pylint: disable=import-outside-toplevel
  seen: dict[str, float] = {}
  previous = 0
  for record in reporting.train_records(workdir / "history.jsonl"):
    for task, share in record["task_share"].items():
      seen[task] = seen.get(task, 0.0) + share * (record["step"] - previous) * batch_size
    previous = record["step"]
  return {task: round(rows) for task, rows in seen.items()}


SETTINGS = ("sampler", "mtu_uncertainty", "mtu_min_share", "mtu_max_share", "batch_size",
            "total_steps", "learning_rate", "warmup_fraction", "frozen_layers", "max_length",
            "max_eval_examples", "eval_every")


def _run_part(run: ArmRun, out: Path, overrides: Sequence[str], measures: Measures) -> dict:
  """What one finished run adds to its arm's record."""
  workdir = out / run.folder
  result = json.loads((workdir / "results.json").read_text())
  config = json.loads((workdir / "config.json").read_text())
  timing = workdir / "wall_seconds.json"
  part = {"folder": run.folder, "command": " ".join(run_command(run, out, overrides)),
          "results": result["results"], "step": result["step"],
          "data_used": {k: v for k, v in result["data_used"].items() if k != "overall"},
          "wall_seconds": json.loads(timing.read_text())["seconds"] if timing.exists() else None}
  tasks = run_tasks(workdir, list(result["results"]))
  part["task_scores"] = {t: task_score(tasks[t], m) for t, m in result["results"].items()}
  part["score_names"] = {t: score_name(tasks[t]) for t in result["results"]}
  if run.runner == "hf":
    part |= {"rows_seen": result["rows_seen"], "train_rows": result["train_rows"],
             "steps": result["epochs"][-1]["step"], "flops": result["flops"],
             "parameters": result["parameters"],
             "selected": f"the best dev epoch of {len(result['epochs'])}, per task",
             "settings": {"recipe": result["recipe"], "max_length": config["max_length"],
                          "max_eval_examples": config["max_eval_examples"],
                          "torch": result["torch"], "transformers": result["transformers"]}}
    return part
  per_step = measures.step_flops(run.spec) if measures.step_flops else None
  from camtl_jax import experiment  # pylint: disable=import-outside-toplevel
  data_dir = config["data_dir"] or experiment.demo_data_dir(workdir)  # as training read it
  rows = measures.train_rows if measures.train_rows else (lambda task, data_dir: None)
  part |= {"rows_seen": _rows_seen(workdir, config["batch_size"]),
           "train_rows": {t: rows(tasks[t], data_dir) for t in result["results"]},
           "steps": config["total_steps"], "flops_per_step": per_step,
           "flops": per_step * config["total_steps"] if per_step else None,
           "parameters": measures.parameters(run.spec) if measures.parameters else None,
           "selected": f"the best dev score of the evaluations every {config['eval_every']} "
                       f"steps (step {result['step']} of {config['total_steps']})",
           "settings": {k: config.get(k) for k in SETTINGS}
           | {"conditioning": config["model"]["conditioning"]}}
  return part


def _sum(values) -> float | None:
  values = list(values)
  return None if any(v is None for v in values) else float(sum(values))


def arm_record(arm: str, seed: int, runs: Sequence[ArmRun], out: Path,
               overrides: Sequence[str], measures: Measures) -> dict:
  """The record of one arm and seed whose runs have all finished (module docstring)."""
  parts = [_run_part(r, out, overrides, measures) for r in runs]
  merge = lambda key: {k: v for p in parts for k, v in p[key].items()}  # noqa: E731
  results, seen, train_rows = merge("results"), merge("rows_seen"), merge("train_rows")
  scores = merge("task_scores")
  known = all(train_rows.get(t) for t in results)
  return {
      "arm": arm, "seed": seed, "runner": runs[0].runner,
      "configs": [r.config for r in runs], "overrides": sorted({o for r in runs
                                                               for o in r.overrides}),
      "global_overrides": list(overrides), "commands": [p["command"] for p in parts],
      "results": results, "task_scores": scores, "score_names": merge("score_names"),
      "score": float(np.mean(list(scores.values()))),
      "selected_step": {p["folder"]: p["step"] for p in parts},
      "selected": parts[0]["selected"], "settings": parts[0]["settings"],
      "steps": {p["folder"]: p["steps"] for p in parts},
      "rows_seen": seen, "rows_seen_total": int(sum(seen.values())),
      "train_rows": train_rows,
      "epochs": ({t: seen.get(t, 0) / train_rows[t] for t in results} if known else None),
      "epochs_total": sum(seen.values()) / sum(train_rows.values()) if known else None,
      "data_used": merge("data_used"),
      "data_used_total": (sum(merge("data_used")[t] * train_rows[t] for t in results)
                          / sum(train_rows.values()) if known else None),
      "flops_per_step": {p["folder"]: p.get("flops_per_step") for p in parts},
      "flops": _sum(p["flops"] for p in parts),
      "flops_counted_by": ("torch.utils.flop_counter over the real batches" if
                           runs[0].runner == "hf" else
                           "XLA cost_analysis of the compiled train step at max_length x steps"),
      "parameters_to_serve": _sum(p["parameters"] for p in parts),
      "wall_seconds": _sum(p["wall_seconds"] for p in parts),
      "machine": machine(), "code": code_version(),
  }


def write_finished_records(out: Path, runs: Sequence[ArmRun], overrides: Sequence[str],
                           measures: Measures, committed: Path | None = None) -> list[Path]:
  """out/records/<arm>/seed<S>.json for every arm and seed whose runs all finished in out and
  that has no record yet (in out or committed). Returns the paths written."""
  written = []
  for (arm, seed), group in _groups(runs).items():
    path = record_path(out / "records", arm, seed)
    if path.exists() or (committed and record_path(committed, arm, seed).exists()):
      continue
    if all((out / r.folder / "results.json").exists() for r in group):
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(arm_record(arm, seed, group, out, overrides, measures),
                                 indent=1) + "\n")
      written.append(path)
  return written


def _groups(runs: Sequence[ArmRun]) -> dict[tuple[str, int], list[ArmRun]]:
  groups: dict[tuple[str, int], list[ArmRun]] = {}
  for run in runs:
    groups.setdefault((run.arm, run.seed), []).append(run)
  return groups


def load_records(runs: Sequence[ArmRun], folders: Sequence[Path]) -> dict:
  """{(arm, seed): record} of the planned arms and seeds found in the folders (the first wins)."""
  records = {}
  for key in _groups(runs):
    for folder in folders:
      path = record_path(folder, *key)
      if path.exists():
        records[key] = json.loads(path.read_text())
        break
  return records


# ------------------------------------------------------------------------------------------------
# Summary and tables


def _spread(values: Sequence[float]) -> dict[str, float]:
  return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}


def _mean_or_none(values):
  values = list(values)
  return None if not values or any(v is None for v in values) else float(np.mean(values))


def arm_summary(records: Sequence[dict]) -> dict:
  """Mean and [min, max] over the seeds of one arm's records."""
  records = sorted(records, key=lambda r: r["seed"])
  tasks = list(records[0]["results"])
  return {
      "seeds": [r["seed"] for r in records],
      "task_scores": {t: _spread([r["task_scores"][t] for r in records]) for t in tasks},
      "score_names": records[0].get("score_names") or {},
      "score": _spread([r["score"] for r in records]),
      "per_seed_score": {r["seed"]: r["score"] for r in records},
      "results": {t: {m: float(np.mean([r["results"][t][m] for r in records]))
                      for m in records[0]["results"][t]} for t in tasks},
      # Rows per task over the seeds that recorded them (older records may lack some).
      "rows_seen": {t: _mean_or_none([r["rows_seen"][t] for r in records if r["rows_seen"].get(t)
                                      is not None]) for t in tasks},
      "rows_seen_seeds": {t: sum(r["rows_seen"].get(t) is not None for r in records)
                          for t in tasks},
      "rows_seen_total": _mean_or_none(r["rows_seen_total"] for r in records),
      "epochs_total": _mean_or_none(r["epochs_total"] for r in records),
      "data_used": {t: _mean_or_none(r["data_used"].get(t) for r in records) for t in tasks},
      "data_used_total": _mean_or_none(r["data_used_total"] for r in records),
      "train_rows_total": (sum(records[0]["train_rows"].values())
                           if all(records[0]["train_rows"].values()) else None),
      "flops": _mean_or_none(r["flops"] for r in records),
      "parameters_to_serve": records[0]["parameters_to_serve"],
      "wall_seconds": [r["wall_seconds"] for r in records],
      "settings": records[0]["settings"], "selected": records[0]["selected"],
      "runner": records[0]["runner"],
      "commits": sorted({str((r.get("code") or {}).get("commit")) for r in records}),
  }


def paired_differences(records: Mapping[tuple[str, int], dict], reference: str = REFERENCE_ARM
                       ) -> dict[str, dict]:
  """Per baseline arm: reference score - its score at each seed both have, with mean/min/max."""
  ref = {seed: r["score"] for (arm, seed), r in records.items() if arm == reference}
  out: dict[str, dict] = {}
  for (arm, seed), r in sorted(records.items()):
    if arm != reference and seed in ref:
      out.setdefault(arm, {"per_seed": {}})["per_seed"][seed] = ref[seed] - r["score"]
  for diff in out.values():
    diff |= _spread(list(diff["per_seed"].values()))
  return out


def summarise(out: Path, runs: Sequence[ArmRun], experiment: str, command: str,
              committed: Path | None = None) -> dict:
  """results.json from the records (committed first, then out/records)."""
  folders = ([committed] if committed else []) + [out / "records"]
  records = load_records(runs, folders)
  by_arm: dict[str, list[dict]] = {}
  for (arm, _), record in records.items():
    by_arm.setdefault(arm, []).append(record)
  order = list(dict.fromkeys(r.arm for r in runs))
  missing = [f"{arm} seed {seed}" for (arm, seed) in _groups(runs) if (arm, seed) not in records]
  return {"experiment": experiment, "command": command,
          "arms": {arm: arm_summary(by_arm[arm]) for arm in order if arm in by_arm},
          "paired_difference": paired_differences(records),
          "missing": missing,
          "unfinished": [r.folder for r in runs if (r.arm, r.seed) not in records
                         and not (out / r.folder / "results.json").exists()]}


def _cell(spread: Mapping[str, float], seeds: int, digits: int = 3) -> str:
  text = f"{spread['mean']:.{digits}f}"
  return text + (f" [{spread['min']:.{digits}f}, {spread['max']:.{digits}f}]" if seeds > 1 else "")


def _count(value, unit: str = "") -> str:
  if value is None:
    return "n/a"
  for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(value) >= scale:
      return f"{value / scale:.3g}{suffix}{unit}"
  return f"{value:.3g}{unit}"


def _settings_text(s: Mapping) -> str:
  settings = s["settings"]
  if s["runner"] == "hf":
    recipe = settings["recipe"]
    return (f"HF BertForSequenceClassification, {recipe['epochs']} epochs, lr "
            f"{recipe['learning_rate']:g}, batch {recipe['batch_size']}, dynamic padding")
  text = f"{settings['conditioning']}, {settings['sampler']}"
  if settings["sampler"] == "mt_uncertainty":
    text += (f" (u {settings['mtu_uncertainty']}, floor {settings['mtu_min_share']:g}, cap "
             f"{settings['mtu_max_share']:g})")
  return text + f", {settings['total_steps']} steps of b = {settings['batch_size']}"


def _score_names(arms: Mapping[str, dict], tasks: Sequence[str]) -> dict[str, str]:
  """What each task's score averages, as the records say (records written before they said it:
  the registry's task of that name)."""
  from camtl_jax.tasks import registry  # pylint: disable=import-outside-toplevel
  names = {t: n for arm in arms.values() for t, n in arm.get("score_names", {}).items()}
  return {t: names.get(t) or score_name(registry.get_task(t)) for t in tasks}


def results_markdown(summary: dict) -> str:
  """The tables of results.md: scores, what each arm spent, and how each arm ran."""
  arms = summary["arms"]
  if not arms:
    return "No arm has finished yet.\n" + _missing(summary)
  tasks = list(next(iter(arms.values()))["task_scores"])
  short = [t.split("/")[-1] for t in tasks]
  names = _score_names(arms, tasks)
  diffs = summary.get("paired_difference", {})
  lines = [f"# {summary['experiment']}", "", f"Command: `{summary['command']}`", "",
           "Task score = `metrics.main_score`, the rule that selects checkpoints and scores "
           "adaptation: " + "; ".join(f"{t.split('/')[-1]} {names[t]}" for t in tasks)
           + f". Score = the mean of the {len(tasks)} task scores. With several seeds: mean "
           "[min, max]. Paired: camtl_mtu's score minus the arm's, seed by seed, mean [min, max].",
           "",
           "| arm | seeds | " + " | ".join(short) + " | score | camtl_mtu - arm (paired) |",
           "|" + "---|" * (len(tasks) + 4)]
  for arm, s in arms.items():
    n = len(s["seeds"])
    cells = [_cell(s["task_scores"][t], n) for t in tasks]
    diff = diffs.get(arm)
    paired = (f"{_cell(diff, len(diff['per_seed']), 4)} (n = {len(diff['per_seed'])})"
              if diff else "")
    lines.append(f"| {arm} | {n} | " + " | ".join(cells) + f" | {_cell(s['score'], n, 4)} | "
                 f"{paired} |")
  lines += ["", "What each arm spent (per seed, mean over seeds): parameters stored to serve all "
            "five tasks; training rows seen (epochs of the five training sets); the fraction of "
            "the training rows ever used (of the denominator); CoLA training rows seen; FLOPs "
            "(XLA's count of the compiled step at max_length x steps; hf: counted over the real, "
            "dynamically padded batches); wall seconds per seed.", "",
            "| arm | params (5 tasks) | rows seen (epochs) | data used (of rows) | CoLA rows "
            "seen | FLOPs | wall s per seed |", "|---|---|---|---|---|---|---|"]
  for arm, s in arms.items():
    epochs = f" ({s['epochs_total']:.2f})" if s["epochs_total"] is not None else ""
    used = (f"{s['data_used_total']:.1%} (of {s['train_rows_total']:,})"
            if s["data_used_total"] is not None else "n/a")
    cola = s["rows_seen"].get("glue/cola")
    cola_seeds = s.get("rows_seen_seeds", {}).get("glue/cola", len(s["seeds"]))
    partial = f" ({cola_seeds} of {len(s['seeds'])} seeds)" if cola_seeds < len(s["seeds"]) else ""
    wall = ", ".join("n/a" if w is None else f"{w:.0f}" for w in s["wall_seconds"])
    lines.append(f"| {arm} | {_count(s['parameters_to_serve'])} | "
                 f"{_count(s['rows_seen_total'])}{epochs} | {used} | "
                 f"{'n/a' if cola is None else f'{cola:,.0f}{partial}'} | {_count(s['flops'])} | "
                 f"{wall} |")
  lines += ["", "| arm | sampler and options | checkpoint | commit(s) |", "|---|---|---|---|"]
  lines += [f"| {arm} | {_settings_text(s)} | {s['selected']} | {', '.join(s['commits'])} |"
            for arm, s in arms.items()]
  return "\n".join(lines) + "\n" + _missing(summary)


def _missing(summary: dict) -> str:
  if not summary.get("missing"):
    return ""
  return "\nNot yet finished (no record): " + ", ".join(summary["missing"]) + "\n"


def plot_results(summary: dict, out_png: Path) -> None:
  """Per task and arm the dev task score (bar = seed mean, whisker = seed min..max)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  arms = summary["arms"]
  if not arms:
    return
  tasks = list(next(iter(arms.values()))["task_scores"])
  fig, ax = plt.subplots(1, 1, figsize=(11, 4.5))
  width = 0.8 / len(arms)
  x = np.arange(len(tasks))
  for i, (arm, s) in enumerate(arms.items()):
    spread = [s["task_scores"][t] for t in tasks]
    values = [v["mean"] for v in spread]
    err = [[v["mean"] - v["min"] for v in spread], [v["max"] - v["mean"] for v in spread]]
    ax.bar(x + i * width, values, width, yerr=err, capsize=2, label=arm)
  ax.set_xticks(x + 0.4 - width / 2, [t.split("/")[-1] for t in tasks])
  ax.set_xlabel("task")
  ax.set_ylabel("dev task score (metrics.main_score)")
  ax.legend(fontsize=7)
  ax.set_title("Dev task score per task and arm (whiskers: seed min..max)")
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)


def write_outputs(out: Path, summary: dict) -> None:
  (out / "results.json").write_text(json.dumps(summary, indent=2))
  (out / "results.md").write_text(results_markdown(summary))
  plot_results(summary, out / "results.png")


def portable(record: dict, out: Path | str) -> dict:
  """The record with this machine's paths in its commands and overrides replaced by names: the
  experiment folder by OUT, the data folder by DATA, the Python executable by python."""
  text = json.dumps(record)
  words = [w for c in record.get("commands", []) for w in c.split(" ")]
  words += record.get("global_overrides", [])
  for command in record.get("commands", []):
    if command.startswith("/"):  # an absolute path to python
      text = text.replace(json.dumps(command.split(" ")[0])[1:-1] + " ", "python ")
  for word in words:
    if word.startswith("--config.data_dir="):
      text = text.replace(json.dumps(word.split("=", 1)[1])[1:-1], "DATA")
  return json.loads(text.replace(json.dumps(str(out))[1:-1], "OUT"))


def collect(out: Path, runs: Sequence[ArmRun], committed: Path, experiment: str, command: str
            ) -> list[Path]:
  """Copies out's records (portable: no paths of this machine) and step_flops.json's new entries
  that committed lacks into it and writes committed/results.md from the committed records;
  trains nothing. Returns the new files."""
  new = []
  for (arm, seed) in _groups(runs):
    source, target = record_path(out / "records", arm, seed), record_path(committed, arm, seed)
    if source.exists() and not target.exists():
      target.parent.mkdir(parents=True, exist_ok=True)
      record = portable(json.loads(source.read_text()), out)
      target.write_text(json.dumps(record, indent=1) + "\n")
      new.append(target)
  flops, known = out / "step_flops.json", committed / "step_flops.json"
  if flops.exists():
    merged = json.loads(known.read_text()) if known.exists() else {}
    merged = json.loads(flops.read_text()) | merged  # a committed value stays
    known.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
  summary = summarise(committed / "none", runs, experiment, command, committed)
  tables = results_markdown(summary)
  (committed / "results.md").write_text(tables)
  refresh_tables(committed.parent / f"{committed.name}.md", tables)
  return new


TABLES_START, TABLES_END = "<!-- tables: camtl-experiment --collect -->", "<!-- /tables -->"


def refresh_tables(document: Path, tables: str) -> None:
  """Replaces the text between TABLES_START and TABLES_END in a results document (if it has
  them) by the tables, less their title and command lines."""
  if not document.exists():
    return
  text = document.read_text()
  if TABLES_START not in text or TABLES_END not in text:
    return
  body = tables[tables.index("Task score = "):] if "Task score = " in tables else tables
  head, rest = text.split(TABLES_START, 1)
  document.write_text(f"{head}{TABLES_START}\n{body}{TABLES_END}{rest.split(TABLES_END, 1)[1]}")


def run_experiment(experiment: str, out: Path, seeds: Sequence[int], overrides: Sequence[str],
                   command: str, arms: Sequence[str] = (), total_steps: int | None = None,
                   measures: Measures | None = None, committed: Path | None = None) -> dict:
  """Runs the (selected) arms in order, skipping arms and seeds with a committed record, writing
  each finished arm's record and rewriting the summary after each run; returns the summary."""
  measures = measures or Measures()
  runs = planned_runs(experiment, seeds, total_steps)
  if not arms or set(arms) - {r.arm for r in runs}:  # compute-matched arms wanted: FLOPs needed
    runs = planned_runs(experiment, seeds, total_steps, measures.step_flops)
  if arms:
    unknown = set(arms) - {r.arm for r in runs}
    if unknown:
      raise ValueError(f"--arms {sorted(unknown)} not in {experiment}: "
                       f"{sorted({r.arm for r in runs})}")
    runs = [r for r in runs if r.arm in arms]
  out.mkdir(parents=True, exist_ok=True)
  os.environ.setdefault("PYTHONUNBUFFERED", "1")
  for run in runs:
    if committed and record_path(committed, run.arm, run.seed).exists():
      log.info("%s: recorded in %s, skipped", run.folder, committed)
      continue
    run_arm(run, out, overrides)
    for path in write_finished_records(out, runs, overrides, measures, committed):
      log.info("record written: %s", path)
    write_outputs(out, summarise(out, runs, experiment, command, committed))
  summary = summarise(out, runs, experiment, command, committed)
  write_outputs(out, summary)
  return summary
