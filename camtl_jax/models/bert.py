"""Flax Linen BERT / RoBERTa encoder that matches HuggingFace's PyTorch models numerically.

Parameter names follow the HF module tree (embeddings / layer_{i} / attention / ...), so that
`convert.py` is a table. Parameters are float32; `EncoderConfig.dtype` sets the compute dtype.
Softmax and LayerNorm statistics are always computed in float32.

Hooks for CA-MTL (models/camtl.py) without duplicating the layer:
  * every attention layer takes an additive bias [B, L, L] shared across heads (conditional
    attention);
  * every LayerNorm takes an optional modulation (gamma, beta) [B, 1, d] or [B, L, d]:
    scale * (1 + gamma) + (bias + beta), i.e. conditional LayerNorm; None is the plain LayerNorm;
  * a layer takes an optional `adapter` callable applied to the FFN output before the residual.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
LNModulation = tuple[Array, Array]  # (gamma, beta), each [B, d]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(nn.gelu, approximate=False),  # HF "gelu" is the erf form.
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Shape and behaviour of a BERT-family encoder (read from an HF config.json by convert.py)."""
  model_type: str = "bert"  # "bert" | "roberta"
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  hidden_act: str = "gelu"
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  dtype: str = "float32"  # compute dtype; params stay float32

  def __post_init__(self):
    if self.model_type not in ("bert", "roberta"):
      raise ValueError(f"model_type must be 'bert' or 'roberta', got {self.model_type!r}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                       f"{self.num_heads}")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} not supported; "
                       f"known: {sorted(ACTIVATIONS)}")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype {self.dtype!r} not supported; known: {sorted(DTYPES)}")

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  def replace(self, **changes) -> "EncoderConfig":
    return dataclasses.replace(self, **changes)


def position_ids(config: EncoderConfig, input_ids: Array) -> Array:
  """[B, L] position ids: 0..L-1 for BERT; RoBERTa counts non-pad tokens from pad_token_id + 1."""
  if config.model_type == "roberta":
    not_pad = (input_ids != config.pad_token_id).astype(jnp.int32)
    return jnp.cumsum(not_pad, axis=1) * not_pad + config.pad_token_id
  return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


def packed_position_ids(config: EncoderConfig, positions: Array, segment_ids: Array) -> Array:
  """[R, L] position ids of packed rows from each token's position within its own example
  (0-based) and its segment (0 = padding): BERT reads them as they are, RoBERTa from
  pad_token_id + 1 with pad_token_id for padding, as position_ids gives for an unpacked row."""
  if config.model_type == "roberta":
    return jnp.where(segment_ids > 0, positions + config.pad_token_id + 1, config.pad_token_id)
  return positions


