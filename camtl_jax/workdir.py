"""A run's workdir: the files training writes beside its checkpoints, and loading a trained model.

  WORKDIR/config.json    the training config (config.to_json())
  WORKDIR/tasks.json     per task: name, type, labels, num_choices, metrics, the train split's
                         regression mean/std (maps outputs back to the task's scale)
  WORKDIR/checkpoints/   Orbax checkpoints (checkpoint.py)

A config.json written before a config field existed is upgraded when it is read (load_config,
upgrade_legacy_config): the one place an old workdir's missing fields get their values.

`load(workdir)` gives a `TrainedModel` (config, tasks, the selected checkpoint's params, the model
rebuilt from the checkpoint's fingerprint, the tokenizer) without the config file that trained it:
prediction, export and adaptation start from it. The selected checkpoint is the one with the best
dev score, else the latest; a damaged one is reported in one line and the next best used.

`WorkdirLock` (WORKDIR/.lock) keeps two runs out of one workdir; `StopSignals` turns SIGTERM and a
first Ctrl-C into a save and a stop.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import shutil
import signal
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections

from camtl_jax import atomic, checkpoint, convert, evaluate, experiment
from camtl_jax.models import bert
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.tasks import base, registry, spec
from camtl_jax.tasks.base import Task

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
TASKS_FILE = "tasks.json"


# ------------------------------------------------------------------------------------------------
# Writing


def write_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
  """WORKDIR/config.json (atomically: a crash leaves the old file or the new one)."""
  atomic.write_text(workdir / CONFIG_FILE, config.to_json(indent=2) + "\n")


def task_records(tasks: Sequence[Task], stats: Sequence[tuple[float, float]]) -> list[dict]:
  """What prediction needs about each task beyond the config (custom tasks' labels, and the train
  split's regression statistics; a spec-file task's whole entry, its inferred labels included)."""
  return [{"name": t.name, "type": t.type, "labels": list(t.labels),
           "num_choices": t.num_choices, "metrics": list(t.metrics),
           "target_mean": float(mean), "target_std": float(std),
           **({"spec": dict(t.spec)} if t.spec else {})}
          for t, (mean, std) in zip(tasks, stats)]


def write_task_records(workdir: Path, tasks: Sequence[Task],
                       stats: Sequence[tuple[float, float]]) -> None:
  """WORKDIR/tasks.json (atomically)."""
  atomic.write_text(workdir / TASKS_FILE, json.dumps(task_records(tasks, stats), indent=2) + "\n")


# ------------------------------------------------------------------------------------------------
# Reading


@dataclasses.dataclass
class TrainedModel:
  """A trained workdir, loaded: everything prediction, export and adaptation need.

  stats: per task, the train split's regression (mean, std) ((0, 1) for other types).
  """
  workdir: Path
  config: ml_collections.ConfigDict
  tasks: list[Task]
  stats: list[tuple[float, float]]
  model: camtl_lib.CAMTL
  params: Any
  tokenizer: Any
  step: int
  meta: dict

  @property
  def specs(self) -> tuple[camtl_lib.TaskSpec, ...]:
    return self.model.tasks

  @property
  def num_choices(self) -> int:
    """K of every batch: the largest choice count of the model's tasks."""
    return camtl_lib.num_choices(self.model.tasks)

  def task_id(self, name: str) -> int:
    """The task's row in the model; ValueError naming the workdir's tasks otherwise."""
    names = [t.name for t in self.tasks]
    if name not in names:
      raise ValueError(f"unknown task {name!r}: the model in {self.workdir} was trained on "
                       f"{names}")
    return names.index(name)

  @functools.cached_property
  def apply(self) -> Callable:
    """jit(params, batch, head_types=None) -> the model's per-example outputs, deterministic (the
    eval step); head_types (static): only these heads, see camtl.choice_layout."""
    chunk_rows = experiment.eval_chunk_rows(self.config)  # as the training run's evaluation
    return jax.jit(lambda params, batch, head_types=None: evaluate.deterministic_forward(
        self.model, params, batch, chunk_rows, head_types), static_argnames="head_types")

  def eval_setup(self, batch_size: int | None = None) -> evaluate.EvalSetup:
    """The training run's eval batching, on this process's device."""
    return evaluate.eval_setup(self.config, self.specs, batch_size=batch_size)

  def encode(self, task_id: int, examples: Sequence[base.Example], split: str = "predict",
             cache_dir: str | None = None):
    """Tokenises examples of one of the model's tasks (regression targets on the train scale)."""
    task = self.tasks[task_id]
    stats = self.stats[task_id] if task.type == base.REGRESSION else None
    return experiment.encode_split(self.config, task, examples, self.tokenizer, cache_dir, split,
                                   stats)

  def evaluate_split(self, split, task_id: int, params: Any = None
                     ) -> tuple[dict[str, float], list]:
    """(the task's official metrics, predictions) on a labelled split."""
    params = self.params if params is None else params
    return evaluate.evaluate_split(self.apply, params, split, task_id, self.eval_setup())


