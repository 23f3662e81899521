"""Progress bar, TensorBoard scalars, the sampling-share plot and the results table (process 0
only).

Step metrics arrive as device arrays of sums and counts; `Reporter.log` reduces them on the host
once per log interval (one device->host transfer per interval, not per step).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from camtl_jax import atomic

log = logging.getLogger(__name__)


def reduce_metrics(history: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Sums every metric over steps (all step metrics are sums or counts)."""
  fetched = jax.device_get(list(history))
  return {k: np.sum([m[k] for m in fetched], axis=0) for k in fetched[0]}


def _summary_writer_class():
  """tensorboardX.SummaryWriter, imported without PyTorch: tensorboardX imports torch when it is
  installed (only to accept torch tensors; we log Python floats), 1.4 s of every run's start.
  A process that already imported torch keeps it."""
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    return SummaryWriter
  sys.modules["torch"] = None  # makes `import torch` raise ImportError, for this import only
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class Reporter:
  """Writes progress (tqdm), TensorBoard scalars and a JSON-lines history under WORKDIR."""

  # The bar follows finished steps: every PROGRESS_EVERY steps it waits for the step dispatched
  # IN_FLIGHT steps earlier, so the device always has work queued (no per-step host sync).
  PROGRESS_EVERY = 5
  IN_FLIGHT = 2

  def __init__(self, workdir: Path, task_names: Sequence[str], total_steps: int, start_step: int,
               examples_per_step: int, enabled: bool = True):
    self.enabled = enabled
    self.task_names = list(task_names)
    self.examples_per_step = examples_per_step
    self.start_step = start_step
    self.history_path = workdir / "history.jsonl"
    self.writer = self.bar = None
    self._in_flight: list[tuple[int, Any]] = []
    self._logging = contextlib.ExitStack()
    if enabled:
      SummaryWriter = _summary_writer_class()  # pylint: disable=invalid-name
      from tqdm import tqdm
      from tqdm.contrib.logging import logging_redirect_tqdm
      truncate_history(self.history_path, start_step)
      self.writer = SummaryWriter(str(workdir / "tensorboard"))
      self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
      # While the bar is shown, log lines ("compiling the train step ...") are written above it
      # (tqdm.write) instead of onto the bar's own line.
      self._logging.enter_context(logging_redirect_tqdm())
    self._last = (start_step, time.perf_counter())

  def log_train(self, step: int, sums: dict[str, np.ndarray], learning_rate: float) -> dict:
    """Reduces summed metrics over the last interval, writes scalars, returns the record."""
    steps = max(float(sums["steps"]), 1.0)
    count = np.maximum(sums["task_count"], 1)
    record = {
        "step": step, "loss": float(sums["loss"] / steps), "lr": learning_rate,
        "grad_norm": float(sums["grad_norm"] / steps), "skipped_steps": int(sums["skipped"]),
        "task_loss": dict(zip(self.task_names, (sums["task_loss"] / count).tolist())),
        "task_share": dict(zip(self.task_names, (
            sums["task_count"] / max(sums["task_count"].sum(), 1)).tolist())),
        "task_uncertainty": dict(zip(self.task_names, (
            sums["u_sum"] / np.maximum(sums["u_count"], 1)).tolist())),
    }
    last_step, last_time = self._last
    now = time.perf_counter()
    rate = (step - last_step) / max(now - last_time, 1e-9)
    self._last = (step, now)
    record["steps_per_s"] = rate
    record["examples_per_s"] = rate * self.examples_per_step
    if self.enabled:
      self._write(step, record)
      self.bar.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{record['examples_per_s']:.1f}")
    return record

  def advance(self, step: int, metrics: Any) -> None:
    """Records that `step` was dispatched (its metrics arrays); moves the bar to the last step
    known to have finished."""
    if not self.enabled:
      return
    self._in_flight.append((step, metrics))
    if step % self.PROGRESS_EVERY or len(self._in_flight) <= self.IN_FLIGHT:
      return
    finished = self._in_flight[-self.IN_FLIGHT - 1]
    del self._in_flight[:-self.IN_FLIGHT]
    jax.block_until_ready(finished[1]["steps"])
    self.bar.update(finished[0] - self.bar.n)

  def timed_eval(self, step: int, evaluate: Any) -> tuple[dict, float]:
    """Runs evaluate() -> (results, score), says so before and after, and logs the results."""
    if self.enabled:
      self.bar.write(f"step {step}: evaluating on the dev sets ...")
    start = time.perf_counter()
    results, score = evaluate()
    if self.enabled:
      mains = ", ".join(f"{task} {next(iter(m.values())):.4f}" for task, m in results.items() if m)
      self.bar.write(f"step {step}: dev score {score:.4f} ({mains}) in "
                     f"{time.perf_counter() - start:.0f} s")
    self.log_eval(step, results, score)
    self._last = (self._last[0], self._last[1] + time.perf_counter() - start)  # not train time
    return results, score

  def _write(self, step: int, record: dict) -> None:
    for key in ("loss", "lr", "grad_norm", "skipped_steps", "steps_per_s", "examples_per_s"):
      self.writer.add_scalar(f"train/{key}", record[key], step)
    for group in ("task_loss", "task_share", "task_uncertainty"):
      for name, value in record[group].items():
        self.writer.add_scalar(f"{group}/{name}", value, step)
    with self.history_path.open("a") as f:
      f.write(json.dumps(finite_or_null(record), allow_nan=False) + "\n")

  def log_eval(self, step: int, results: dict[str, dict[str, float]], score: float) -> None:
    if not self.enabled:
      return
    for task, metrics in results.items():
      for name, value in metrics.items():
        self.writer.add_scalar(f"dev/{task}/{name}", value, step)
    self.writer.add_scalar("dev/aggregate", score, step)
    with self.history_path.open("a") as f:
      f.write(json.dumps(finite_or_null({"step": step, "dev": results, "dev_score": score}),
                         allow_nan=False) + "\n")
    self.writer.flush()

  def close(self) -> None:
    """Moves the bar to the last dispatched step once it has finished (advance follows finished
    steps IN_FLIGHT behind), then closes the bar, the logging redirection and the writer."""
    if self.enabled:
      if self._in_flight:
        step, metrics = self._in_flight[-1]
        jax.block_until_ready(metrics["steps"])
        self.bar.update(step - self.bar.n)
        self._in_flight.clear()
      self.bar.close()
      self._logging.close()
      self.writer.close()