class LayerNorm(nn.Module):
  """LayerNorm in float32 with an optional per-example modulation (conditional LayerNorm).

  With modulation (gamma, beta) [B, 1, d] (per row) or [B, L, d] (per token):
  y = norm(x) * scale * (1 + gamma) + bias + beta.
  """
  epsilon: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, modulation: LNModulation | None = None) -> Array:
    d = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (d,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    if modulation is None:
      y = y * scale + bias
    else:
      gamma, beta = modulation  # [B, 1, d] broadcast over the sequence axis, or [B, L, d]
      y = y * (scale * (1.0 + gamma)) + (bias + beta)
    return y.astype(self.dtype)


def _dense(config: EncoderConfig, features: int, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=config.compute_dtype, param_dtype=jnp.float32,
                  kernel_init=nn.initializers.normal(0.02), name=name)


class RowDropout(nn.Module):
  """Dropout whose mask for row r of x [R, ...] is drawn from fold_in(key, row_ids[r]).

  flax's nn.Dropout draws one mask for the whole array, so a row's mask depends on how the batch
  was cut: into update chunks (whose size is rounded to the device count), micro-batches or
  packed rows. Keyed by the row's place in the whole step's batch, an example gets the same mask
  however the step is laid out, and a checkpoint continues the same run on another device count.
  row_ids [R] int32; None: arange(R) (the array is the whole batch)."""
  rate: float

  @nn.compact
  def __call__(self, x: Array, deterministic: bool, row_ids: Array | None = None) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    key = self.make_rng("dropout")
    rows = jnp.arange(x.shape[0], dtype=jnp.int32) if row_ids is None else row_ids
    keep_prob = 1.0 - self.rate
    keep = jax.vmap(lambda row: jax.random.bernoulli(jax.random.fold_in(key, row), keep_prob,
                                                     x.shape[1:]))(rows)
    return jax.lax.select(keep, x / keep_prob, jnp.zeros_like(x))


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout. Output [B, L, d]."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool = True,
               positions: Array | None = None, row_ids: Array | None = None) -> Array:
    """positions: [B, L] position ids (packed rows, packed_position_ids); None: position_ids.
    row_ids: [B] each row's dropout key (RowDropout)."""
    cfg = self.config
    embed = functools.partial(nn.Embed, features=cfg.hidden_size, param_dtype=jnp.float32,
                              embedding_init=nn.initializers.normal(0.02))
    words = embed(cfg.vocab_size, name="word_embeddings")(input_ids)
    positions = embed(cfg.max_position_embeddings, name="position_embeddings")(
        position_ids(cfg, input_ids) if positions is None else positions)
    types = embed(cfg.type_vocab_size, name="token_type_embeddings")(token_type_ids)
    h = LayerNorm(cfg.layer_norm_eps, cfg.compute_dtype, name="LayerNorm")(
        words + positions + types)
    return RowDropout(cfg.hidden_dropout)(h, deterministic, row_ids)


class SelfAttention(nn.Module):
  """Multi-head self-attention with an additive logit bias.

  h: [B, L, d] -> context [B, L, d] (heads concatenated, before the output projection).
  bias: float, [B, 1, L] (padding only), [B, L, L] (padding + conditional bias) or [B, 1, L, L];
    added to the float32 logits [B, H, L, L], broadcast over heads; padding is expressed through it.
  """
  config: EncoderConfig

  @nn.compact
  def __call__(self, h: Array, bias: Array, deterministic: bool = True,
               row_ids: Array | None = None) -> Array:
    cfg = self.config
    b, l, d = h.shape
    head_dim = d // cfg.num_heads
    # Heads-first [B, H, L, Dh] before both matmuls, so that each is a plain batched matmul over
    # (B, H). With [B, L, H, Dh] operands ("bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd") XLA CPU fuses the
    # two dots and the softmax of the deterministic forward into one fusion with transposed operand
    # layouts that runs at ~1/3 of the speed (measured, dots + softmax of one MiniLM layer at
    # [128, 128] tokens: 381 vs 139 ms; whole 6-layer forward 1.34x); same FLOPs, same result up
    # to float32 rounding. value_and_grad runs about as before (its fusions were already split).
    # Not jax.nn.dot_product_attention: as fast here, but it has no dropout on the probabilities.
    heads = lambda x: x.reshape(b, l, cfg.num_heads, head_dim).transpose(0, 2, 1, 3)
    q = heads(_dense(cfg, d, "query")(h))
    k = heads(_dense(cfg, d, "key")(h))
    v = heads(_dense(cfg, d, "value")(h))
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(head_dim)
    if bias.ndim == 3:
      bias = bias[:, None]
    logits = logits + bias.astype(jnp.float32)  # [B, H, L, L]
    # The softmax normalised after the second matmul: softmax(x) @ v = (e @ v) / sum(e) with
    # e = exp(x - max x), and dropout, which scales the weights by a mask, commutes with the
    # division: dropout(e / s) = dropout(e) / s (the same mask, drawn at the same shape). So the
    # division touches [B, H, L, Dh] instead of [B, H, L, L]; XLA CPU then runs the block 3.5x
    # faster in the forward (one MiniLM layer, [128, 128] tokens: 100 -> 28 ms) and 1.4x in
    # value_and_grad ([16, 128]: 34 -> 25 ms), equal up to float32 rounding (measured).
    weights = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    total = jnp.sum(weights, axis=-1, keepdims=True)  # [B, H, L, 1], >= 1
    weights = RowDropout(cfg.attention_dropout)(weights, deterministic, row_ids)
    context = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(cfg.compute_dtype), v)  # [B, H, L, Dh]
    context = (context.astype(jnp.float32) / total).astype(cfg.compute_dtype)
    return context.transpose(0, 2, 1, 3).reshape(b, l, d)


