"""Sequence packing: MT-U's candidates for the scoring forward (host, numpy) and the selected
update batch (on the device, jnp).

MT-U scores T*b candidates per step, and padded to the longest of them most of that forward is
padding (GLUE-5's mean lengths are 11-67 tokens at max_length 128). Packing puts several
candidates, of any of the packed tasks, into a row of L = max_length tokens:

  rows [R, L]: input_ids, token_type_ids; segment_ids (1, 2, ... per candidate in the row, 0 for
               padding), position_ids (restarting at 0 in every segment), task_id (each token's
               candidate's task, 0 for padding)
  unpack_index [T, b, L] (a candidate key, laid out and sharded like input_ids): the flat
               position r * L + p in the global rows of each candidate token, NO_TOKEN where the
               candidate has no token.

The encoder masks attention across segments, reads positions (and the conditional attention
bias) by the position within each candidate, and conditions each token on its candidate's task
(every conditional module is a per-task FiLM, bias or adapter, gathered per token instead of per
row); unpacking gathers each candidate's hidden states back to [T*b, L, d], so the heads and the
uncertainty run unchanged (models/camtl.py). Mixing tasks in a row matters: packed one task per
row, each task's last row is part-empty (GLUE-5: 0.136 padding at the rows used against 0.027
mixed, over 200 real steps).

The number of rows is static: `rows_needed` (first-fit decreasing) over the first steps
of the run, the most any host needed, rounded up to the data devices. A later step that needs more
returns None from `pack`, and the loop scores it unpacked (a second program). The rows are filled
in order, and the scoring forward runs over chunks of them in a while_loop that stops after the
last row in use (`chunked_forward`): the plan's spare rows cost nothing on a step that does not
need them.

The update batch is data-dependent (MT-U picks b of the T*b candidates inside the compiled step),
so it is packed on the device: `pack_rows` places the b examples first-fit decreasing
into b rows (the most b examples can need), and the update runs over chunks of those rows with a
trip count of ceil(rows used / chunk rows) (update.py): the compute follows the tokens selected,
with static shapes and one program.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

NO_TOKEN = -1  # unpack_index of a candidate position without a token (gathered as zeros)
ROW_KEYS = ("input_ids", "token_type_ids", "segment_ids", "position_ids", "task_id")


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
  """Bins of item indices, each summing to <= capacity; longest items placed first, each in the
  first bin with room. Items of length 0 are left out."""
  bins: list[list[int]] = []
  room: list[int] = []
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    n = int(lengths[i])
    if n <= 0:
      continue
    if n > capacity:
      raise ValueError(f"a candidate of {n} tokens does not fit a packed row of {capacity}")
    slot = next((k for k, r in enumerate(room) if r >= n), None)
    if slot is None:
      bins.append([])
      room.append(capacity)
      slot = len(bins) - 1
    bins[slot].append(i)
    room[slot] -= n
  return bins


def rows_needed(lengths: np.ndarray, packed_tasks: Sequence[int], capacity: int) -> int:
  """Rows of `capacity` tokens that pack the candidates [T, b] of lengths of the packed tasks."""
  return len(first_fit_decreasing(lengths[list(packed_tasks)].reshape(-1), capacity))


def rows_per_host(host_lengths: Sequence[np.ndarray], packed_tasks: Sequence[int],
                  capacity: int, process_count: int, row_multiple: int) -> int:
  """Rows each host packs into: the most that any of `host_lengths` (candidate lengths [T, b_local]
  of some steps on every host) needs, rounded up so that the global rows (process_count times
  this) are a multiple of row_multiple (the data devices, or the scoring chunk's rows)."""
  most = max(rows_needed(lengths, packed_tasks, capacity) for lengths in host_lengths)
  multiple = max(1, row_multiple // max(process_count, 1))
  return -(-max(most, 1) // multiple) * multiple


def pack(candidates: dict[str, np.ndarray], packed_tasks: Sequence[int], rows_per_host: int,
         process_index: int = 0, process_count: int = 1
         ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
  """This host's candidates [T, b_local, K, L] -> (rows, unpack_index) or None if they need more
  than rows_per_host rows.

  rows: the ROW_KEYS [rows_per_host, L] int32 (task_id among them); unpack_index int32
  [T, b_local, L] into the global rows (this host's start at process_index * rows_per_host), with
  NO_TOKEN for the tasks not packed and for positions past each candidate's tokens.
  """
  mask = candidates["attention_mask"][:, :, 0]  # [T, b_local, L]; packed tasks have K = 1 rows
  num_tasks, b_local, length = mask.shape
  lengths = mask.sum(-1)
  if not np.array_equal(mask > 0, np.arange(length) < lengths[..., None]):
    raise ValueError("packing needs every candidate's tokens first and its padding after them")
  rows = {key: np.zeros((rows_per_host, length), np.int32) for key in ROW_KEYS}
  unpack = np.full((num_tasks, b_local, length), NO_TOKEN, np.int32)
  first_row = process_index * rows_per_host
  tasks = np.asarray(packed_tasks, np.int64)
  bins = first_fit_decreasing(lengths[tasks].reshape(-1), length)  # items: task-major (t, j)
  if len(bins) > rows_per_host:
    return None
  for r, members in enumerate(bins):
    offset = 0
    for segment, item in enumerate(members, start=1):
      t, j = int(tasks[item // b_local]), item % b_local
      n = int(lengths[t, j])
      span = slice(offset, offset + n)
      rows["input_ids"][r, span] = candidates["input_ids"][t, j, 0, :n]
      rows["token_type_ids"][r, span] = candidates["token_type_ids"][t, j, 0, :n]
      rows["segment_ids"][r, span] = segment
      rows["position_ids"][r, span] = np.arange(n)
      rows["task_id"][r, span] = t
      unpack[t, j, :n] = (first_row + r) * length + offset + np.arange(n)
      offset += n
  return rows, unpack


# The key of an evaluation batch that holds its packed rows (pack_eval_batch).
EVAL_ROWS_KEY = "packed_rows"


def pack_eval_batch(batch: dict[str, np.ndarray], task_id: int, valid: np.ndarray,
                    process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
  """One task's evaluation batch [B_local, 1, L] (this host's slice) -> the same batch with its
  examples packed: batch['unpack_index'] [B_local, L] and batch[EVAL_ROWS_KEY] (the ROW_KEYS
  [B_local, L]; B_local rows always suffice, one example fits a row). The padding slots
  (valid False) get no tokens; the caller drops their outputs."""
  mask = np.where(valid[:, None, None], batch["attention_mask"], 0)
  candidates = {"input_ids": batch["input_ids"][None], "attention_mask": mask[None],
                "token_type_ids": batch["token_type_ids"][None]}
  rows, unpack = pack(candidates, (0,), len(valid), process_index, process_count)
  rows["task_id"] = np.where(rows["segment_ids"] > 0, task_id, 0).astype(np.int32)
  return dict(batch, unpack_index=unpack[0], **{EVAL_ROWS_KEY: rows})


def padding_fraction(rows: dict[str, np.ndarray]) -> float:
  """Share of the packed token slots that hold no token."""
  return float(np.mean(rows["segment_ids"] == 0))


@dataclasses.dataclass(frozen=True)
class PackPlan:
  """How a run packs its MT-U candidates: the task ids packed (the tasks without choices), the
  rows per host and this host's place. rows_per_host 0: no packing."""
  tasks: tuple[int, ...]
  rows_per_host: int
  process_index: int = 0
  process_count: int = 1

  @property
  def enabled(self) -> bool:
    return self.rows_per_host > 0 and bool(self.tasks)


def plan(lengths: Sequence[np.ndarray], candidate_indices: Callable[[int], np.ndarray],
         packed_tasks: Sequence[int], capacity: int, process_index: int, process_count: int,
         row_multiple: int, steps: int = 256) -> PackPlan:
  """The PackPlan of a run: rows_per_host from the candidate lengths of its first `steps` steps
  on every host (lengths[t]: the token counts of task t's train rows; candidate_indices(step):
  the global candidate rows [T, b] of a step), so every host computes the same plan."""
  per_host = [x for step in range(steps)
              for x in host_lengths(lengths, candidate_indices(step), process_count)]
  rows = rows_per_host(per_host, packed_tasks, capacity, process_count, row_multiple)
  return PackPlan(tuple(packed_tasks), rows, process_index, process_count)


def host_lengths(lengths: Sequence[np.ndarray], idx: np.ndarray, process_count: int
                 ) -> list[np.ndarray]:
  """Token counts [T, b_local] of each host's candidates, from the global candidate rows [T, b]."""
  local = idx.shape[1] // process_count
  return [np.stack([np.asarray(lengths[t])[idx[t, p * local:(p + 1) * local]]
                    for t in range(len(idx))]) for p in range(process_count)]


def pack_step(candidates: dict[str, np.ndarray], pack_plan: PackPlan,
              step_lengths: Sequence[np.ndarray]) -> dict[str, np.ndarray] | None:
  """This host's packed rows for a step, adding candidates['unpack_index'] (in place); None
  (candidates unchanged) when packing is off or the step needs more rows than planned on ANY host
  (step_lengths: host_lengths of the step), so that every host runs the same program."""
  if not pack_plan.enabled or any(
      rows_needed(x, pack_plan.tasks, candidates["input_ids"].shape[-1]) > pack_plan.rows_per_host
      for x in step_lengths):
    return None
  packed = pack(candidates, pack_plan.tasks, pack_plan.rows_per_host, pack_plan.process_index,
                pack_plan.process_count)
  if packed is None:
    return None
  rows, candidates["unpack_index"] = packed
  return rows


# ------------------------------------------------------------------------------------------------
# On the device: the selected update batch


def first_fit_rows(lengths: jax.Array, capacity: int, num_rows: int
                   ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """First-fit decreasing, traced: examples [B] of `lengths` tokens into rows of `capacity`,
  rows opened in order.

  Returns (row [B], offset [B], segment [B] (1-based within the row), rows used []); examples of
  length 0 get row -1. The same bins as `first_fit_decreasing` (longest first, ties in index
  order, each in the first row with room).
  """
  order = jnp.argsort(-lengths, stable=True)

  def place(carry, i):
    row_fill, row_segments, used = carry
    n = lengths[i]
    fits = (jnp.arange(num_rows) < used) & (row_fill + n <= capacity)
    row = jnp.where(jnp.any(fits), jnp.argmax(fits), used)
    row = jnp.where(n > 0, row, num_rows)  # out of range: the updates below are dropped
    offset = row_fill.at[row].get(mode="fill", fill_value=0)
    segment = row_segments.at[row].get(mode="fill", fill_value=0) + 1
    opened = ((row == used) & (n > 0)).astype(used.dtype)
    carry = (row_fill.at[row].add(n, mode="drop"), row_segments.at[row].add(1, mode="drop"),
             used + opened)
    return carry, (jnp.where(n > 0, row, -1), offset, segment)

  init = (jnp.zeros((num_rows,), jnp.int32), jnp.zeros((num_rows,), jnp.int32),
          jnp.zeros((), jnp.int32))
  (_, _, used), placed = jax.lax.scan(place, init, order)
  row, offset, segment = (jnp.zeros_like(x).at[order].set(x) for x in placed)
  return row, offset, segment, used


def pack_rows(batch: dict[str, jax.Array], num_rows: int
              ) -> tuple[dict[str, jax.Array], jax.Array, jax.Array, jax.Array]:
  """The examples of an update batch (input_ids, token_type_ids, attention_mask [B, 1, L], task_id
  [B]; each example's tokens first) packed into num_rows (>= B) rows of L tokens, traced.

  Returns (rows: the ROW_KEYS [num_rows, L]; unpack_index [B, L] into the
  flat rows, NO_TOKEN past each example's tokens; row [B] of each example (-1: no tokens); the
  number of rows used []).
  """
  mask = batch["attention_mask"][:, 0]
  length = mask.shape[-1]
  lengths = jnp.sum(mask > 0, axis=-1).astype(jnp.int32)
  row, offset, segment, used = first_fit_rows(lengths, length, num_rows)
  pos = jnp.arange(length, dtype=jnp.int32)
  valid = (pos[None, :] < lengths[:, None]) & (row[:, None] >= 0)
  flat = row[:, None] * length + offset[:, None] + pos[None, :]  # [B, L]
  target = jnp.where(valid, flat, num_rows * length).reshape(-1)  # out of range: dropped

  def scatter(values: jax.Array) -> jax.Array:
    values = jnp.broadcast_to(values, valid.shape).astype(jnp.int32).reshape(-1)
    empty = jnp.zeros((num_rows * length,), jnp.int32)
    return empty.at[target].set(values, mode="drop").reshape(num_rows, length)

  rows = {"input_ids": scatter(batch["input_ids"][:, 0]),
          "token_type_ids": scatter(batch["token_type_ids"][:, 0]),
          "segment_ids": scatter(segment[:, None]), "position_ids": scatter(pos[None, :]),
          "task_id": scatter(batch["task_id"][:, None])}
  return rows, jnp.where(valid, flat, NO_TOKEN), row, used


def example_rows(unpack_index: jax.Array, length: int) -> jax.Array:
  """The row holding each example's tokens [B] (row 0 for an example without tokens), from
  unpack_index [B, L] into rows of `length` tokens."""
  return jnp.where(unpack_index[:, 0] >= 0, unpack_index[:, 0] // length, 0)


def chunk_of(rows: dict[str, jax.Array], unpack_index: jax.Array, example_row: jax.Array,
             chunk: jax.Array,
             chunk_rows: int) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
  """Rows [chunk * chunk_rows, (chunk + 1) * chunk_rows) of pack_rows' rows, traced.

  Returns (the chunk's rows [chunk_rows, L]; unpack_index [B, L] into
  them, NO_TOKEN for the examples in other chunks; in_chunk [B] bool).
  """
  start = chunk * chunk_rows
  part = {k: jax.lax.dynamic_slice_in_dim(v, start, chunk_rows, axis=0) for k, v in rows.items()}
  in_chunk = (example_row >= start) & (example_row < start + chunk_rows)
  local = unpack_index - start * rows["input_ids"].shape[1]
  return part, jnp.where(in_chunk[:, None] & (unpack_index >= 0), local, NO_TOKEN), in_chunk


def rows_in_use(rows: dict[str, jax.Array]) -> jax.Array:
  """1 + the index of the last row holding a token ([] int32; rows are filled in order)."""
  used = jnp.any(rows["segment_ids"] > 0, axis=1)
  return jnp.max(jnp.where(used, jnp.arange(1, used.shape[0] + 1, dtype=jnp.int32), 0))


def chunked_forward(forward: Callable[[dict, jax.Array], dict], rows: dict[str, jax.Array],
                    unpack_index: jax.Array, chunk_rows: int) -> dict[str, jax.Array]:
  """Per-example outputs of a packed forward run chunk by chunk, traced.

  forward(chunk rows [chunk_rows, L], unpack_index [N, L] into them) -> {key: [N, ...]};
  rows [R, L] (R a multiple of chunk_rows), unpack_index [N, L] into them. A while_loop runs the
  chunks up to the last row in use; each example's outputs come from the chunk holding its
  tokens (an example without tokens: from chunk 0, where, as unchunked, it reads zeros).
  """
  example_row = example_rows(unpack_index, rows["input_ids"].shape[1])
  num_chunks = (rows_in_use(rows) + chunk_rows - 1) // chunk_rows
  part, local, _ = chunk_of(rows, unpack_index, example_row, jnp.int32(0), chunk_rows)
  shapes = jax.eval_shape(forward, part, local)

  def body(carry):
    chunk, outputs = carry
    part, local, in_chunk = chunk_of(rows, unpack_index, example_row, chunk, chunk_rows)
    new = forward(part, local)
    pick = lambda n, o: jnp.where(in_chunk.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)  # noqa: E731
    return chunk + 1, jax.tree.map(pick, new, outputs)

  init = (jnp.zeros((), jnp.int32), jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes))
  return jax.lax.while_loop(lambda c: c[0] < jnp.maximum(num_chunks, 1), body, init)[1]
