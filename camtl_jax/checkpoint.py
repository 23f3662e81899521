"""Orbax checkpoints of the whole training state in the workdir.

Layout: WORKDIR/checkpoints/<step>/{state, meta, metrics}. `state` is the train-state pytree
(params, optimizer state, step, data-usage mask, NaN counters); `meta` is JSON: the run's
fingerprint (task list, model shapes), host-side counters and `state_checksum` of the state;
`metrics` is the dev score the step was saved with (Orbax writes it because make_manager sets a
best_fn, and reads it back when a manager opens the directory). We keep the latest N checkpoints
plus the best one by that score, also across resumes; save asynchronously; save on a preemption
signal.

Restoring: the latest checkpoint is tried first. One whose meta or state cannot be read, or whose
state differs from its checksum (OCDBT verifies its indices but not the array bytes), is renamed to
<step>.corrupt with one warning line and the previous one is used; renaming it is what lets the run
save that step again instead of failing on every rerun. A workdir whose fingerprint differs from
the current config fails with a message that lists the differing leaves; `read_fingerprint` reads
it without touching the workdir. (The workdir's lock and the stop signals are in workdir.py.)
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)

SCORE = "dev_score"          # Orbax metrics key: the score a save carried (higher is better)
CHECKSUM = "state_checksum"  # meta key: state_checksum(state) at save time
# Orbax's replica-parallel save splits a replicated array among its replicas, each writing one
# slice, and compiles a slicing program per leaf shape and replica on the first save. That pays for
# large arrays only: the micro model on 8 CPU devices took 9.6 s for its first save with every
# leaf split, 2.0 s with none (docs/results/checkpoint_topology.md). Smaller slices are not split.
REPLICA_PARALLEL_MIN_SLICE_BYTES = 1 << 20


class WorkdirMismatch(ValueError):
  """The workdir holds checkpoints of a different task list or model shape."""


def checkpoint_dir(workdir: str | Path) -> Path:
  """WORKDIR/checkpoints, where the steps live."""
  return Path(workdir).expanduser().resolve() / "checkpoints"


def _rank(metrics: dict) -> float:
  """Orbax's ranking key of a step's metrics: its score; NaN, inf and a missing score rank last."""
  return score_rank(float(metrics.get(SCORE, math.nan)))


def score_rank(score: float) -> float:
  """A dev score as the steps are ranked by it: NaN and inf rank last (-inf)."""
  return score if math.isfinite(score) else -math.inf


def make_manager(workdir: str | Path, keep: int = 3, save_every: int = 1000,
                 async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
  """CheckpointManager keeping the latest `keep` plus the best by `SCORE`, saving every
  `save_every` steps and whenever a preemption signal was received.

  read_only: for readers (predict, export, inspection) of a workdir that a run may be writing:
  creates nothing, deletes nothing, and leaves that run's in-progress (temporary) saves alone.
  """
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=policies.AnySavePolicy([
          policies.FixedIntervalPolicy(save_every),
          policies.PreemptionCheckpointingPolicy(),
      ]),
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(keep),
          policies.BestN(get_metric_fn=_rank, n=1, keep_checkpoints_without_metrics=False),
      ]),
      # Without a best_fn Orbax neither writes the metrics passed to save() nor reads them back,
      # so BestN has nothing to rank and best_step() is the latest step.
      best_fn=_rank,
      best_mode="max",
      enable_async_checkpointing=async_save,
      # Half-written saves of a killed run are removed at start (never by a reader: they may be
      # the in-progress saves of a live run).
      cleanup_tmp_directories=not read_only,
      read_only=read_only,
      create=not read_only,
      save_interval_steps=0 if read_only else 1,  # read_only with the default 1 logs a warning
  )
  absl_log = logging.getLogger("absl")
  if _not_unscored_save_warning not in absl_log.filters:
    absl_log.addFilter(_not_unscored_save_warning)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               handler_registry=_item_handlers())


def _item_handlers() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
  """The two items of a step: `state`, a pytree of arrays in the OCDBT format of Orbax's
  StandardSave, replica-parallel only above REPLICA_PARALLEL_MIN_SLICE_BYTES and without Orbax's
  `array_metadatas` (it records typed PRNG keys; the train state holds none), and `meta`, JSON."""
  arrays = ocp.type_handlers.ArrayHandler(
      min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_SLICE_BYTES)
  types = ocp.type_handlers.create_type_handler_registry(
      (jax.Array, arrays), (np.ndarray, ocp.type_handlers.NumpyHandler()),
      (np.number, ocp.type_handlers.ScalarHandler()), (int, ocp.type_handlers.ScalarHandler()),
      (float, ocp.type_handlers.ScalarHandler()))
  state = ocp.PyTreeCheckpointHandler(type_handler_registry=types)
  meta = ocp.JsonCheckpointHandler()
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  registry.add("state", ocp.args.PyTreeSave, state)
  registry.add("state", ocp.args.PyTreeRestore, state)
  registry.add("meta", ocp.args.JsonSave, meta)
  registry.add("meta", ocp.args.JsonRestore, meta)
  return registry


def _restore_args(target: Any) -> ocp.args.PyTreeRestore:
  """Restores the state onto `target`'s shapes, dtypes and shardings (jax.ShapeDtypeStruct)."""
  return ocp.args.PyTreeRestore(item=target,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(target))