class Layer(nn.Module):
  """One post-LN transformer layer, as HF BertLayer.

  ln_modulation: ((gamma1, beta1), (gamma2, beta2)) for the attention and output LayerNorms, or
    None.
  adapter: optional f(ffn_out [B, L, d]) -> [B, L, d] added before the residual (CA-MTL 'top'
    adapter): out = LN(ffn_out + adapter(ffn_out) + attention_out).
  """
  config: EncoderConfig

  @nn.compact
  def __call__(self, h: Array, bias: Array, deterministic: bool = True,
               ln_modulation: tuple[LNModulation, LNModulation] | None = None,
               adapter: Callable[[Array], Array] | None = None,
               row_ids: Array | None = None) -> Array:
    cfg = self.config
    mod_attn, mod_out = ln_modulation if ln_modulation is not None else (None, None)
    drop = lambda x: RowDropout(cfg.hidden_dropout)(x, deterministic, row_ids)
    context = SelfAttention(cfg, name="attention")(h, bias, deterministic, row_ids)
    attn_out = _dense(cfg, cfg.hidden_size, "attention_output")(context)
    attn_out = LayerNorm(cfg.layer_norm_eps, cfg.compute_dtype, name="attention_LayerNorm")(
        drop(attn_out) + h, mod_attn)
    inter = ACTIVATIONS[cfg.hidden_act](
        _dense(cfg, cfg.intermediate_size, "intermediate")(attn_out))
    ffn_out = drop(_dense(cfg, cfg.hidden_size, "output")(inter))
    if adapter is not None:
      ffn_out = ffn_out + adapter(ffn_out)
    return LayerNorm(cfg.layer_norm_eps, cfg.compute_dtype, name="output_LayerNorm")(
        ffn_out + attn_out, mod_out)


class Pooler(nn.Module):
  """tanh(Linear(h[:, 0])) -> [B, d]."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, h: Array) -> Array:
    return jnp.tanh(_dense(self.config, self.config.hidden_size, "dense")(h[:, 0]))


# Finite (not finfo.min) so that a row with no real token (an unused choice slot) gives a uniform
# softmax instead of NaN, and adding a conditional bias can never overflow to -inf.
MASK_VALUE = -1e9


def padding_bias(attention_mask: Array) -> Array:
  """[B, L] 1/0 mask -> [B, 1, L] float32 additive bias (0 for tokens, MASK_VALUE for padding)."""
  return jnp.where(attention_mask[:, None, :] > 0, 0.0, MASK_VALUE).astype(jnp.float32)


def segment_bias(segment_ids: Array) -> Array:
  """[R, L] segment ids of packed rows (0 = padding) -> [R, L, L] float32 additive bias: a token
  attends only to the tokens of its own segment (MASK_VALUE elsewhere)."""
  same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
  return jnp.where(same, 0.0, MASK_VALUE).astype(jnp.float32)


class Encoder(nn.Module):
  """The plain pretrained encoder (HF BertModel / RobertaModel).

  Inputs: input_ids, token_type_ids, attention_mask [B, L] int.
  Returns (last_hidden_state [B, L, d], pooled [B, d]).
  """
  config: EncoderConfig

  @nn.compact
  def __call__(self, input_ids: Array, token_type_ids: Array, attention_mask: Array,
               deterministic: bool = True,
               attention_bias: Array | None = None) -> tuple[Array, Array]:
    cfg = self.config
    h = Embeddings(cfg, name="embeddings")(input_ids, token_type_ids, deterministic)
    bias = padding_bias(attention_mask)  # [B, 1, L]
    if attention_bias is not None:
      bias = bias + attention_bias
    for i in range(cfg.num_layers):
      h = Layer(cfg, name=f"layer_{i}")(h, bias, deterministic)
    return h, Pooler(cfg, name="pooler")(h)