def finite_or_null(value: Any) -> Any:
  """NaN / Inf -> None throughout a JSON-able record, so history.jsonl stays standard JSON."""
  if isinstance(value, dict):
    return {k: finite_or_null(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [finite_or_null(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def truncate_history(path: Path, step: int) -> None:
  """Drops history records after `step`: a run killed after logging but before its checkpoint
  re-runs those steps on resume, and would otherwise log them twice. A torn last line (a crash or
  a full disk during its write) is dropped with a warning: it was written after the newest
  checkpoint, whose step the resumed run logs again. Rewritten atomically."""
  if not path.exists():
    return
  kept = [line for line in read_history_lines(path, drop_torn_end=True)
          if json.loads(line).get("step", 0) <= step]
  atomic.write_text(path, "".join(line + "\n" for line in kept))


def read_history_lines(path: Path, drop_torn_end: bool = False) -> list[str]:
  """The non-blank lines of a history.jsonl, each checked to be JSON. A line that is not: a
  ValueError naming the file and line, except a torn last line with drop_torn_end (dropped, with
  a warning naming the file)."""
  lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
  for n, (i, line) in enumerate(lines):
    try:
      json.loads(line)
    except json.JSONDecodeError as e:
      if drop_torn_end and n == len(lines) - 1:
        log.warning("%s, line %d: dropping a half-written last record (%s): %r", path, i, e.msg,
                    line[:80])
        return [text for _, text in lines[:-1]]
      raise ValueError(f"{path}, line {i}: not a JSON record ({e.msg} at column {e.colno})"
                       ) from None
  return [text for _, text in lines]


def train_records(history_path: Path) -> list[dict]:
  """The train-interval records of a history.jsonl (evaluation records left out)."""
  records = [json.loads(line) for line in read_history_lines(history_path, drop_torn_end=True)]
  return [r for r in records if "task_share" in r]


# The log axis of 1 - u cannot show 0: values below this floor (u = 1 to float precision) are drawn
# at it, with their own marker and a note, not as if they were real dips.
CERTAINTY_FLOOR = 1e-6


def certainty(records: Sequence[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
  """(1 - u of a task per train record, NaN where u was not finite; bool: below CERTAINTY_FLOOR),
  u being the task's candidates' mean uncertainty in that log interval."""
  u = np.array([np.nan if r["task_uncertainty"][name] is None else r["task_uncertainty"][name]
                for r in records], float)
  values = 1.0 - u
  return values, values < CERTAINTY_FLOOR


def plot_sampling(history_path: Path, out_png: Path) -> dict[str, int]:
  """PNG: per-task share of the selected examples over training and, for MT-U (samplers that
  score candidates), the candidates' mean certainty 1 - u (u: their mean uncertainty) on a log
  axis, where the small differences that decide the top-b cut are visible (u itself sits near 1
  for every task). Returns, per task, how many points were below CERTAINTY_FLOOR (drawn at the
  floor with a triangle marker, and said so in the panel's title)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  records = train_records(history_path)
  if not records:
    return {}
  steps = np.array([r["step"] for r in records])
  names = list(records[0]["task_share"])
  scored = any(v for r in records for v in r["task_uncertainty"].values())
  fig, axes = plt.subplots(1, 2 if scored else 1, figsize=(12 if scored else 6.5, 4.2),
                           squeeze=False)
  ax_share = axes[0, 0]
  for name in names:
    ax_share.plot(steps, [r["task_share"][name] for r in records], label=name)
  ax_share.set(title="share of the selected examples per log interval", xlabel="step",
               ylabel="share of the batch", ylim=(0, 1))
  ax_share.legend(fontsize="small")
  clamped = {}
  if scored:
    ax_u = axes[0, 1]
    for name in names:
      values, low = certainty(records, name)
      (line,) = ax_u.plot(steps, np.maximum(values, CERTAINTY_FLOOR), label=name)
      if low.any():
        ax_u.plot(steps[low], np.full(int(low.sum()), CERTAINTY_FLOOR), "v", ls="none",
                  color=line.get_color())
      clamped[name] = int(low.sum())
    ax_u.set_yscale("log")
    title = "candidates' mean certainty 1 - u (u: mean uncertainty; lower: picked more)"
    if any(clamped.values()):
      title += (f"\n\u25bd: 1 - u below {CERTAINTY_FLOOR:g} (u = 1 to float precision), "
                f"drawn at {CERTAINTY_FLOOR:g}")
    ax_u.set(title=title, xlabel="step", ylabel="1 - u (log scale)")
    ax_u.title.set_fontsize("small")
    ax_u.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return clamped


def sampling_summary(workdir: Path) -> dict:
  """What MT-U did in a run: total_steps, total_shares {task: share of all selections},
  interval_shares [{step, shares}] per log interval, data_used and dev (results.json)."""
  records = train_records(workdir / "history.jsonl")
  results = json.loads((workdir / "results.json").read_text())
  names = list(records[0]["task_share"]) if records else []
  previous, weighted = 0, {name: 0.0 for name in names}
  for r in records:
    for name in names:
      weighted[name] += r["task_share"][name] * (r["step"] - previous)
    previous = r["step"]
  return {"total_steps": previous,
          "total_shares": {n: w / max(previous, 1) for n, w in weighted.items()},
          "interval_shares": [{"step": r["step"], "shares": r["task_share"]} for r in records],
          "data_used": results["data_used"], "dev": results["results"],
          "dev_score": results["score"], "selected_step": results["step"]}


def results_table(results: dict[str, dict[str, float]], data_used: dict[str, float],
                  score: float, step: int) -> str:
  """A plain-text table: task, metrics, % of training data used for updates."""
  lines = [f"Dev results of the selected checkpoint (step {step}), aggregate score {score:.4f}",
           f"{'task':<24} {'metrics':<56} {'data used':>9}"]
  for task, metrics in results.items():
    shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    lines.append(f"{task:<24} {shown:<56} {percent(data_used.get(task, 0.0)):>9}")
  if "overall" in data_used:
    lines.append(f"{'overall':<24} {'':<56} {percent(data_used['overall']):>9}")
  return "\n".join(lines)


def percent(fraction: float) -> str:
  """A fraction as a percentage with enough digits that a small non-zero one is not '0.0%'
  (29 of 67,349 SST-2 rows: 0.043%)."""
  value = 100 * fraction
  if value == 0 or value >= 1:
    return f"{value:.1f}%"
  return f"{value:.2g}%" if value >= 0.01 else f"{value:.1e}%"


def write_results(workdir: Path, summary: dict[str, Any]) -> None:
  """WORKDIR/results.json (the summary: step, score, results, aggregates, data_used), the table
  in results.txt and on stdout, and sampling.png from the history."""
  atomic.write_text(workdir / "results.json", json.dumps(summary, indent=2))
  table = results_table(summary["results"], summary["data_used"], summary["score"],
                        summary["step"])
  atomic.write_text(workdir / "results.txt", table + "\n")
  print(table)
  history = workdir / "history.jsonl"
  if history.exists():
    plot_sampling(history, workdir / "sampling.png")
