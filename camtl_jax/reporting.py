"""Progress bar, TensorBoard scalars, the sampling-share plot and the results table (process 0 only).

Step metrics arrive as device arrays of sums and counts; `Reporter.log` reduces them on the host
once per log interval (one device->host transfer per interval, not per step).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

log = logging.getLogger(__name__)


def reduce_metrics(history: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Sums every metric over steps (all step metrics are sums or counts)."""
  fetched = jax.device_get(list(history))
  return {k: np.sum([m[k] for m in fetched], axis=0) for k in fetched[0]}


class Reporter:
  """Writes progress (tqdm), TensorBoard scalars and a JSON-lines history under WORKDIR."""

  def __init__(self, workdir: Path, task_names: Sequence[str], total_steps: int, start_step: int,
               examples_per_step: int, enabled: bool = True):
    self.enabled = enabled
    self.task_names = list(task_names)
    self.examples_per_step = examples_per_step
    self.history_path = workdir / "history.jsonl"
    self.writer = self.bar = None
    if enabled:
      from tensorboardX import SummaryWriter
      from tqdm import tqdm
      self.writer = SummaryWriter(str(workdir / "tensorboard"))
      self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
    self._last = (start_step, time.perf_counter())

  def log_train(self, step: int, sums: dict[str, np.ndarray], learning_rate: float) -> dict:
    """Reduces summed metrics over the last interval, writes scalars, returns the record."""
    steps = max(float(sums["steps"]), 1.0)
    count = np.maximum(sums["task_count"], 1)
    record = {
        "step": step, "loss": float(sums["loss"] / steps), "lr": learning_rate,
        "grad_norm": float(sums["grad_norm"] / steps), "skipped_steps": int(sums["skipped"]),
        "task_loss": dict(zip(self.task_names, (sums["task_loss"] / count).tolist())),
        "task_share": dict(zip(self.task_names, (sums["task_count"] / max(sums["task_count"].sum(), 1)).tolist())),
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

  def advance(self, step: int) -> None:
    """Moves the progress bar to `step` (host-side only: no device sync)."""
    if self.enabled:
      self.bar.update(step - self.bar.n)

  def _write(self, step: int, record: dict) -> None:
    for key in ("loss", "lr", "grad_norm", "skipped_steps", "steps_per_s", "examples_per_s"):
      self.writer.add_scalar(f"train/{key}", record[key], step)
    for group in ("task_loss", "task_share", "task_uncertainty"):
      for name, value in record[group].items():
        self.writer.add_scalar(f"{group}/{name}", value, step)
    with self.history_path.open("a") as f:
      f.write(json.dumps(record) + "\n")

  def log_eval(self, step: int, results: dict[str, dict[str, float]], score: float) -> None:
    if not self.enabled:
      return
    for task, metrics in results.items():
      for name, value in metrics.items():
        self.writer.add_scalar(f"dev/{task}/{name}", value, step)
    self.writer.add_scalar("dev/aggregate", score, step)
    with self.history_path.open("a") as f:
      f.write(json.dumps({"step": step, "dev": results, "dev_score": score}) + "\n")
    self.writer.flush()

  def close(self) -> None:
    if self.enabled:
      self.bar.close()
      self.writer.close()


def plot_sampling(history_path: Path, out_png: Path) -> None:
  """PNG: per-task sampling share and mean candidate uncertainty over training."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  records = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
  records = [r for r in records if "task_share" in r]
  if not records:
    return
  steps = [r["step"] for r in records]
  fig, (ax_share, ax_u) = plt.subplots(1, 2, figsize=(11, 4))
  for name in records[0]["task_share"]:
    ax_share.plot(steps, [r["task_share"][name] for r in records], label=name)
    ax_u.plot(steps, [r["task_uncertainty"][name] for r in records], label=name)
  ax_share.set(title="share of selected examples", xlabel="step", ylim=(0, 1))
  ax_u.set(title="mean normalised uncertainty of candidates", xlabel="step", ylim=(0, 1))
  ax_share.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)


def results_table(results: dict[str, dict[str, float]], data_used: dict[str, float],
                  score: float, step: int) -> str:
  """A plain-text table: task, metrics, % of training data used for updates."""
  lines = [f"Dev results of the selected checkpoint (step {step}), aggregate score {score:.4f}",
           f"{'task':<24} {'metrics':<56} {'data used':>9}"]
  for task, metrics in results.items():
    shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    lines.append(f"{task:<24} {shown:<56} {100 * data_used.get(task, 0.0):>8.1f}%")
  if "overall" in data_used:
    lines.append(f"{'overall':<24} {'':<56} {100 * data_used['overall']:>8.1f}%")
  return "\n".join(lines)
