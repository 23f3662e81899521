"""The update's loss and gradient over the b selected examples.

Two ways, the same gradient (tests/test_packing.py):
  padded: the batch [b, K, L] as it is, scanned over grad_accum_steps micro-batches;
  packed: the examples packed on the device into rows of L tokens (packing.pack_rows), and the
          gradient summed over chunks of `chunk_rows` rows in a while_loop whose trip count is
          ceil(rows used / chunk_rows): the encoder runs on the selected tokens, not on b * L slots.
          Each chunk's gradient is taken inside the loop body, so nothing is differentiated
          through the loop. Only for batches with one sequence per example (no multiple choice).

The loss is sum_i w_i * (loss_i + aux_loss_i) with w_i = 1 / (n_t(i) * P) (example_weights): the
mean over the P tasks present of each task's mean loss (DESIGN 4.2 step 6; a task's weight in the
gradient is 1/P whatever its share of the rows). loss_weighting="example_mean" instead weights every
selected example alike, w_i = 1 / n: a task's weight is its share of the batch. Either way
config.regression_loss_scale multiplies the regression tasks' w_i (experiment.task_loss_scale).

guarded_apply is the optimizer step behind the NaN/Inf guard; the train step and adaptation's
step both take it.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

import optax

from camtl_jax import optim, packing, sharding


LOSS_WEIGHTINGS = ("task_mean", "example_mean")


def example_weights(task_id: jax.Array, weight: jax.Array, num_tasks: int,
                    loss_weighting: str = "task_mean",
                    task_scale: tuple[float, ...] | None = None) -> jax.Array:
  """[B] weights w_i = 1 / (n_{t(i)} * P): sum_i w_i loss_i is the mean over the P tasks present of
  each task's mean loss ("example_mean": w_i = 1 / n, the mean over the n real examples). Written
  per example so micro-batches and chunks add up exactly. weight [B] is 0 for padding rows.
  task_scale [T] (config.regression_loss_scale, experiment.task_loss_scale) multiplies each
  task's examples; None leaves the weights as they are."""
  if loss_weighting == "example_mean":
    w = weight / jnp.maximum(jnp.sum(weight), 1.0)
  else:
    counts = jax.ops.segment_sum(weight, task_id, num_segments=num_tasks)
    present = jnp.maximum(jnp.sum(counts > 0), 1)
    w = weight / (jnp.maximum(counts[task_id], 1.0) * present)
  if task_scale is not None:
    w = w * jnp.asarray(task_scale, jnp.float32)[task_id]
  return w


def _loss_fn(ctx, frozen, head_types: tuple[str, ...] | None = None):
  """(trainable params, batch with '_w' [B], dropout key, packed rows or None) ->
  (weighted loss, per-example loss [B]); head_types: only these heads run (None: all)."""

  def loss_fn(train_params, batch, key, packed_rows=None):
    params = optim.merge(train_params, frozen)
    out = ctx.model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": key},
                          packed=packed_rows, head_types=head_types)
    per_example = out["loss"] + out["aux_loss"]
    return jnp.sum(per_example * batch["_w"]), out["loss"]
  return loss_fn


def padded_loss_and_grads(ctx, trainable, frozen, batch: dict[str, jax.Array], rng: jax.Array,
                          head_types: tuple[str, ...] | None = None
                          ) -> tuple[jax.Array, Any, jax.Array]:
  """(loss, gradient w.r.t. the trainable leaves, per-example loss [b]) of the batch [b, K, L],
  scanned over ctx.grad_accum_steps micro-batches; head_types: only these heads (None: all).
  Every micro-batch uses `rng`, with its examples' indices in the whole batch as their dropout
  keys (models.bert.RowDropout): the masks do not depend on grad_accum_steps."""
  weights = example_weights(batch["task_id"], batch["weight"], ctx.num_tasks,
                              ctx.loss_weighting, ctx.task_loss_scale)
  k = ctx.grad_accum_steps
  batch_index = jnp.arange(batch["task_id"].shape[0], dtype=jnp.int32)
  micro = jax.tree.map(lambda x: x.reshape((k, -1) + x.shape[1:]),
                       dict(batch, _w=weights, batch_index=batch_index))
  grad_fn = jax.value_and_grad(_loss_fn(ctx, frozen, head_types), has_aux=True)

  def body(carry, mb):
    loss_acc, grad_acc = carry
    (loss, per_example), grads = grad_fn(trainable, mb, rng)
    return (loss_acc + loss, jax.tree.map(jnp.add, grad_acc, grads)), per_example

  init = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, trainable))
  (loss, grads), per_example = jax.lax.scan(body, init, micro)
  return loss, grads, per_example.reshape(-1)