def _not_unscored_save_warning(record: logging.LogRecord) -> bool:
  """With a best_fn, Orbax warns on every save without metrics; here only evaluated steps carry a
  score, so the periodic saves in between would log it at every checkpoint."""
  return record.getMessage() != "Requested `tracked_metric`; did not provide metrics."


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict,
         score: float | None = None, force: bool = False, checksum: bool = True) -> bool:
  """Saves (asynchronously) when the policy says so, or always with force=True.

  score: the step's dev score (higher is better); the best scored step is kept beyond the latest
  `keep` and reported by best_step. checksum: stores state_checksum(state) in meta under
  CHECKSUM, which restore_latest and load_state verify.
  """
  if not force and not manager.should_save(step):
    return False  # decided here, before the checksum's pass over the state
  if checksum:
    meta = {**meta, CHECKSUM: state_checksum(state)}
  metrics = None if score is None else {SCORE: float(score)}
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                                    meta=ocp.args.JsonSave(meta)),
                      metrics=metrics, force=True)


def state_checksum(state: Any) -> int:
  """A 32-bit checksum of the bytes of every array of a pytree, whatever its device layout.

  Each element is weighted by an odd number that depends on its position, so a change to any
  single element (a flipped byte on disk) always changes the sum. Computed on the arrays' devices
  in one jitted pass; only the scalar comes back.
  """
  return int(_checksum(state))


@jax.jit
def _checksum(state: Any) -> jax.Array:
  total = jnp.uint32(0)
  for i, leaf in enumerate(jax.tree.leaves(state)):
    total += _leaf_checksum(leaf) * jnp.uint32(2 * i + 1)
  return total


def _leaf_checksum(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  words = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)  # 8 bytes: 2 words
  # The flat position from per-axis iotas rather than a reshape, which would move sharded data.
  index, stride = jnp.zeros(words.shape, jnp.uint32), 1
  for axis in reversed(range(words.ndim)):
    index += jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * jnp.uint32(stride)
    stride = stride * words.shape[axis] % 2**32
  return jnp.sum(words * (2 * index + 1), dtype=jnp.uint32)


def check_fingerprint(saved: dict, current: dict, workdir: str | Path) -> None:
  """Raises WorkdirMismatch listing each differing leaf as `path: workdir's -> config's`."""
  diffs = fingerprint_diff(saved, current)
  if diffs:
    raise WorkdirMismatch(
        f"{workdir} holds checkpoints of a different run (workdir -> config): "
        + "; ".join(diffs) + ". Use a new --workdir, or restore the original config.")


class _Absent:
  def __repr__(self) -> str:
    return "<absent>"


_ABSENT = _Absent()


def fingerprint_diff(old: Any, new: Any, path: str = "") -> list[str]:
  """`path: old -> new` for each differing leaf of two JSON-like trees: dict keys joined by '.',
  items of equally long lists as [i]; a list whose length changed is shown whole, a missing key as
  <absent>. Lists and tuples compare alike (the saved fingerprint went through JSON)."""
  if isinstance(old, dict) and isinstance(new, dict):
    return [d for k in sorted(set(old) | set(new), key=str)
            for d in fingerprint_diff(old.get(k, _ABSENT), new.get(k, _ABSENT),
                                      f"{path}.{k}" if path else str(k))]
  if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new):
    return [d for i, (a, b) in enumerate(zip(old, new))
            for d in fingerprint_diff(a, b, f"{path}[{i}]")]
  if old == new:
    return []
  return [f"{path}: {_short(old)} -> {_short(new)}"]