def check_workdir(workdir: str | Path) -> Path:
  """The resolved workdir; FileNotFoundError when it is missing or holds no checkpoint."""
  path = Path(workdir).expanduser().resolve()
  if not path.is_dir():
    raise FileNotFoundError(f"workdir {path} does not exist")
  ckpts = path / "checkpoints"
  if (path / "learning_curve.csv").exists():
    raise FileNotFoundError(f"{path} is a learning-curve folder (camtl-adapt --fractions), not a "
                            "workdir; camtl-adapt with a single --fraction writes a workdir")
  if not ckpts.is_dir() or not any(p.name.isdigit() for p in ckpts.iterdir()):
    raise FileNotFoundError(f"workdir {path} holds no checkpoint (expected {ckpts}/<step>); "
                            "train first: python -m camtl_jax.main --config ... --workdir "
                            f"{path}")
  return path


def load_config(workdir: Path) -> ml_collections.ConfigDict:
  """WORKDIR/config.json as a ConfigDict, upgraded (upgrade_legacy_config)."""
  path = workdir / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: the workdir was trained before configs were saved "
                            "into it; pass the training config (load(workdir, config=...))")
  return upgrade_legacy_config(json.loads(path.read_text()))


# Fields added after workdirs were written, with the value that reproduces what a run made before
# the field existed did: MT-U as the paper (normalised u, no floor, no cap) and nothing packed.
# Every other missing field takes the default of configs/common.py's base(), where defaults live.
LEGACY_VALUES = {"mtu_uncertainty": "normalised", "mtu_min_share": 0.0, "mtu_max_share": 1.0,
                 "pack_candidates": False, "pack_update": False}