def packed_loss_and_grads(ctx, trainable, frozen, batch: dict[str, jax.Array], rng: jax.Array
                          ) -> tuple[jax.Array, Any, jax.Array]:
  """The same as padded_loss_and_grads for a batch [b, 1, L], over packed row chunks of
  ctx.update_chunk_rows rows. Every chunk uses `rng`, with its rows' indices among all packed
  rows as their dropout keys: the masks do not depend on the chunk size (rounded to the device
  count, experiment.chunk_rows), so a run continues the same on another number of devices."""
  packed = pack_update(ctx, batch)
  num_chunks = (packed["rows_used"] + ctx.update_chunk_rows - 1) // ctx.update_chunk_rows

  def body(carry):
    chunk, loss_acc, grad_acc, per_example_acc = carry
    loss, grads, per_example = chunk_loss_and_grads(ctx, trainable, frozen, batch, packed, chunk,
                                                    rng)
    return (chunk + 1, loss_acc + loss, jax.tree.map(jnp.add, grad_acc, grads),
            per_example_acc + per_example)

  init = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32),
          jax.tree.map(jnp.zeros_like, trainable), jnp.zeros(batch["task_id"].shape, jnp.float32))
  _, loss, grads, per_example = jax.lax.while_loop(lambda c: c[0] < num_chunks, body, init)
  return loss, grads, per_example


def pack_update(ctx, batch: dict[str, jax.Array]) -> dict[str, Any]:
  """The batch [b, 1, L] packed into ceil(b / chunk rows) chunks of rows (b examples never need
  more than b rows): {'rows', 'unpack_index', 'example_row', 'rows_used'} (packing.pack_rows) and
  'weights' [b] (example_weights)."""
  b = batch["input_ids"].shape[0]
  num_rows = -(-b // ctx.update_chunk_rows) * ctx.update_chunk_rows
  rows, unpack_index, example_row, rows_used = packing.pack_rows(batch, num_rows)
  return {"rows": rows, "unpack_index": unpack_index, "example_row": example_row,
          "rows_used": rows_used,
          "weights": example_weights(batch["task_id"], batch["weight"], ctx.num_tasks,
                              ctx.loss_weighting, ctx.task_loss_scale)}


def chunk_loss_and_grads(ctx, trainable, frozen, batch: dict[str, jax.Array],
                         packed: dict[str, Any], chunk: jax.Array, key: jax.Array
                         ) -> tuple[jax.Array, Any, jax.Array]:
  """One chunk of the packed update (pack_update): its weighted loss, gradient and per-example
  loss [b] (0 for the examples of other chunks)."""
  part, local_index, in_chunk = packing.chunk_of(packed["rows"], packed["unpack_index"],
                                                 packed["example_row"], chunk,
                                                 ctx.update_chunk_rows)
  mb = dict(batch, unpack_index=local_index, _w=jnp.where(in_chunk, packed["weights"], 0.0))
  # Dropout keys (models.bert.RowDropout): the rows' indices among all packed rows.
  part["row_index"] = chunk * ctx.update_chunk_rows + jnp.arange(ctx.update_chunk_rows,
                                                               dtype=jnp.int32)
  grad_fn = jax.value_and_grad(_loss_fn(ctx, frozen), has_aux=True)
  # The chunk's rows split over 'data' on their first axis (ctx.example_sharding), if set.
  (loss, per_example), grads = grad_fn(trainable, mb, key,
                                       sharding.constrain(part, ctx.example_sharding))
  return loss, grads, jnp.where(in_chunk, per_example, 0.0)


def loss_and_grads(ctx, trainable, frozen, batch: dict[str, jax.Array], rng: jax.Array,
                   head_types: tuple[str, ...] | None = None
                   ) -> tuple[jax.Array, Any, jax.Array]:
  """(loss, gradient w.r.t. the trainable leaves, per-example loss [b]): packed when the context
  says so (ctx.update_chunk_rows > 0), else padded. head_types: only these heads run (a batch
  laid out for them, camtl.choice_layout; padded only); None: every head."""
  if ctx.update_chunk_rows > 0:
    return packed_loss_and_grads(ctx, trainable, frozen, batch, rng)
  return padded_loss_and_grads(ctx, trainable, frozen, batch, rng, head_types)


def guarded_apply(tx: optax.GradientTransformation, labels: Any, params: Any, opt_state: Any,
                  trainable: Any, frozen: Any, grads: Any, loss: jax.Array, halted: jax.Array
                  ) -> tuple[Any, Any, jax.Array, jax.Array]:
  """The optimizer step behind the NaN/Inf guard: (params, opt_state, ok, gradient norm).

  The guard covers the loss, the gradient and the updated parameters (a NaN learning rate gives
  finite gradients but NaN parameters): when any is not finite, or `halted` (the caller's count
  of consecutive bad steps reached its limit: the state then stays put until the host stops),
  the old trainable parameters and optimizer state are kept (ok False). Frozen leaves are
  untouched by the update, so they are the old ones, bit-identical, either way.
  trainable, frozen: optim.split_trainable(params, labels); grads: of the trainable leaves.
  """
  grad_norm = optax.global_norm(grads)
  new_params, new_opt_state = optim.apply_gradients(tx, params, opt_state, grads, frozen)
  updated, _ = optim.split_trainable(new_params, labels)
  ok = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(updated))
        & ~halted)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
  params = optim.merge(keep(updated, trainable), frozen)
  return params, keep(new_opt_state, opt_state), ok, grad_norm