def _short(value: Any, limit: int = 120) -> str:
  text = repr(list(value) if isinstance(value, tuple) else value)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def read_latest_meta(workdir: str | Path) -> dict | None:
  """The meta of the newest checkpoint whose meta is readable (without its checksum); None
  without one. Reads no state and writes nothing."""
  directory = checkpoint_dir(workdir)
  for step in sorted(ocp.utils.checkpoint_steps(directory), reverse=True):
    try:
      meta = _read_meta(directory, step)
    except Exception:  # noqa: BLE001 - any read failure means this checkpoint is unusable
      continue
    meta.pop(CHECKSUM, None)
    return meta
  return None


def read_fingerprint(workdir: str | Path) -> dict | None:
  """The fingerprint in the newest checkpoint whose meta is readable; None without one.

  Reads only the steps' meta JSON (no state, no manager) and writes nothing, so a caller can
  refuse a run before touching the workdir. Unreadable steps are skipped silently here;
  restore_latest reports them and moves them aside.
  """
  directory = checkpoint_dir(workdir)
  for step in sorted(ocp.utils.checkpoint_steps(directory), reverse=True):
    try:
      return dict(_read_meta(directory, step).get("fingerprint") or {})
    except Exception:  # noqa: BLE001 - any read failure means this checkpoint is unusable
      continue
  return None


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any, fingerprint: dict,
                   workdir: str | Path) -> tuple[Any, dict] | None:
  """(state, meta) of the newest usable checkpoint, or None when there is none.

  abstract_state: a tree of jax.ShapeDtypeStruct with shardings, so arrays are restored straight
  onto their devices with their shardings. A checkpoint whose meta or state cannot be read, or
  whose state differs from its checksum, is renamed to <step>.corrupt (`_move_aside`) and the
  previous one is tried; `manager` is reloaded in place, so the caller can save that step again.
  Raises WorkdirMismatch when the newest readable meta holds another fingerprint. The returned
  meta is the caller's (without CHECKSUM).
  """
  _quiet_async_noise()
  steps = sorted(manager.all_steps(), reverse=True)
  for i, step in enumerate(steps):
    try:
      meta = _read_meta(manager.directory, step)
    except Exception as e:  # noqa: BLE001 - any read failure means this checkpoint is unusable
      _move_aside(manager, step, e, older=i + 1 < len(steps))
      continue
    checksum = meta.pop(CHECKSUM, None)
    check_fingerprint(meta.get("fingerprint", {}), fingerprint, workdir)
    try:
      state = _restore_state(manager, step, abstract_state, checksum)
    except Exception as e:  # noqa: BLE001
      _move_aside(manager, step, e, older=i + 1 < len(steps))
      continue
    log.info("restored checkpoint %d from %s", step, manager.directory)
    return state, meta
  if steps:
    log.warning("no usable checkpoint in %s; starting from step 0", manager.directory)
  return None


def load_meta(workdir: str | Path, step: int) -> dict:
  """A step's meta (fingerprint, evaluations) without its checksum; read-only."""
  meta = _read_meta(checkpoint_dir(workdir), step)
  meta.pop(CHECKSUM, None)
  return meta


def _read_meta(directory: str | Path, step: int) -> dict:
  """The step's meta JSON, read directly (no manager: no barrier, nothing written)."""
  meta = ocp.JsonCheckpointHandler().restore(Path(directory) / str(step) / "meta")
  if not isinstance(meta, dict):
    raise ValueError(f"meta holds a {type(meta).__name__}, not a JSON object")
  return dict(meta)


def _state_tree(directory: str | Path, step: int) -> Any:
  """The saved state's tree of array metadata (shapes, dtypes) from its state/_METADATA;
  FileNotFoundError when that is missing."""
  handler = ocp.StandardCheckpointHandler()
  try:
    metadata = handler.metadata(Path(directory) / str(step) / "state")
  finally:
    handler.close()
  return getattr(metadata, "tree", metadata)  # TreeMetadata in newer Orbax, the tree in older


def _restore_state(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                   checksum: int | None) -> Any:
  """The step's state, verified: its metadata is readable (restoring with a target does not
  need it, but load_state and predict do), shapes match the target's, bytes match the checksum."""
  _state_tree(manager.directory, step)
  state = manager.restore(step, args=ocp.args.Composite(
      state=_restore_args(abstract_state)))["state"]
  if not _same_shapes(state, abstract_state):
    raise ValueError("its arrays' shapes differ from the model's")
  if checksum is not None and state_checksum(state) != checksum:
    raise ValueError("its arrays differ from the checksum saved with them (a damaged data file)")
  return state


