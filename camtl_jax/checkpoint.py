"""Orbax checkpoints of the whole training state in the workdir.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. `state` is the train-state pytree (params,
optimizer state, step, data-usage mask, NaN counters); `meta` is JSON: the run's fingerprint
(task list, model shapes) and host-side counters. We keep the latest N checkpoints plus the best
one by the aggregate dev score, save asynchronously, and save on a preemption signal.

Restoring: the latest checkpoint is tried first; a half-written or corrupt one is reported and the
previous one is used. A workdir whose fingerprint differs from the current config fails with a
message that lists what differs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)

SCORE = "dev_score"


class WorkdirMismatch(ValueError):
  """The workdir holds checkpoints of a different task list or model shape."""


def make_manager(workdir: str | Path, keep: int = 3, save_every: int = 1000,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """CheckpointManager keeping the latest `keep` plus the best by `SCORE`, saving every
  `save_every` steps and whenever a preemption signal was received."""
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=policies.AnySavePolicy([
          policies.FixedIntervalPolicy(save_every),
          policies.PreemptionCheckpointingPolicy(),
      ]),
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(keep),
          policies.BestN(get_metric_fn=lambda m: m[SCORE], n=1,
                         keep_checkpoints_without_metrics=False),
      ]),
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,  # half-written saves of a killed run are removed at start
  )
  directory = Path(workdir).expanduser().resolve() / "checkpoints"
  return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, score: float | None = None,
         force: bool = False) -> bool:
  """Saves (asynchronously) when the policy says so, or always with force=True."""
  metrics = None if score is None else {SCORE: float(score)}
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)),
                      metrics=metrics, force=force)


def check_fingerprint(saved: dict, current: dict, workdir: str | Path) -> None:
  """Raises WorkdirMismatch naming every field whose value differs."""
  keys = sorted(set(saved) | set(current))
  diffs = [f"  {k}: workdir has {saved.get(k)!r}, config has {current.get(k)!r}"
           for k in keys if saved.get(k) != current.get(k)]
  if diffs:
    raise WorkdirMismatch(
        f"{workdir} holds checkpoints of a different run; differing fields:\n" + "\n".join(diffs) +
        "\nUse a new --workdir, or restore the original config.")


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any, fingerprint: dict,
                   workdir: str | Path) -> tuple[Any, dict] | None:
  """(state, meta) of the newest readable checkpoint, or None when there is none.

  abstract_state: a tree of jax.ShapeDtypeStruct with shardings, so arrays are restored straight
  onto their devices with their shardings.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001 - any read failure means this checkpoint is unusable
      log.warning("checkpoint %d in %s is unreadable (%s: %s); trying the previous one", step,
                  manager.directory, type(e).__name__, e)
      continue
    check_fingerprint(meta.get("fingerprint", {}), fingerprint, workdir)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))
    except Exception as e:  # noqa: BLE001
      log.warning("checkpoint %d in %s is corrupt or half-written (%s: %s); using the previous one",
                  step, manager.directory, type(e).__name__, e)
      continue
    state = restored["state"]
    if not _all_finite_shapes(state, abstract_state):
      log.warning("checkpoint %d has unexpected shapes; using the previous one", step)
      continue
    log.info("restored checkpoint %d from %s", step, manager.directory)
    return state, meta
  return None


def _all_finite_shapes(state: Any, abstract_state: Any) -> bool:
  same = jax.tree.map(lambda a, b: a.shape == b.shape, state, abstract_state)
  return all(jax.tree.leaves(same))


def best_step(manager: ocp.CheckpointManager) -> int | None:
  """The step with the best dev score among kept checkpoints (None if none was scored)."""
  return manager.best_step()


def load_state(workdir: str | Path, step: int | None = None) -> tuple[int, Any]:
  """(step, state as numpy) of a workdir's checkpoint (default: the latest), without a config.

  For inspection, prediction and tests; training restores through `restore_latest` instead.
  """
  manager = make_manager(workdir, async_save=False)
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"{workdir}: no checkpoint in {manager.directory}")
  step = max(steps) if step is None else step
  # Onto this process's first device whatever devices saved it (e.g. a pod checkpoint read on a
  # laptop): without a target, Orbax insists on the saving topology.
  with ocp.StandardCheckpointer() as reader:
    tree = reader.metadata(manager.directory / str(step) / "state")
  tree = getattr(tree, "item_metadata", tree)  # StepMetadata in newer Orbax, the tree in older
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  manager.close()
  return step, jax.tree.map(lambda x: jax.device_get(x), restored["state"])