def upgrade_legacy_config(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A saved config (config.json's dict) with every field of base() it lacks added (nested
  ones too): LEGACY_VALUES where the old behaviour differs from today's default, else base()'s
  default. Fields it has are kept as they are, so the library reads every field directly."""
  from camtl_jax.configs import common  # pylint: disable=import-outside-toplevel

  def filled(have: Mapping[str, Any], defaults: Mapping[str, Any], legacy: Mapping[str, Any]):
    out = dict(have)
    for key, value in defaults.items():
      if key not in out:
        out[key] = legacy.get(key, value)
      elif isinstance(value, dict) and isinstance(out[key], dict):
        out[key] = filled(out[key], value, {})
    return out
  return ml_collections.ConfigDict(filled(saved, common.base().to_dict(), LEGACY_VALUES))


def select_step(workdir: Path) -> int:
  """The checkpoint with the best dev score, else the latest (checkpoint.ranked_steps), whether
  or not it is damaged (load falls back from a damaged one). Read-only: safe while a run is
  writing the workdir."""
  steps = checkpoint.ranked_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"workdir {workdir} holds no checkpoint")
  return steps[0]


def task_from_record(record: Mapping[str, Any]) -> Task:
  """The registry's Task of that name (checked against the record), else one built from it (a
  custom task of the training run that is not registered in this process; a spec-file task with
  its reader, from its recorded entry: no spec file needed)."""
  if record.get("spec"):
    return spec.task_from_record(record["spec"])
  if record["name"] in registry.TASKS:
    task = registry.TASKS[record["name"]]
    if task.type != record["type"] or list(task.labels) != list(record["labels"]):
      raise ValueError(f"task {task.name!r} differs from the one the workdir was trained on: "
                       f"{task.type} {list(task.labels)} != {record['type']} {record['labels']}")
    return task
  return Task(name=record["name"], type=record["type"], labels=tuple(record["labels"]),
              metrics=tuple(record.get("metrics", ())), splits={}, reader=None,
              num_choices=record["num_choices"])


def load_task_records(workdir: Path) -> tuple[list[Task], list[tuple[float, float]]]:
  """Tasks and regression statistics from WORKDIR/tasks.json."""
  path = workdir / TASKS_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: not a workdir written by camtl_jax training")
  records = json.loads(path.read_text())
  return ([task_from_record(r) for r in records],
          [(float(r["target_mean"]), float(r["target_std"])) for r in records])


def model_from_fingerprint(meta: Mapping[str, Any], tasks: Sequence[Task],
                           config) -> camtl_lib.CAMTL:
  """The CAMTL module of a checkpoint, from its fingerprint (encoder and model shapes)."""
  fp = meta.get("fingerprint", {})
  if [t.name for t in tasks] != list(fp.get("tasks", [])):
    raise ValueError(f"the checkpoint's tasks {fp.get('tasks')} differ from tasks.json "
                     f"{[t.name for t in tasks]}")
  encoder = bert.EncoderConfig(**fp["encoder"], dtype=config.dtype)
  model_config = camtl_lib.CAMTLConfig.from_config(fp["model"])
  return camtl_lib.CAMTL(encoder=encoder, config=model_config,
                         tasks=experiment.task_specs(tasks))


def restore(workdir: Path, step: int | None = None) -> tuple[int, Any, dict]:
  """(step, params as numpy, meta) of a checkpoint, onto this process's device whatever devices
  saved it. step None: the best usable one (checkpoint.load_usable_state: a damaged step is
  reported in one line and the next best used; nothing is moved). A given step that is damaged
  is a ValueError naming it and its damaged file."""
  if step is None:
    step, state, meta = checkpoint.load_usable_state(workdir)
    return step, state["params"], meta
  if step not in checkpoint.ranked_steps(workdir):
    raise FileNotFoundError(f"workdir {workdir} holds no checkpoint {step}; its steps: "
                            f"{sorted(checkpoint.ranked_steps(workdir))}")
  try:
    _, state = checkpoint.load_state(workdir, step)
    meta = checkpoint.load_meta(workdir, step)
  except Exception as e:  # noqa: BLE001 - any read failure means this checkpoint is unusable
    raise ValueError(f"checkpoint {step} is damaged ({checkpoint.damage(workdir, step, e)}); "
                     "leave out --step to use the best usable one") from e
  return step, state["params"], meta


def load(workdir: str | Path, step: int | None = None,
         config: ml_collections.ConfigDict | None = None) -> TrainedModel:
  """Loads a trained workdir: config, tasks, the selected checkpoint's params, the tokenizer."""
  path = check_workdir(workdir)
  config = config or load_config(path)
  tasks, stats = load_task_records(path)
  step, params, meta = restore(path, step)
  params = jax.device_put(params)  # once, not at every forward
  model = model_from_fingerprint(meta, tasks, config)
  log.info("loaded %s step %d (%d tasks)", path, step, len(tasks))
  return TrainedModel(path, config, tasks, stats, model, params,
                      convert.load_tokenizer(experiment.resolve_model_path(config.model_path)),
                      step, meta)


# ------------------------------------------------------------------------------------------------
# One run per workdir