def _same_shapes(state: Any, abstract_state: Any) -> bool:
  same = jax.tree.map(lambda a, b: a.shape == b.shape, state, abstract_state)
  return all(jax.tree.leaves(same))


def _move_aside(manager: ocp.CheckpointManager, step: int, error: Exception, older: bool) -> Path:
  """Renames an unusable step to <step>.corrupt (.1, .2, ... if taken), which Orbax does not list,
  and reloads the manager's step list. Left in place, the step is retried and fails on every
  rerun, and Orbax refuses to save that step again (StepAlreadyExistsError)."""
  directory = Path(manager.directory)
  target, n = directory / f"{step}.corrupt", 0
  while target.exists():
    n += 1
    target = directory / f"{step}.corrupt.{n}"
  if jax.process_index() == 0:
    (directory / str(step)).rename(target)
  if jax.process_count() > 1:  # no host may reload before the rename
    ocp.multihost.sync_global_processes(f"camtl_checkpoint_move_aside_{step}")
  manager.reload()
  log.warning("checkpoint %d in %s is unreadable (%s); moved to %s%s", step, directory,
              _one_line(error), target, "; using the previous one" if older else "")
  return target


def _one_line(error: BaseException, limit: int = 200) -> str:
  """'Type: first line of the message' of the root cause (Orbax wraps TensorStore's error in a
  generic one), cut before TensorStore's multi-line spec dump."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error).strip().split("\n", 1)[0].split(" See full TensorStore details", 1)[0]
  text = text if len(text) <= limit else text[:limit - 3] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _quiet_async_noise() -> None:
  """Drops the echoes of a failed restore, which restore_latest has reported in one line: the
  outstanding reads complete after Orbax has closed its event loop, so Python reports unraisable
  'Event loop is closed' errors and Orbax coroutines that raised unawaited (with TensorStore's
  spec dump), and asyncio logs 'Task exception was never retrieved' for Orbax's tasks. Everything
  else passes through."""
  if not getattr(sys.unraisablehook, "_camtl_quiet", False):  # others (pytest) swap this hook
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
      if not _is_restore_echo(unraisable):
        previous(unraisable)

    hook._camtl_quiet = True
    sys.unraisablehook = hook
  asyncio_log = logging.getLogger("asyncio")
  if _not_orbax_task_noise not in asyncio_log.filters:
    asyncio_log.addFilter(_not_orbax_task_noise)


def _is_restore_echo(unraisable: Any) -> bool:
  error, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
  if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
    return True
  return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def _not_orbax_task_noise(record: logging.LogRecord) -> bool:
  message = record.getMessage()
  return not (message.startswith("Task exception was never retrieved") and "orbax" in message)


def best_step(manager: ocp.CheckpointManager) -> int | None:
  """The kept step with the best (highest) dev score its save carried; None if no kept step
  carried one. The scores are the steps' Orbax metrics on disk, so this survives resumes."""
  return manager.best_step()


def load_state(workdir: str | Path, step: int | None = None,
               verify: bool = True) -> tuple[int, Any]:
  """(step, state as numpy) of a workdir's checkpoint (default: the latest), without a config.

  For inspection, prediction and tests; training restores through `restore_latest` instead.
  Read-only (safe while a run writes the workdir). verify: ValueError when the state differs from
  the checksum saved with it.
  """
  _quiet_async_noise()
  manager = make_manager(workdir, async_save=False, read_only=True)
  directory = Path(manager.directory)
  try:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f"{workdir}: no checkpoint in {directory}")
    step = max(steps) if step is None else step
    if step not in steps:
      raise FileNotFoundError(f"{workdir}: no checkpoint {step} in {directory}; steps: "
                              f"{sorted(steps)}")
    # Onto this process's first device whatever devices saved it (e.g. a pod checkpoint read on a
    # laptop): without a target, Orbax insists on the saving topology.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          _state_tree(directory, step))
    state = manager.restore(step, args=ocp.args.Composite(state=_restore_args(target)))["state"]
  finally:
    manager.close()
  checksum = _read_meta(directory, step).get(CHECKSUM) if verify else None
  if checksum is not None and state_checksum(state) != checksum:
    raise ValueError(f"checkpoint {step} in {directory} is damaged: its arrays differ from the "
                     "checksum saved with them")
  return step, jax.tree.map(lambda x: jax.device_get(x), state)


