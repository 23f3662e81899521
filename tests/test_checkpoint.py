"""checkpoint.py on a small pytree state (no model): the best step kept across resumes, unreadable
checkpoints moved aside, fingerprint diffs and read_fingerprint, the state checksum, and which
replicated leaves are saved replica-parallel on several devices."""
import json
import logging
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camtl_jax import checkpoint, workdir

FP = {"tasks": ["a", "b"], "encoder": {"num_layers": 2, "hidden_size": 8}}


def _state(v: int) -> dict:
  # 5000 floats: large enough that the array lands in its own OCDBT data file.
  return {"params": {"w": jnp.arange(5000, dtype=jnp.float32) + v,
                     "b": jnp.full((2, 3), v, jnp.bfloat16)},
          "step": jnp.int32(v), "used": jnp.zeros(7, bool).at[v % 7].set(True)}


def _abstract() -> dict:
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), _state(0))


def _meta(step: int, score: float | None = None) -> dict:
  evals = {} if score is None else {str(step): {"results": {}, "score": score}}
  return {"fingerprint": FP, "evals": evals}


def _assert_state(state, v: int) -> None:
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(_state(v)))


def _save_steps(workdir, steps, async_save=False) -> None:
  manager = checkpoint.make_manager(workdir, keep=5, save_every=10, async_save=async_save)
  for step in steps:
    assert checkpoint.save(manager, step, _state(step), _meta(step), force=True)
  manager.wait_until_finished()
  manager.close()


def _on_disk(workdir) -> list[str]:
  return sorted((p.name for p in (workdir / "checkpoints").iterdir() if p.name[0].isdigit()),
                key=lambda n: (int(n.split(".")[0]), n))


def _records(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.name == checkpoint.__name__]


# ------------------------------------------------------------------------------------------------
# The best step


def test_best_step_is_kept_and_reported_across_resumes(tmp_path):
  manager = checkpoint.make_manager(tmp_path, keep=2, save_every=10)  # async, as in training
  for step, score in [(10, .5), (20, .9), (30, .4), (40, .3)]:
    assert checkpoint.save(manager, step, _state(step), _meta(step, score), score=score)
  manager.wait_until_finished()
  assert _on_disk(tmp_path) == ["20", "30", "40"]
  assert checkpoint.best_step(manager) == 20
  manager.close()

  manager = checkpoint.make_manager(tmp_path, keep=2, save_every=10)  # a resumed run
  assert checkpoint.best_step(manager) == 20
  assert checkpoint.save(manager, 50, _state(50), _meta(50, .1), score=.1)
  manager.wait_until_finished()
  assert _on_disk(tmp_path) == ["20", "40", "50"]
  assert checkpoint.save(manager, 60, _state(60), _meta(60))  # a periodic save, no score
  manager.wait_until_finished()
  assert _on_disk(tmp_path) == ["20", "50", "60"]
  assert checkpoint.best_step(manager) == 20
  manager.close()
  reader = checkpoint.make_manager(tmp_path, read_only=True)
  assert checkpoint.best_step(reader) == 20


def test_best_step_is_none_without_scores_and_nan_ranks_last(tmp_path):
  _save_steps(tmp_path / "unscored", [10, 20])
  assert checkpoint.best_step(checkpoint.make_manager(tmp_path / "unscored")) is None
  manager = checkpoint.make_manager(tmp_path / "nan", save_every=10, async_save=False)
  for step, score in [(10, .5), (20, float("nan")), (30, .2)]:
    checkpoint.save(manager, step, _state(step), _meta(step), score=score)
  assert checkpoint.best_step(manager) == 10


def test_save_follows_the_policy_unless_forced(tmp_path):
  manager = checkpoint.make_manager(tmp_path, save_every=10, async_save=False)
  assert not checkpoint.save(manager, 5, _state(5), _meta(5))
  assert checkpoint.save(manager, 7, _state(7), _meta(7), force=True)
  assert checkpoint.save(manager, 10, _state(10), _meta(10))
  assert _on_disk(tmp_path) == ["7", "10"]


# ------------------------------------------------------------------------------------------------
# Unreadable checkpoints


