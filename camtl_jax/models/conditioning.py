"""The conditional modules of CA-MTL (DESIGN.md section 3): task embedding, FiLM, conditional
alignment, the block-diagonal conditional attention bias, conditional LayerNorm and the conditional
bottleneck (adapter).

Two ideas run through the file:
  * Everything that depends only on the task is computed ONCE for all T tasks ([T, ...] arrays) and
    then gathered by each encoder row's task id ([R, ...], R = B * K rows). A batch may mix tasks,
    an example's output never depends on the other examples, and nothing loops over examples or
    tasks.
  * Every module is the identity (or adds exactly 0) at initialisation, through zero-initialised
    kernels and residual parameterisations (FiLM is (1 + gamma) x + beta, the alignment matrix is
    stored as I + delta), so the CA-MTL encoder computes the pretrained encoder's function at
    step 0, exactly, whatever the matmul precision of the device.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from camtl_jax.models.bert import ACTIVATIONS, LNModulation

Array = jax.Array

# The bottleneck activation (DESIGN 3.5); 'none' is the original code's linear bottleneck.
ADAPTER_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": ACTIVATIONS["gelu"],
    "none": lambda x: x,
}


def gather_rows(per_task: Array, row_task: Array) -> Array:
  """Per-task vectors [T, k] -> [R, 1, k] by each encoder row's task (row_task [R]), or [R, L, k]
  by each token's task (row_task [R, L]: packed rows holding examples of several tasks); either
  broadcasts against activations [R, L, k]."""
  out = jnp.take(per_task, row_task, axis=0)
  return out[:, None, :] if row_task.ndim == 1 else out


def film(x: Array, gamma: Array, beta: Array) -> Array:
  """(1 + gamma) * x + beta; gamma, beta broadcast against x."""
  return (1.0 + gamma) * x + beta


class TaskEmbedding(nn.Module):
  """z = Embed(T, d), normal(0.02) init; z' = Linear(d, d)(z), one transform shared by all layers.

  Returns (z [T, d], z' [T, d]) for all tasks at once.
  """
  num_tasks: int
  features: int

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    z = self.param("embedding", nn.initializers.normal(0.02), (self.num_tasks, self.features),
                   jnp.float32)
    z1 = nn.Dense(self.features, kernel_init=nn.initializers.normal(0.02), name="transform")(z)
    return z, z1


class FiLM(nn.Module):
  """[gamma, beta] = Linear(dim(z), 2k)(z), kernel and bias zero-initialised (identity at init;
  the kernel still gets gradients, dL/dkernel = z * dL/dgamma).

  z [T, dim] -> (gamma [T, k], beta [T, k]).
  """
  features: int

  @nn.compact
  def __call__(self, z: Array) -> tuple[Array, Array]:
    out = nn.Dense(2 * self.features, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.zeros, name="dense")(z)
    return out[..., :self.features], out[..., self.features:]


class ConditionalAlignment(nn.Module):
  """Conditional alignment between the embeddings and layer 0 (DESIGN 3.2).

  'matrix': E' = E @ (R * (1 + gamma(z))[None, :]) + beta(z) = (E @ R) * (1 + gamma) + beta, with R
    stored as I + delta, delta zero-initialised. Same function and gradients as an
    identity-initialised R, but E @ I is never computed, so the identity at init is exact even where
    float32 matmuls run at reduced precision (TF32 on GPUs, bf16 passes on TPUs); weight decay
    pulls R towards I, not 0.
  'film': E' = (1 + gamma(z)) * E + beta(z).

  __call__(embeddings [R, L, d], z [T, d], row_task [R] or [R, L] (gather_rows)) -> [R, L, d].
  """
  mode: str  # 'matrix' | 'film'

  @nn.compact
  def __call__(self, embeddings: Array, z: Array, row_task: Array) -> Array:
    d = embeddings.shape[-1]
    gamma, beta = (gather_rows(x, row_task) for x in FiLM(d, name="film")(z))
    h = embeddings
    if self.mode == "matrix":
      delta = self.param("delta", nn.initializers.zeros, (d, d), jnp.float32)
      h = h + jnp.einsum("rld,de->rle", h, delta.astype(h.dtype))
    return film(h, gamma, beta).astype(embeddings.dtype)


def default_num_blocks(hidden_size: int, max_length: int) -> int:
  """N = max(1, d // L_max): the original code's 6 blocks for BERT-base at L_max = 128."""
  return max(1, hidden_size // max_length)


def block_size(max_length: int, num_blocks: int) -> int:
  """c = ceil(L_max / N); the last block is cropped so that N blocks cover exactly L_max."""
  return math.ceil(max_length / num_blocks)


def block_diagonal(blocks: Array) -> Array:
  """[T, N, c, c] -> [T, N*c, N*c], zero off the diagonal blocks.

  A select, not an einsum with an identity: a dot could run at reduced precision on TPU/GPU.
  """
  t, n, c, _ = blocks.shape
  # [1, N, 1, N, 1]: True where the row block equals the column block.
  on_block = jnp.eye(n, dtype=bool)[None, :, None, :, None]
  full = jnp.where(on_block, blocks[:, :, :, None, :], 0.0)  # [T, N, c, N, c]
  return full.reshape(t, n * c, n * c)


class ConditionalAttentionBias(nn.Module):
  """One layer's task-conditioned attention bias M(z') (DESIGN 3.3), for all tasks.

  Trainable W [N, c, c] (zero init) and FiLM(z' -> c); block n = (1 + gamma)[None, :] * W_n
  + beta[None, :] (column modulation); M is block-diagonal, cropped to [:L, :L] for the batch's L.

  __call__(z1 [T, d], length L) -> [T, L, L] float32, shared by all heads.
  """
  num_blocks: int
  max_length: int

  @nn.compact
  def __call__(self, z1: Array, length: int) -> Array:
    if length > self.max_length:
      raise ValueError(f"batch sequence length {length} exceeds max_length {self.max_length} of "
                       "the conditional attention; raise CAMTLConfig.max_length or truncate")
    c = block_size(self.max_length, self.num_blocks)
    w = self.param("blocks", nn.initializers.zeros, (self.num_blocks, c, c), jnp.float32)
    gamma, beta = FiLM(c, name="film")(z1)  # [T, c]
    blocks = (1.0 + gamma)[:, None, None, :] * w[None] + beta[:, None, None, :]  # [T, N, c, c]
    # Cropping N*c to L (<= L_max) also crops the last block where c does not divide L_max.
    return block_diagonal(blocks)[:, :length, :length]


class ConditionalAttention(nn.Module):
  """The conditional attention biases of the configured layers: {layer: [T, L, L]}.

  Parameters live under layer_{i}, whatever the layer's freeze status (they are always trainable).
  """
  layers: Sequence[int]
  num_blocks: int
  max_length: int

  @nn.compact
  def __call__(self, z1: Array, length: int) -> dict[int, Array]:
    return {i: ConditionalAttentionBias(self.num_blocks, self.max_length, name=f"layer_{i}")(
        z1, length) for i in self.layers}


class LayerNormModulation(nn.Module):
  """One layer's conditional LayerNorm modulations: z1 [T, d] -> ((gamma1, beta1), (gamma2, beta2)),
  each [T, d], for its attention and output LayerNorm (parameter names as in bert.Layer)."""

  @nn.compact
  def __call__(self, z1: Array) -> tuple[LNModulation, LNModulation]:
    d = z1.shape[-1]
    return (FiLM(d, name="attention_LayerNorm")(z1), FiLM(d, name="output_LayerNorm")(z1))


class ConditionalLayerNorms(nn.Module):
  """FiLM modulations for both LayerNorms of each configured layer (DESIGN 3.4), for all tasks.

  bert.LayerNorm applies them as scale * (1 + gamma) and bias + beta; scale and bias stay the
  checkpoint's. Returns {layer: ((gamma1, beta1), (gamma2, beta2))}, each [T, d].
  """
  layers: Sequence[int]

  @nn.compact
  def __call__(self, z1: Array) -> dict[int, tuple[LNModulation, LNModulation]]:
    return {i: LayerNormModulation(name=f"layer_{i}")(z1) for i in self.layers}


class Bottleneck(nn.Module):
  """a(h) = W_up(act(W_down(FiLM(z'')(h)))), W_up zero-initialised so a(h) = 0 at init (DESIGN 3.5).

  __call__(h [R, L, d], z2 [T, d], row_task [R] or [R, L] (gather_rows)) -> [R, L, d].
  """
  reduction: int
  activation: str
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, z2: Array, row_task: Array) -> Array:
    d = h.shape[-1]
    gamma, beta = (gather_rows(x, row_task).astype(h.dtype) for x in FiLM(d, name="film")(z2))
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32)
    x = dense(d // self.reduction, kernel_init=nn.initializers.normal(0.02), name="down")(
        film(h, gamma, beta))
    x = ADAPTER_ACTIVATIONS[self.activation](x)
    x = dense(d, kernel_init=nn.initializers.zeros, name="up")(x)
    return x.astype(h.dtype)


class ConditionalAdapters(nn.Module):
  """The bottlenecks of the configured layers, with their shared task transform
  z'' = Linear(d, d)(z').

  Returns {layer: a_l}, each a_l: h [R, L, d] -> [R, L, d] already bound to the rows' tasks, to be
  called inside the encoder (bert.Layer's `adapter` hook for 'top', the skip chain for 'skip').
  """
  layers: Sequence[int]
  reduction: int
  activation: str
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z1: Array, row_task: Array) -> dict[int, Callable[[Array], Array]]:
    z2 = nn.Dense(z1.shape[-1], kernel_init=nn.initializers.normal(0.02), name="task_transform")(z1)
    return {i: functools.partial(
        Bottleneck(self.reduction, self.activation, self.dtype, name=f"layer_{i}"),
        z2=z2, row_task=row_task) for i in self.layers}