# ------------------------------------------------------------------------------------------------
# Using a trained model: the best usable step, read-only

# The JSON files of a step, in the order they are read; a missing or unparsable one is named as
# the damaged file. (metrics/metrics exists only for steps saved with a score.)
_STEP_JSON = ("_CHECKPOINT_METADATA", "meta/metadata", "state/_METADATA", "state/_sharding")


class NoUsableCheckpoint(FileNotFoundError):
  """Every checkpoint of a workdir is damaged."""


def _score(directory: Path, step: int) -> float | None:
  """The dev score a step's save carried (its Orbax metrics file), None without a readable one."""
  try:
    metrics = json.loads((directory / str(step) / "metrics" / "metrics").read_text())
  except (OSError, ValueError):
    return None
  return _rank(metrics) if isinstance(metrics, dict) and SCORE in metrics else None


def ranked_steps(workdir: str | Path) -> list[int]:
  """A workdir's steps, best first: the steps saved with a dev score by score (NaN last, the
  later step first among equal scores, as Orbax's best_step), then the others latest first.
  Reads only the steps' small metrics files; writes nothing."""
  directory = checkpoint_dir(workdir)
  steps = sorted(ocp.utils.checkpoint_steps(directory), reverse=True) if directory.is_dir() else []
  scores = {step: _score(directory, step) for step in steps}
  scored = sorted((s for s in steps if scores[s] is not None), key=lambda s: (scores[s], s),
                  reverse=True)
  return scored + [s for s in steps if scores[s] is None]


def damage(workdir: str | Path, step: int, error: BaseException) -> str:
  """'FILE: what failed' for a step that failed to load: the first of its JSON files that is
  missing or not a JSON object, else its state folder with the array whose data could not be
  read (TensorStore names the OCDBT database, not the data file) or the checksum mismatch."""
  step_dir = checkpoint_dir(workdir) / str(step)
  for name in _STEP_JSON:
    path = step_dir / name
    try:
      value = json.loads(path.read_text())
    except FileNotFoundError:
      return f"{path}: missing"
    except (OSError, ValueError) as e:
      return f"{path}: {_one_line(e)}"
    if not isinstance(value, dict):
      return f"{path}: holds a {type(value).__name__}, not a JSON object"
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error).strip().split("\n", 1)[0].split(" See full TensorStore details", 1)[0]
  found = re.search(r'Error reading "([^"]+)" in OCDBT database at local file "[^"]*":\s*(.*)',
                    text)
  if found:
    reason = found.group(2)
    reason = reason if len(reason) <= 100 else reason[:97] + "..."
    return f"{step_dir / 'state'}: a data file cannot be read (array {found.group(1)}: {reason})"
  if "differ from the checksum" in text:
    return f"{step_dir / 'state'}: its arrays differ from the checksum saved with them"
  return f"{step_dir / 'state'}: {_one_line(error)}"


def load_usable_state(workdir: str | Path, steps: list[int] | None = None
                      ) -> tuple[int, Any, dict]:
  """(step, state as numpy, meta) of the first of `steps` (default: ranked_steps, best first)
  whose meta and state read and match their checksum.

  For using a trained model (predict, export, adapt): read-only, so a damaged step is neither
  moved nor repaired (training does that, restore_latest); each one is reported in one warning
  line naming the step and the damaged file, and the next one is tried. NoUsableCheckpoint, one
  line listing every damaged step, when none is left.
  """
  steps = ranked_steps(workdir) if steps is None else list(steps)
  if not steps:
    raise FileNotFoundError(f"{workdir}: no checkpoint in {checkpoint_dir(workdir)}")
  damaged = []
  for i, step in enumerate(steps):
    try:
      _, state = load_state(workdir, step)
      return step, state, load_meta(workdir, step)
    except Exception as e:  # noqa: BLE001 - any read failure means this checkpoint is unusable
      damaged.append(f"checkpoint {step} ({damage(workdir, step, e)})")
      if i + 1 < len(steps):
        log.warning("%s is damaged; using the next best, checkpoint %d", damaged[-1], steps[i + 1])
  raise NoUsableCheckpoint(
      f"no usable checkpoint left in {checkpoint_dir(workdir)}: " + "; ".join(damaged)
      + " are damaged. Rerunning the training command moves them aside and trains again.")