def _data_file(step_dir):
  """The largest OCDBT data file of the step's state (holds `w`)."""
  files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
  return max(files, key=lambda f: f.stat().st_size)


def _truncate_half(path):
  os.truncate(path, path.stat().st_size // 2)


def _garbage(path):
  path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _flip_byte(path):
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))


DAMAGE = {
    "truncated_data_file": lambda d: _truncate_half(_data_file(d)),
    "deleted_state_metadata": lambda d: (d / "state" / "_METADATA").unlink(),
    "deleted_meta_json": lambda d: (d / "meta" / "metadata").unlink(),
    "garbage_meta_json": lambda d: (d / "meta" / "metadata").write_bytes(b"\0{not json"),
    "garbage_state_file": lambda d: _garbage(_data_file(d)),
    "flipped_byte_in_data_file": lambda d: _flip_byte(_data_file(d)),  # caught by the checksum
    "truncated_manifest": lambda d: _truncate_half(d / "state" / "manifest.ocdbt"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_unreadable_checkpoint_is_moved_aside_and_its_step_saved_again(tmp_path, caplog, damage):
  _save_steps(tmp_path, [10, 20])
  ckpts = tmp_path / "checkpoints"
  DAMAGE[damage](ckpts / "20")
  manager = checkpoint.make_manager(tmp_path, save_every=10, async_save=False)
  with caplog.at_level(logging.INFO, logger=checkpoint.__name__):
    state, meta = checkpoint.restore_latest(manager, _abstract(), FP, tmp_path)
  _assert_state(state, 10)
  assert meta == _meta(10)  # the caller's meta, without the checksum
  assert _on_disk(tmp_path) == ["10", "20.corrupt"]
  [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert warning.startswith(f"checkpoint 20 in {ckpts} is unreadable (")
  assert warning.endswith(f"); moved to {ckpts / '20.corrupt'}; using the previous one")
  assert "\n" not in warning and "TensorStore details" not in warning
  assert len(warning) < 2 * len(str(ckpts)) + 330  # the error: its first line, <= 200 chars
  assert list(manager.all_steps()) == [10]
  assert checkpoint.save(manager, 20, _state(20), _meta(20), force=True)  # no StepAlreadyExists
  manager.close()
  state, _ = checkpoint.restore_latest(checkpoint.make_manager(tmp_path), _abstract(), FP, tmp_path)
  _assert_state(state, 20)


def test_no_usable_checkpoint_starts_from_zero(tmp_path, caplog):
  _save_steps(tmp_path, [10, 20])
  ckpts = tmp_path / "checkpoints"
  (ckpts / "19.corrupt").mkdir()  # unrelated; and 20.corrupt taken -> 20.corrupt.1
  (ckpts / "20.corrupt").mkdir()
  DAMAGE["truncated_manifest"](ckpts / "20")
  DAMAGE["deleted_meta_json"](ckpts / "10")
  manager = checkpoint.make_manager(tmp_path, async_save=False)
  with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
    assert checkpoint.restore_latest(manager, _abstract(), FP, tmp_path) is None
  assert _on_disk(tmp_path) == ["10.corrupt", "19.corrupt", "20.corrupt", "20.corrupt.1"]
  first, second, last = _records(caplog)
  assert first.endswith(f"moved to {ckpts / '20.corrupt.1'}; using the previous one")
  assert second.startswith(f"checkpoint 10 in {ckpts} is unreadable (FileNotFoundError: ")
  assert second.endswith(f"moved to {ckpts / '10.corrupt'}")
  assert last == f"no usable checkpoint in {ckpts}; starting from step 0"
  assert manager.all_steps() == []


def test_empty_workdir_restores_nothing_quietly(tmp_path, caplog):
  manager = checkpoint.make_manager(tmp_path, async_save=False)
  with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
    assert checkpoint.restore_latest(manager, _abstract(), FP, tmp_path) is None
  assert _records(caplog) == []


def test_fingerprint_mismatch_raises_and_moves_nothing(tmp_path):
  _save_steps(tmp_path, [10, 20])
  manager = checkpoint.make_manager(tmp_path, async_save=False)
  with pytest.raises(checkpoint.WorkdirMismatch, match=r"tasks: \['a', 'b'\] -> \['a'\]"):
    checkpoint.restore_latest(manager, _abstract(), {**FP, "tasks": ["a"]}, tmp_path)
  assert _on_disk(tmp_path) == ["10", "20"]


def test_failed_restore_echoes_are_dropped_and_the_rest_kept(monkeypatch, tmp_path):
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  manager = checkpoint.make_manager(tmp_path, async_save=False)
  for _ in range(2):  # a restore installs the filters, a second one no second wrapper
    assert checkpoint.restore_latest(manager, _abstract(), FP, tmp_path) is None

  def unraisable(error, obj=None):
    return types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None,
                                 err_msg=None, object=obj)

  async def orbax_read():  # stands in for Orbax's coroutine that raised unawaited
    pass
  coroutine = orbax_read()
  orbax_code = coroutine.cr_code.replace(co_filename=f"{os.sep}x{os.sep}orbax{os.sep}serial.py")
  coroutine.close()
  other = unraisable(RuntimeError("something else"))
  for u in (unraisable(RuntimeError("Event loop is closed")),
            unraisable(Exception("Encountered error"), types.SimpleNamespace(cr_code=orbax_code)),
            other):
    sys.unraisablehook(u)
  assert seen == [other]
  asyncio_log = logging.getLogger("asyncio")

  def record(message):
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, None)
  assert not asyncio_log.filter(record("Task exception was never retrieved\nfuture: <Task "
                                       "coro=<async_deserialize() at /x/orbax/checkpoint/s.py>>"))
  assert asyncio_log.filter(record("Task exception was never retrieved\nfuture: <Task mine>"))


# ------------------------------------------------------------------------------------------------
# The state checksum and load_state


def test_state_checksum_sees_any_single_element_change():
  state = {**_state(3), "key": jax.random.key(0), "raw_key": jax.random.PRNGKey(1)}
  value = checkpoint.state_checksum(state)
  assert value == checkpoint.state_checksum(jax.tree.map(jnp.copy, state))
  plain = _state(3)
  assert checkpoint.state_checksum(jax.device_get(plain)) == checkpoint.state_checksum(plain)
  w, b = state["params"]["w"], state["params"]["b"]
  changes = [{"w": w.at[4321].add(1e-3), "b": b},
             {"w": w.at[jnp.array([1, 2])].set(w[jnp.array([2, 1])]), "b": b},  # a swap
             {"w": w, "b": b.at[1, 2].set(-1)}]
  for params in changes:
    assert checkpoint.state_checksum({**state, "params": params}) != value
  assert checkpoint.state_checksum({**state, "used": ~state["used"]}) != value


def test_load_state_reads_a_checkpoint_read_only_and_verifies_it(tmp_path):
  _save_steps(tmp_path, [10, 20])
  in_progress = tmp_path / "checkpoints" / "30.orbax-checkpoint-tmp-1"  # a live run's save
  in_progress.mkdir()
  step, state = checkpoint.load_state(tmp_path, 10)
  assert step == 10 and isinstance(state["params"]["w"], np.ndarray)
  _assert_state(state, 10)
  assert in_progress.is_dir()
  _flip_byte(_data_file(tmp_path / "checkpoints" / "20"))
  with pytest.raises(ValueError, match="checkpoint 20 .* is damaged"):
    checkpoint.load_state(tmp_path)
  assert checkpoint.load_state(tmp_path, verify=False)[0] == 20


# ------------------------------------------------------------------------------------------------
# Fingerprints


def test_fingerprint_mismatch_lists_only_the_differing_leaves(tmp_path):
  saved = {"tasks": ["a", "b"], "encoder": {"num_layers": 2, "hidden_size": 8},
           "model": {"adapter": True}, "names": ["x", "y"], "long": "v" * 500}
  current = {"tasks": ("a",), "encoder": {"num_layers": 1, "hidden_size": 8},
             "names": ["x", "z"], "max_length": 128, "long": "w" * 500}
  with pytest.raises(checkpoint.WorkdirMismatch) as e:
    checkpoint.check_fingerprint(saved, current, tmp_path)
  message = str(e.value)
  assert "\n" not in message  # one line: the CLI shows it whole
  head, _, rest = message.partition(": ")
  assert head == f"{tmp_path} holds checkpoints of a different run (workdir -> config)"
  parts = rest.removesuffix(". Use a new --workdir, or restore the original config.").split("; ")
  assert parts[:1] + parts[2:] == [
      "encoder.num_layers: 2 -> 1",
      "max_length: <absent> -> 128",
      "model: {'adapter': True} -> <absent>",
      "names[1]: 'y' -> 'z'",
      "tasks: ['a', 'b'] -> ['a']"]
  assert parts[1].startswith("long: 'vvv") and len(parts[1]) < 260
  assert message.endswith(". Use a new --workdir, or restore the original config.")
  checkpoint.check_fingerprint({"tasks": ["a"], "n": 2}, {"tasks": ("a",), "n": 2}, tmp_path)


def test_read_fingerprint_reads_only_meta_and_writes_nothing(tmp_path):
  assert checkpoint.read_fingerprint(tmp_path / "new") is None
  assert not (tmp_path / "new").exists()
  _save_steps(tmp_path, [10, 20])
  ckpts = tmp_path / "checkpoints"
  newer = {**FP, "tasks": ["c"]}
  meta20 = ckpts / "20" / "meta" / "metadata"
  meta20.write_text(json.dumps({**json.loads(meta20.read_text()), "fingerprint": newer}))
  DAMAGE["truncated_manifest"](ckpts / "20")  # the state is not read
  before = sorted(str(p) for p in tmp_path.rglob("*"))
  assert checkpoint.read_fingerprint(tmp_path) == newer
  meta20.unlink()
  assert checkpoint.read_fingerprint(tmp_path) == FP  # the newest readable meta
  assert sorted(str(p) for p in tmp_path.rglob("*")) == [p for p in before if p != str(meta20)]


# ------------------------------------------------------------------------------------------------
# Using a trained model: the best usable step, read-only (predict, export, adapt)


def _every_state_file_garbage(step_dir):
  for f in (step_dir / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")


USE_DAMAGE = {  # damage kind -> the file or folder the report must name (below checkpoints/10)
    "truncated_data_file": "state",
    "deleted_data_file": "state",
    "deleted_state_metadata": "state/_METADATA: missing",
    "deleted_meta_json": "meta/metadata: missing",
    "empty_meta_json": "meta/metadata: JSONDecodeError: Expecting value",
    "garbage_meta_json": "meta/metadata: JSONDecodeError",
    "garbage_state_file": "state",
    "every_state_file_garbage": "state/_METADATA: JSONDecodeError: Expecting value",
    "flipped_byte_in_data_file": "state",
    "truncated_manifest": "state",
}
USE_DAMAGE_FN = {**DAMAGE, "deleted_data_file": lambda d: _data_file(d).unlink(),
                 "empty_meta_json": lambda d: (d / "meta" / "metadata").write_text(""),
                 "every_state_file_garbage": _every_state_file_garbage}


def _save_scored(workdir, scores: dict) -> None:
  manager = checkpoint.make_manager(workdir, keep=5, save_every=10, async_save=False)
  for step, score in scores.items():
    assert checkpoint.save(manager, step, _state(step), _meta(step, score), score, force=True)
  manager.wait_until_finished()
  manager.close()


def _snapshot(path) -> dict:
  return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_ranked_steps_put_the_best_score_first_then_the_unscored_latest_first(tmp_path):
  _save_scored(tmp_path, {10: 0.9, 20: 0.5, 30: None, 40: 0.9, 50: None})
  assert checkpoint.ranked_steps(tmp_path) == [40, 10, 20, 50, 30]
  assert workdir.select_step(tmp_path) == 40
  # results.json names the step that predict and export load: the later of equal scores.
  from camtl_jax import train  # pylint: disable=import-outside-toplevel
  evals = {"10": {"score": 0.9}, "20": {"score": 0.5}, "40": {"score": 0.9},
           "60": {"score": float("nan")}}
  assert train.best_evaluated_step(evals) == "40"


@pytest.mark.parametrize("damage", sorted(USE_DAMAGE))
def test_using_a_model_falls_back_from_a_damaged_best_step_and_moves_nothing(
    tmp_path, caplog, damage):
  _save_scored(tmp_path, {10: 0.9, 20: 0.5, 30: None})  # best: 10, then 20, then 30
  step_dir = tmp_path / "checkpoints" / "10"
  USE_DAMAGE_FN[damage](step_dir)
  before = _snapshot(tmp_path)
  with caplog.at_level(logging.WARNING):
    step, params, meta = workdir.restore(tmp_path)
  assert step == 20 and meta == _meta(20, 0.5)
  _assert_state({**_state(20), "params": params}, 20)
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
              and r.name == checkpoint.__name__]
  assert len(warnings) == 1 and "\n" not in warnings[0], warnings
  assert warnings[0].startswith(f"checkpoint 10 ({step_dir / USE_DAMAGE[damage]}")
  assert warnings[0].endswith("is damaged; using the next best, checkpoint 20")
  assert _snapshot(tmp_path) == before  # read-only: nothing moved, nothing written


def test_no_usable_checkpoint_left_is_one_line_naming_each_damaged_step(tmp_path):
  _save_scored(tmp_path, {10: 0.9, 20: None})
  ckpts = tmp_path / "checkpoints"
  USE_DAMAGE_FN["empty_meta_json"](ckpts / "10")
  USE_DAMAGE_FN["truncated_data_file"](ckpts / "20")
  with pytest.raises(checkpoint.NoUsableCheckpoint) as e:
    workdir.restore(tmp_path)
  message = str(e.value)
  assert "\n" not in message and message.startswith(f"no usable checkpoint left in {ckpts}: ")
  assert f"checkpoint 10 ({ckpts / '10' / 'meta' / 'metadata'}: JSONDecodeError" in message
  assert f"checkpoint 20 ({ckpts / '20' / 'state'}" in message


def test_a_damaged_step_asked_for_is_an_error_naming_it_and_its_file(tmp_path):
  _save_scored(tmp_path, {10: 0.9, 20: 0.5})
  USE_DAMAGE_FN["every_state_file_garbage"](tmp_path / "checkpoints" / "20")
  with pytest.raises(ValueError) as e:
    workdir.restore(tmp_path, 20)
  assert str(e.value).startswith(
      f"checkpoint 20 is damaged ({tmp_path / 'checkpoints' / '20' / 'state' / '_METADATA'}: ")
  with pytest.raises(FileNotFoundError, match=r"no checkpoint 15; its steps: \[10, 20\]"):
    workdir.restore(tmp_path, 15)
  assert workdir.restore(tmp_path, 10)[0] == 10


# ------------------------------------------------------------------------------------------------
# Several devices

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.mark.multidevice
@pytest.mark.parametrize("min_slice_bytes, splits", [
    (checkpoint.REPLICA_PARALLEL_MIN_SLICE_BYTES, False), (0, True)])
def test_a_replicated_state_writes_small_leaves_whole(tmp_path, monkeypatch, min_slice_bytes,
                                                      splits):
  """A replicated leaf whose per-replica slice would be under REPLICA_PARALLEL_MIN_SLICE_BYTES is
  written whole by one replica: the save compiles nothing (Orbax's default, threshold 0, compiles
  a slicing program per leaf and replica on several devices) and the state restores replicated."""
  monkeypatch.setattr(checkpoint, "REPLICA_PARALLEL_MIN_SLICE_BYTES", min_slice_bytes)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.device_put(_state(3), replicated)
  checkpoint.state_checksum(state)  # its program compiles here, not in the save
  compiles = []

  def count(event: str, seconds: float, **kwargs) -> None:
    del seconds, kwargs
    if event == _COMPILE_EVENT:
      compiles.append(event)
  jax.monitoring.register_event_duration_secs_listener(count)
  try:
    manager = checkpoint.make_manager(tmp_path, async_save=False)
    assert checkpoint.save(manager, 3, state, _meta(3), force=True)
    manager.wait_until_finished()
  finally:
    jax.monitoring.unregister_event_duration_listener(count)
  assert (len(compiles) > 0) == (splits and jax.device_count() > 1), compiles
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        state)
  restored, _ = checkpoint.restore_latest(manager, target, FP, tmp_path)
  _assert_state(restored, 3)
  assert all(leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
             for leaf in jax.tree.leaves(restored))
  manager.close()