# Config fields that change the trajectory without changing the fingerprint: a resumed run with
# other values would silently continue a different run (the data order and the schedule move).
TRAJECTORY_FIELDS = ("seed", "batch_size", "grad_accum_steps", "learning_rate", "total_steps",
                     "warmup_fraction", "weight_decay", "clip_norm", "new_param_lr_multiplier",
                     "sampler", "mt_uncertainty_score", "temperature_alpha", "mtu_uncertainty",
                     "mtu_min_share", "mtu_max_share")


def trajectory(config) -> dict:
  """The TRAJECTORY_FIELDS of a config (JSON-normalised), and loss_weighting and
  regression_loss_scale when they are not the defaults (so checkpoints written before those
  options existed resume as they did)."""
  fields = {k: config[k] for k in TRAJECTORY_FIELDS}
  if config.loss_weighting != "task_mean":
    fields["loss_weighting"] = config.loss_weighting
  if config.regression_loss_scale != 1.0:
    fields["regression_loss_scale"] = config.regression_loss_scale
  return json.loads(json.dumps(fields))


def refuse_other_runs(config, path: Path, train_rows: Sequence[int] | None = None) -> None:
  """WorkdirMismatch when the workdir's checkpoints belong to another task list or model shape,
  or were trained with other TRAJECTORY_FIELDS (check_trajectory); found from the config alone
  (no weights, no data) so a refused run writes nothing. train_rows: the run's train rows per
  task, once tokenised (a change that shows only there, e.g. doc_stride, is refused before the
  token caches are written); None: not compared."""
  meta = checkpoint.read_latest_meta(path)
  if meta is None:
    return
  saved = dict(meta.get("fingerprint") or {})
  model = experiment.build_model(config, experiment.encoder_shape(config),
                                 experiment.task_specs(experiment.config_tasks(config)))
  rows = saved.get("train_rows", []) if train_rows is None else train_rows
  current = experiment.fingerprint(config, model, rows)
  checkpoint.check_fingerprint(saved, current, path)
  check_trajectory(config, meta, path)


def remove_if_unused(path: Path) -> None:
  """Removes a workdir that a run created and then failed in before it wrote a checkpoint or a
  history line (e.g. refused for missing data): all it holds (the lock, demo data, token caches)
  is that run's own, and an empty workdir left behind looks like a started run."""
  steps = [p for p in (path / "checkpoints").glob("*") if p.name.isdigit()]
  if not steps and not (path / "history.jsonl").exists():
    shutil.rmtree(path, ignore_errors=True)


def check_trajectory(config, saved_meta: dict, path: Path) -> None:
  """Refuses a resume with other TRAJECTORY_FIELDS unless config.allow_resume_changes."""
  saved = saved_meta.get("trajectory")
  diffs = checkpoint.fingerprint_diff(saved, trajectory(config)) if saved else []
  if diffs and not config.allow_resume_changes:
    raise checkpoint.WorkdirMismatch(
        f"{path} was trained with other settings that change the run's trajectory: "
        + "; ".join(diffs) + ". Rerun with the original values, use a new --workdir, or pass "
        "--config.allow_resume_changes=True")
  if diffs:
    log.warning("resuming with changed settings (allow_resume_changes): %s", "; ".join(diffs))


# ------------------------------------------------------------------------------------------------
# The lock and the stop signals

LOCK_FILE = ".lock"


class WorkdirLocked(ValueError):
  """Another run, alive or on another host, holds the workdir's lock."""


class WorkdirLock:
  """WORKDIR/.lock, so that two runs never write one workdir (interleaved checkpoints; one run's
  start-up cleanup deleting the other's in-progress save).

  Created atomically (O_CREAT | O_EXCL) holding JSON {host, pid, started}. A lock whose process is
  gone (this host, no such pid) is taken over with a warning; one from another host counts as live,
  as its pid cannot be checked from here. Take it on one process of a run (the primary host): the
  other hosts of the same run would see that lock as another run's.

    with WorkdirLock(workdir): ...     # or: lock = WorkdirLock(workdir); lock.acquire(); ...
  """

  def __init__(self, workdir: str | Path):
    self.workdir = Path(workdir).expanduser().resolve()
    self.path = self.workdir / LOCK_FILE
    self._record: dict | None = None  # what we wrote, while we hold the lock

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc: Any) -> None:
    self.release()

  @property
  def held(self) -> bool:
    return self._record is not None

  def acquire(self) -> WorkdirLock:
    """Takes the lock; WorkdirLocked when another live run holds it."""
    if self.held:
      return self
    self.workdir.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    for _ in range(3):  # a stale lock taken over, or a lock released meanwhile: try again
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = _read_lock(self.path)
        if owner is not None and not _is_stale(owner):
          raise WorkdirLocked(self._message(owner)) from None
        if owner is not None:
          self._take_over(owner)
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(record, f)
      self._record = record
      return self
    raise WorkdirLocked(self._message(_read_lock(self.path) or {}))

  def release(self) -> None:
    """Removes the lock if this object holds it and the file is still ours."""
    if self._record is not None and _read_lock(self.path) == self._record:
      self.path.unlink(missing_ok=True)
    self._record = None

  def _take_over(self, owner: dict) -> None:
    """Removes a dead process's lock, unless a concurrent run replaced it meanwhile."""
    aside = self.path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    if _read_lock(aside) != owner:  # moved a concurrent run's fresh lock: put it back
      try:
        os.link(aside, self.path)
      except FileExistsError:  # a third run took the lock meanwhile
        pass
      aside.unlink()
      raise WorkdirLocked(self._message(_read_lock(self.path) or {}))
    aside.unlink()
    log.warning("taking over the lock %s of pid %s on %s (started %s), which is no longer running",
                self.path, owner.get("pid"), owner.get("host"), owner.get("started"))

  def _message(self, owner: dict) -> str:
    if not owner:
      return (f"{self.workdir} is locked by {self.path}, which is unreadable; another run may be "
              f"using this workdir. If none is, delete {self.path}.")
    here = socket.gethostname()
    text = (f"{self.workdir} is in use by another run (host {owner.get('host')}, pid "
            f"{owner.get('pid')}, started {owner.get('started')}); wait for it to end or use "
            "another --workdir.")
    if owner.get("host") != here:
      text += f" Its pid cannot be checked from {here}."
    return text + f" If that run is gone, delete {self.path}."


def _read_lock(path: Path) -> dict | None:
  """A lock file's JSON; None when it is gone; {} when unreadable (being written, or damaged)."""
  try:
    record = json.loads(path.read_text())
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}
  return record if isinstance(record, dict) else {}


def _is_stale(owner: dict) -> bool:
  """True when the lock's process was on this host and no longer exists."""
  pid = owner.get("pid")
  if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)  # signal 0: only checks that the process exists
  except ProcessLookupError:
    return True
  except PermissionError:  # exists, another user's
    return False
  return False


class StopSignals:
  """SIGTERM and a first Ctrl-C set a flag the loop reads after each step (it then saves and
  stops); a second Ctrl-C interrupts at once. Single-process runs only: on a pod every process
  must stop at the same step, which Orbax's preemption sync (reached_preemption) arranges.

  exit_status: what the command exits with after such a stop, 128 + the signal's number (130
  for SIGINT, 143 for SIGTERM), the shell's convention for a process ended by a signal, so that
  `camtl-train ... && camtl-export ...` and batch schedulers see the run as unfinished.
  """

  def __init__(self, enabled: bool):
    self.requested = False
    self.signum = signal.SIGTERM  # a preemption noticed by Orbax counts as a SIGTERM
    self._previous = {}
    if enabled and threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  @property
  def exit_status(self) -> int:
    return 128 + int(self.signum)

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested, self.signum = True, signal.Signals(signum)
    log.warning("%s: saving and stopping after this step%s", signal.Signals(signum).name,
                " (Ctrl-C again to abort)" if signum == signal.SIGINT else "")

  def restore(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
