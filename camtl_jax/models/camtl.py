"""The CA-MTL model (DESIGN.md section 3): bert.py's pretrained encoder, modulated per task by the
conditional modules of conditioning.py, with the stacked task heads of heads.py.

Parameter tree (what optim.py, convert.py and checkpoints rely on):

  params['encoder']          EXACTLY bert.Encoder's tree (embeddings, layer_{i}, pooler), so the
                             output of convert.load_pretrained drops in unchanged (init_params);
  params['task_embedding']   {'embedding' [T, d], 'transform' (z' = Linear(d, d)(z))}
  params['alignment']        {'film', 'delta' [d, d] ('matrix' only: R = I + delta)}
  params['cond_attention']   {'layer_{i}': {'blocks' [N, c, c], 'film'}}
  params['cond_layernorm']   {'layer_{i}': {'attention_LayerNorm': film, 'output_LayerNorm': film}}
  params['adapter']          {'task_transform' (z''), 'layer_{i}': {'film', 'down', 'up'}}
  params['heads']            {head type: stacked kernels, see heads.py}

with film = {'dense': {'kernel' [dim(z), 2k], 'bias' [2k]}}. Only params['encoder'] is pretrained;
every conditional parameter lives outside it, so conditional modules of frozen layers are trainable
by construction. With conditioning='none' (the plain MTL baseline) only 'encoder' and 'heads' exist.

The forward takes the batch dict of docs/design/batch_format.md and returns per-example outputs (see
`CAMTL`); `validate_batch` checks a batch's data on the host with errors that name field and row.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from camtl_jax.models import bert
from camtl_jax.models.conditioning import (
    ConditionalAdapters, ConditionalAlignment, ConditionalAttention, ConditionalLayerNorms,
    TaskEmbedding, default_num_blocks, gather_rows)
from camtl_jax.models.heads import HEAD_INPUTS, Features, HeadLayout, Heads, TaskSpec
from camtl_jax.tasks import base

Array = jax.Array
Params = dict[str, Any]

CONDITIONINGS = ("camtl", "none")
ALIGNMENTS = ("matrix", "film", "none")
ADAPTERS = ("top", "skip", "none")
ADAPTER_ACTIVATIONS = ("gelu", "none")
ENCODER_INPUTS = ("task_id", "input_ids", "token_type_ids", "attention_mask")
# The batch keys with a choices axis K ([B, K, L]; [T, b, K, L] for MT-U candidates).
CHOICE_KEYS = ("input_ids", "token_type_ids", "attention_mask")


# ---------------------------------------------------------------------------------------------
# Config


def _layers_or_none(value: Sequence[int] | None) -> tuple[int, ...] | None:
  return None if value is None else tuple(int(i) for i in value)


@dataclasses.dataclass(frozen=True)
class CAMTLConfig:
  """Which CA-MTL components are on, and their shapes (DESIGN 3.1-3.6).

  conditioning: 'camtl' | 'none'. 'none' is the plain MTL baseline: no task embedding and no
    conditional module (the component switches below are then ignored), only per-task heads.
  alignment: 'matrix' (the paper) | 'film' (the original code) | 'none'.
  cond_attention / cond_attention_layers: the block-diagonal task attention bias, in the given
    layers (None = all). attention_blocks: N (0 = max(1, d // max_length)). max_length: L_max;
    batches may be shorter (the bias is cropped) but never longer.
  cond_layernorm / cond_layernorm_layers: conditional LayerNorm in the given layers (None = the
    upper layers n//2 .. n-1).
  adapter: 'top' (the conditional bottleneck inside the top `adapter_layers` layers, base default) |
    'skip' (the chain over the upper layers, large default) | 'none';
    W_down: d -> d // adapter_reduction; adapter_activation 'gelu' | 'none'.
  head_dropout: dropout before every head.
  frozen_layers: (start, stop), the pretrained layers range(start, stop) frozen with the embeddings
    (None = the lower half), as experiment.frozen_layers resolves it; the model itself does not
    read it (freezing is the optimizer's job, optim.freeze_labels).
  """
  conditioning: str = "camtl"
  alignment: str = "matrix"
  cond_attention: bool = True
  cond_attention_layers: tuple[int, ...] | None = None
  attention_blocks: int = 0
  max_length: int = 128
  cond_layernorm: bool = True
  cond_layernorm_layers: tuple[int, ...] | None = None
  adapter: str = "top"
  adapter_layers: int = 1
  adapter_reduction: int = 3
  adapter_activation: str = "gelu"
  head_dropout: float = 0.1
  frozen_layers: tuple[int, int] | None = None

  def __post_init__(self):
    # Configs arrive from ml_collections / JSON with lists; keep the dataclass hashable.
    for name in ("cond_attention_layers", "cond_layernorm_layers", "frozen_layers"):
      object.__setattr__(self, name, _layers_or_none(getattr(self, name)))
    choices = {"conditioning": CONDITIONINGS, "alignment": ALIGNMENTS, "adapter": ADAPTERS,
               "adapter_activation": ADAPTER_ACTIVATIONS}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"CAMTLConfig.{name} must be one of {allowed}, "
                         f"got {getattr(self, name)!r}")
    for name, low in (("attention_blocks", 0), ("max_length", 1), ("adapter_layers", 1),
                      ("adapter_reduction", 1)):
      if getattr(self, name) < low:
        raise ValueError(f"CAMTLConfig.{name} must be >= {low}, got {getattr(self, name)}")
    if not 0.0 <= self.head_dropout < 1.0:
      raise ValueError(f"CAMTLConfig.head_dropout must be in [0, 1), got {self.head_dropout}")
    if self.frozen_layers is not None and len(self.frozen_layers) != 2:
      raise ValueError(f"CAMTLConfig.frozen_layers must be (start, stop), got {self.frozen_layers}")

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "CAMTLConfig":
    """From an ml_collections ConfigDict (or a dict) holding some of the fields; others default."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown CA-MTL model config field(s) {unknown}; known: {sorted(known)}")
    return cls(**values)

  def to_config(self):
    """As an ml_collections ConfigDict (for configs/*.py)."""
    import ml_collections
    return ml_collections.ConfigDict(dataclasses.asdict(self))

  def replace(self, **changes) -> "CAMTLConfig":
    return dataclasses.replace(self, **changes)

  # Resolved per encoder shape. Empty tuples where a component is off.

  @property
  def conditioned(self) -> bool:
    return self.conditioning == "camtl"

  def num_blocks(self, hidden_size: int) -> int:
    return self.attention_blocks or default_num_blocks(hidden_size, self.max_length)

  def attention_layer_ids(self, num_layers: int) -> tuple[int, ...]:
    if not (self.conditioned and self.cond_attention):
      return ()
    return self.cond_attention_layers if self.cond_attention_layers is not None else tuple(
        range(num_layers))

  def layernorm_layer_ids(self, num_layers: int) -> tuple[int, ...]:
    if not (self.conditioned and self.cond_layernorm):
      return ()
    return self.cond_layernorm_layers if self.cond_layernorm_layers is not None else tuple(
        range(num_layers // 2, num_layers))

  def adapter_layer_ids(self, num_layers: int) -> tuple[int, ...]:
    if not self.conditioned or self.adapter == "none":
      return ()
    start = num_layers - self.adapter_layers if self.adapter == "top" else num_layers // 2
    return tuple(range(max(start, 0), num_layers))

  def validate(self, encoder: bert.EncoderConfig) -> None:
    """Checks the fields that depend on the encoder's shape; ValueError names field and model."""
    n, d = encoder.num_layers, encoder.hidden_size
    model = f"the encoder has {n} layers (0..{n - 1})"
    for name in ("cond_attention_layers", "cond_layernorm_layers"):
      bad = [i for i in (getattr(self, name) or ()) if not 0 <= i < n]
      if bad:
        raise ValueError(f"CAMTLConfig.{name} asks for layers {bad} that do not exist: {model}")
    if self.adapter == "top" and self.adapter_layers > n:
      raise ValueError(f"CAMTLConfig.adapter_layers={self.adapter_layers} exceeds the number of "
                       f"layers: {model}")
    if d // self.adapter_reduction < 1:
      raise ValueError(f"CAMTLConfig.adapter_reduction={self.adapter_reduction} leaves no "
                       f"bottleneck units for hidden size {d}")
    if self.num_blocks(d) > self.max_length:
      raise ValueError(f"CAMTLConfig.attention_blocks={self.attention_blocks} exceeds max_length "
                       f"{self.max_length}")
    limit = max_sequence_length(encoder)
    if self.max_length > limit:
      raise ValueError(f"CAMTLConfig.max_length={self.max_length} exceeds the encoder's "
                       f"{limit} positions")


def max_sequence_length(encoder: bert.EncoderConfig) -> int:
  """Longest sequence the position embeddings cover (RoBERTa's positions start at pad_id + 1)."""
  if encoder.model_type == "roberta":
    return encoder.max_position_embeddings - encoder.pad_token_id - 1
  return encoder.max_position_embeddings


def default_config(size: str = "base") -> CAMTLConfig:
  """DESIGN defaults: 'base'-like models use the top-layer adapter, 'large'-like the skip chain."""
  adapters = {"base": "top", "large": "skip"}
  if size not in adapters:
    raise ValueError(f"default_config: size must be one of {sorted(adapters)}, got {size!r}")
  return CAMTLConfig(adapter=adapters[size])


# ---------------------------------------------------------------------------------------------
# The encoder with hooks


@dataclasses.dataclass(frozen=True)
class EncoderHooks:
  """What the conditional modules change in the encoder, per encoder row (R = B * K rows), or per
  token in packed rows.

  align: embeddings [R, L, d] -> [R, L, d], between the embeddings and layer 0.
  attention_bias: layer -> [R, L, L] additive attention bias (shared across heads).
  ln_modulation: layer -> ((gamma1, beta1), (gamma2, beta2)), each [R, 1, d] per row or [R, L, d]
    per token (conditional LayerNorm).
  adapter: layer -> a(h), bert.Layer's adapter hook ('top').
  skip: layer -> a_l for the chain f_l = a_l(h_l + f_{l-1}); the output is h_n + f_n ('skip').
  """
  align: Callable[[Array], Array] | None = None
  attention_bias: Mapping[int, Array] = dataclasses.field(default_factory=dict)
  ln_modulation: Mapping[int, Any] = dataclasses.field(default_factory=dict)
  adapter: Mapping[int, Callable[[Array], Array]] = dataclasses.field(default_factory=dict)
  skip: Mapping[int, Callable[[Array], Array]] = dataclasses.field(default_factory=dict)


class ConditionalEncoder(nn.Module):
  """bert.Encoder's embeddings / layers / pooler (same names, same parameters) driven with hooks.

  With EncoderHooks() it computes exactly bert.Encoder. Inputs [R, L] int; returns
  (last hidden [R, L, d], pooled [R, d]); the pooler reads the skip chain's output when present.
  """
  config: bert.EncoderConfig

  @nn.compact
  def __call__(self, input_ids: Array, token_type_ids: Array, attention_mask: Array | None,
               hooks: EncoderHooks, deterministic: bool = True,
               packed: Mapping[str, Array] | None = None,
               row_ids: Array | None = None) -> tuple[Array, Array]:
    """packed: rows of several examples each (packing.py): {'position_ids', 'segment_ids' [R, L],
    'unpack_index' [B, L]}; attention stays within a segment, and the last hidden state is
    gathered back to the B examples ([B, L, d], zeros where unpack_index is NO_TOKEN) before the
    pooler. attention_mask is then not read. row_ids [R]: each row's dropout key
    (bert.RowDropout)."""
    cfg = self.config
    positions = None if packed is None else bert.packed_position_ids(
        cfg, packed["position_ids"], packed["segment_ids"])
    h = bert.Embeddings(cfg, name="embeddings")(input_ids, token_type_ids, deterministic,
                                                positions, row_ids)
    if hooks.align is not None:
      h = hooks.align(h)
    padding = (bert.padding_bias(attention_mask) if packed is None  # [R, 1, L]
               else bert.segment_bias(packed["segment_ids"]))      # [R, L, L]
    skip = None
    for i in range(cfg.num_layers):
      bias = padding + hooks.attention_bias[i] if i in hooks.attention_bias else padding
      h = bert.Layer(cfg, name=f"layer_{i}")(h, bias, deterministic, hooks.ln_modulation.get(i),
                                             hooks.adapter.get(i), row_ids)
      if i in hooks.skip:
        skip = hooks.skip[i](h if skip is None else h + skip)
    if skip is not None:
      h = h + skip
    if packed is not None:
      h = unpack_rows(h, packed["unpack_index"])
    return h, bert.Pooler(cfg, name="pooler")(h)


def unpack_rows(hidden: Array, unpack_index: Array) -> Array:
  """Packed hidden states [R, L_p, d] -> [B, L, d] per example: position p of example i is flat
  row position unpack_index[i, p] of `hidden`; negative (NO_TOKEN) gives zeros."""
  flat = hidden.reshape(-1, hidden.shape[-1])
  valid = unpack_index >= 0
  out = jnp.take(flat, jnp.where(valid, unpack_index, 0), axis=0)
  return jnp.where(valid[..., None], out, jnp.zeros((), out.dtype))


def at_positions(bias: Array, token_task: Array, positions: Array) -> Array:
  """Per-task attention bias [T, L, L] over absolute positions -> the bias between the tokens of
  packed rows [R, L, L]: entry (q, k) is bias[token_task[q], positions[q], positions[k]], each
  token at its position within its own example and under its own example's task (cross-segment
  entries, the only ones where q and k can belong to different tasks, are masked by
  bert.segment_bias)."""
  return bias[token_task[:, :, None], positions[:, :, None], positions[:, None, :]]


# ---------------------------------------------------------------------------------------------
# The model


class CAMTL(nn.Module):
  """CA-MTL: the shared encoder modulated per task, and per-task heads.

  __call__(batch, deterministic) with the batch of docs/design/batch_format.md (input_ids etc.
  [B, K, L], task_id [B], and the label keys of the head types present) returns, per example:
    'loss' [B]       the example's loss under its own task's head (heads.py);
    'aux_loss' [B]   the regression variance head's Gaussian NLL (0 for other types);
    and for each head type present: 'cls_logits' [B, C_max], 'regression' [B],
    'regression_log_var' [B], 'choice_logits' [B, K], 'start_logits' / 'end_logits' [B, L],
    'tag_logits' [B, L, C_tag_max], masked with -1e9 where invalid.
  Losses are not weighted by batch['weight']; the caller reduces them.
  The encoder output (hidden [B, K, L, d], pooled [B, K, d]) is sown as
  intermediates/encoder_output; `encode()` reads it.
  """
  encoder: bert.EncoderConfig
  config: CAMTLConfig
  tasks: tuple[TaskSpec, ...]

  def __post_init__(self):
    self.config.validate(self.encoder)
    HeadLayout.from_tasks(self.tasks)  # non-empty, unique names
    super().__post_init__()

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], deterministic: bool = True,
               head_types: tuple[str, ...] | None = None,
               packed: Mapping[str, Array] | None = None) -> dict[str, Array]:
    """head_types: run only these head types, for a batch whose examples are all of them (e.g. no
    multiple-choice task: then K = 1 suffices, see mtu.score_groups); None: every type.

    packed: the batch's examples packed into rows (packing.py; K = 1): {'input_ids',
    'token_type_ids', 'segment_ids', 'position_ids', 'task_id' [R, L]} (task_id: each token's
    task; a row may hold examples of several tasks), with
    batch['unpack_index'] [B, L]. The encoder runs on the rows and the heads on the unpacked
    examples: the outputs equal the unpacked forward's up to float rounding.

    Dropout (bert.RowDropout) is keyed per example by batch['batch_index'] [B] (its index in the
    whole step's batch; default arange(B)), and per packed row by packed['row_index'] [R] (default
    arange(R)): a micro-batch or a chunk of rows passes the global ones, so that the masks do not
    depend on how the step is cut."""
    tasks = self.tasks if head_types is None else tuple(
        t for t in self.tasks if t.type in head_types)
    check_batch_static(batch, tasks, self.config, self.encoder)
    b, k, length = batch["input_ids"].shape
    batch_index = batch.get("batch_index", jnp.arange(b, dtype=jnp.int32))
    encoder = ConditionalEncoder(self.encoder, name="encoder")
    if packed is None:
      rows = lambda key: batch[key].reshape(b * k, length)  # noqa: E731 [B, K, L] -> [B*K, L]
      row_task = jnp.repeat(batch["task_id"], k)  # row b*K + j is choice j of example b
      row_ids = (batch_index[:, None] * k + jnp.arange(k, dtype=jnp.int32)).reshape(-1)
      hidden, pooled = encoder(rows("input_ids"), rows("token_type_ids"),
                               rows("attention_mask"), self._hooks(row_task, length),
                               deterministic, row_ids=row_ids)
    else:
      if k != 1:
        raise ValueError(f"packed batches hold one sequence per example, got K={k}")
      hooks = self._hooks(packed["task_id"], packed["input_ids"].shape[1],
                          packed["position_ids"])
      row_ids = packed.get("row_index",
                           jnp.arange(packed["input_ids"].shape[0], dtype=jnp.int32))
      hidden, pooled = encoder(packed["input_ids"], packed["token_type_ids"], None, hooks,
                               deterministic, dict(packed, unpack_index=batch["unpack_index"]),
                               row_ids)
    hidden = hidden.reshape(b, k, length, -1)
    pooled = pooled.reshape(b, k, -1)
    self.sow("intermediates", "encoder_output", (hidden, pooled))
    return Heads(self.tasks, self.config.head_dropout, name="heads")(
        Features(pooled=pooled, hidden=hidden[:, 0]), batch, deterministic, head_types,
        batch_index)

  def _hooks(self, row_task: Array, length: int, positions: Array | None = None) -> EncoderHooks:
    """Builds the enabled conditional modules (task-level [T, ...] once, gathered per row).
    row_task [R]; for packed rows each token's task [R, L], with positions [R, L] each token's
    position within its example (else None)."""
    cfg, enc = self.config, self.encoder
    if not cfg.conditioned:
      return EncoderHooks()
    n, d = enc.num_layers, enc.hidden_size
    z, z1 = TaskEmbedding(len(self.tasks), d, name="task_embedding")()
    align = None
    if cfg.alignment != "none":
      align = functools.partial(ConditionalAlignment(cfg.alignment, name="alignment"),
                                z=z, row_task=row_task)
    by_row = lambda tree: jax.tree.map(lambda x: gather_rows(x, row_task), tree)  # noqa: E731
    bias, ln, adapters = {}, {}, {}
    if layers := cfg.attention_layer_ids(n):
      bias = ConditionalAttention(layers, cfg.num_blocks(d), cfg.max_length,
                                  name="cond_attention")(z1, length)  # {layer: [T, L, L]}
      bias = {i: (jnp.take(x, row_task, axis=0) if positions is None
                  else at_positions(x, row_task, positions)) for i, x in bias.items()}
    if layers := cfg.layernorm_layer_ids(n):
      ln = by_row(ConditionalLayerNorms(layers, name="cond_layernorm")(z1))
    if layers := cfg.adapter_layer_ids(n):
      adapters = ConditionalAdapters(layers, cfg.adapter_reduction, cfg.adapter_activation,
                                     enc.compute_dtype, name="adapter")(z1, row_task)
    top = cfg.adapter == "top"
    return EncoderHooks(align, bias, ln, adapters if top else {}, {} if top else adapters)


def encode(model: CAMTL, params: Params, batch: Mapping[str, Array]) -> tuple[Array, Array]:
  """The CA-MTL encoder output (hidden [B, K, L, d], pooled [B, K, d]), deterministic."""
  _, state = model.apply({"params": params}, batch, mutable=["intermediates"])
  return state["intermediates"]["encoder_output"][0]


# ---------------------------------------------------------------------------------------------
# Batches: shapes (checked at trace time) and data (checked on the host)


def num_choices(tasks: Sequence[TaskSpec]) -> int:
  """K: the largest choice count of the multiple-choice tasks, 1 when there are none."""
  return max([t.num_labels for t in tasks if t.type == base.MULTIPLE_CHOICE], default=1)


def choice_layout(tasks: Sequence[TaskSpec], task_type: str) -> tuple[int, tuple[str, ...]]:
  """(K, head_types) for a batch whose examples are all of `task_type`'s kind, multiple choice or
  not (an evaluation batch of one task, a group of MT-U candidates).

  Multiple choice: all K choice rows and the multiple-choice head. Any other type: K = 1 (no
  padding choice rows encoded) and every non-multiple-choice head type of the task list, so one
  program serves all those tasks (two per sequence length at most). Pass K to
  input_pipeline.eval_batches and head_types to CAMTL.__call__.
  """
  if task_type == base.MULTIPLE_CHOICE:
    return num_choices(tasks), (base.MULTIPLE_CHOICE,)
  return 1, non_choice_types(t.type for t in tasks)


def non_choice_types(task_types: Iterable[str]) -> tuple[str, ...]:
  """The head types other than multiple choice among `task_types`, in base.TASK_TYPES order."""
  present = set(task_types)
  return tuple(t for t in base.TASK_TYPES if t in present and t != base.MULTIPLE_CHOICE)


def required_keys(tasks: Sequence[TaskSpec]) -> tuple[str, ...]:
  """The batch keys the model reads for this task list."""
  keys = list(ENCODER_INPUTS)
  for spec in tasks:
    keys += [key for key in HEAD_INPUTS[spec.type] if key not in keys]
  return tuple(keys)


def check_batch_shapes(batch: Mapping[str, Any], tasks: Sequence[TaskSpec]) -> None:
  """Checks the batch's keys, ranks, shapes and K; ValueError names the key."""
  missing = [key for key in required_keys(tasks) if key not in batch]
  if missing:
    raise ValueError(f"batch is missing key(s) {missing} needed by the task list "
                     f"({sorted({t.type for t in tasks})}); see docs/design/batch_format.md")
  shape = tuple(batch["input_ids"].shape)
  if len(shape) != 3:
    raise ValueError(f"batch['input_ids'] must be [B, K, L], got shape {shape}")
  b, k, length = shape
  expected = {"token_type_ids": shape, "attention_mask": shape, "task_id": (b,), "label": (b,),
              "target": (b,), "start_position": (b,), "end_position": (b,),
              "context_mask": (b, length), "token_labels": (b, length)}
  for key, want in expected.items():
    if key in batch and tuple(batch[key].shape) != want:
      raise ValueError(f"batch[{key!r}] has shape {tuple(batch[key].shape)}, expected {want} "
                       f"for input_ids of shape {shape}")
  if not jnp.issubdtype(batch["task_id"].dtype, jnp.integer):
    raise ValueError(f"batch['task_id'] must be integer, got {batch['task_id'].dtype}")
  if k < num_choices(tasks):
    raise ValueError(f"batch has K={k} choice rows but a multiple-choice task has "
                     f"{num_choices(tasks)} choices")


def check_batch_static(batch: Mapping[str, Array], tasks: Sequence[TaskSpec], config: CAMTLConfig,
                       encoder: bert.EncoderConfig) -> None:
  """Trace-time checks: check_batch_shapes, and L within the model's maximum length."""
  check_batch_shapes(batch, tasks)
  length = batch["input_ids"].shape[-1]
  limit = config.max_length if config.attention_layer_ids(encoder.num_layers) else (
      max_sequence_length(encoder))
  if length > limit:
    raise ValueError(f"batch sequence length {length} exceeds the model's maximum {limit} "
                     "(CAMTLConfig.max_length / the encoder's position embeddings)")


def _fail(field: str, bad: np.ndarray, describe: Callable[[int], str]) -> None:
  """Raises for the rows where `bad` [B] is True, naming the field and the first rows."""
  rows = np.flatnonzero(bad)
  if rows.size:
    shown = "; ".join(f"row {r}: {describe(r)}" for r in rows[:3])
    more = f" (and {rows.size - 3} more rows)" if rows.size > 3 else ""
    raise ValueError(f"batch field {field!r}: {shown}{more}")


def _check_labels(batch: Mapping[str, np.ndarray], tasks: Sequence[TaskSpec],
                  active: np.ndarray, num: np.ndarray) -> None:
  """Classification / multiple choice: 0 <= label < the task's count; a choice must have tokens."""
  label, task_id = batch["label"], batch["task_id"]
  _fail("label", active & ((label < 0) | (label >= num)),
        lambda r: f"label {label[r]} out of range [0, {num[r]}) for task "
                  f"{tasks[task_id[r]].name!r} ({tasks[task_id[r]].type})")
  if any(t.type == base.MULTIPLE_CHOICE for t in tasks):
    k = batch["attention_mask"].shape[1]
    is_mc = active & np.array([tasks[t].type == base.MULTIPLE_CHOICE for t in task_id])
    chosen = np.take_along_axis(batch["attention_mask"].max(-1), np.clip(label, 0, k - 1)[:, None],
                                axis=1)[:, 0]
    _fail("label", is_mc & (chosen == 0),
          lambda r: f"the correct choice {label[r]} has no tokens (attention_mask row is all 0)")


def _check_target(batch: Mapping[str, np.ndarray], tasks: Sequence[TaskSpec],
                  active: np.ndarray, num: np.ndarray) -> None:
  target = batch["target"]
  _fail("target", active & ~np.isfinite(target), lambda r: f"target {target[r]} is not finite")


def _check_span(batch: Mapping[str, np.ndarray], tasks: Sequence[TaskSpec],
                active: np.ndarray, num: np.ndarray) -> None:
  length = batch["context_mask"].shape[1]
  allowed = (batch["context_mask"] > 0) | (np.arange(length) == 0)[None, :]
  for key in ("start_position", "end_position"):
    pos = batch[key]
    in_range = (pos >= 0) & (pos < length)
    _fail(key, active & ~in_range, lambda r, pos=pos: f"{pos[r]} is outside [0, {length})")
    ok = np.take_along_axis(allowed, np.clip(pos, 0, length - 1)[:, None], axis=1)[:, 0]
    _fail(key, active & ~ok,
          lambda r, pos=pos: f"position {pos[r]} is neither [CLS] (0) nor a context token")
  start, end = batch["start_position"], batch["end_position"]
  _fail("end_position", active & (end < start), lambda r: f"end {end[r]} < start {start[r]}")


def _check_tags(batch: Mapping[str, np.ndarray], tasks: Sequence[TaskSpec],
                active: np.ndarray, num: np.ndarray) -> None:
  labels = batch["token_labels"]
  bad = active[:, None] & ((labels < -1) | (labels >= num[:, None]))
  _fail("token_labels", bad.any(axis=1),
        lambda r: f"tags {sorted(set(labels[r][bad[r]].tolist()))} out of range [-1, {num[r]}) "
                  f"(-1 marks unlabelled tokens)")


_DATA_CHECKS: dict[str, Callable[..., None]] = {
    base.CLASSIFICATION: _check_labels,
    base.MULTIPLE_CHOICE: _check_labels,
    base.REGRESSION: _check_target,
    base.SPAN: _check_span,
    base.TAGGING: _check_tags,
}


def validate_batch(batch: Mapping[str, Any], tasks: Sequence[TaskSpec]) -> None:
  """Host-side check of a batch's data against the task list (shapes, task ids, labels, targets,
  span positions, tags). Raises ValueError naming the field and the offending rows. Cheap (numpy);
  the train loop calls it on every candidate set it feeds (validate_candidates); jitted code
  cannot raise on data.

  Padding rows (weight 0) only need a valid task id: the model gathers by it, and the heads clamp
  every label into range so such rows stay finite whatever else they hold.
  """
  tasks = tuple(tasks)
  batch = {k: np.asarray(v) for k, v in batch.items()}
  check_batch_shapes(batch, tasks)
  task_id = batch["task_id"]
  _fail("task_id", (task_id < 0) | (task_id >= len(tasks)),
        lambda r: f"task id {task_id[r]} is out of range: the run has {len(tasks)} tasks")
  real = batch["weight"] > 0 if "weight" in batch else np.ones(task_id.shape, bool)
  _fail("attention_mask", real & (batch["attention_mask"][:, 0].max(-1) == 0),
        lambda r: "choice row 0 has no tokens (every example needs at least [CLS])")
  layout = HeadLayout.from_tasks(tasks)
  num = layout.num_labels[task_id]
  for head_type in layout.types:
    active = real & (layout.task_type[task_id] == layout.types.index(head_type))
    _DATA_CHECKS[head_type](batch, tasks, active, num)


def validate_candidates(candidates: Mapping[str, Any], tasks: Sequence[TaskSpec]) -> None:
  """validate_batch on MT-U candidates [T, b, ...] (one host's)."""
  validate_batch({k: np.asarray(v).reshape((-1,) + np.shape(v)[2:])
                  for k, v in candidates.items()}, tasks)


def example_batch(tasks: Sequence[TaskSpec], batch_size: int = 1,
                  length: int = 8) -> dict[str, np.ndarray]:
  """An all-padding batch of the right keys, dtypes and shapes (for init and eval_shape)."""
  k = num_choices(tasks)
  ids = np.zeros((batch_size, k, length), np.int32)
  return {
      "task_id": np.zeros((batch_size,), np.int32), "input_ids": ids, "token_type_ids": ids,
      "attention_mask": np.ones_like(ids), "label": np.zeros((batch_size,), np.int32),
      "target": np.zeros((batch_size,), np.float32),
      "start_position": np.zeros((batch_size,), np.int32),
      "end_position": np.zeros((batch_size,), np.int32),
      "context_mask": np.zeros((batch_size, length), np.int32),
      "token_labels": np.full((batch_size, length), -1, np.int32),
      "weight": np.ones((batch_size,), np.float32), "uid": np.zeros((batch_size,), np.int32)}


# ---------------------------------------------------------------------------------------------
# Parameters: init from a checkpoint, pretrained / frozen status


def _shapes(tree: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
  return {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(tree).items()}


def init_params(model: CAMTL, rng: Array, pretrained_params: Params,
                example: Mapping[str, Any]) -> Params:
  """Initialises the model and puts the pretrained encoder tree (convert.load_pretrained) in
  params['encoder']; its structure and shapes must equal the model's encoder, or ValueError."""
  want = _shapes(jax.eval_shape(model.init, rng, example)["params"]["encoder"])
  got = _shapes(pretrained_params)
  if want != got:
    missing = sorted("/".join(k) for k in set(want) - set(got))[:5]
    extra = sorted("/".join(k) for k in set(got) - set(want))[:5]
    mismatched = ["/".join(k) + f" {got[k]} != {want[k]}" for k in sorted(set(want) & set(got))
                  if want[k] != got[k]][:5]
    raise ValueError(f"pretrained params do not match the encoder {model.encoder}: missing "
                     f"{missing}, unexpected {extra}, shape mismatches {mismatched}")

  def init_new(rng, example):
    # The random encoder weights are dropped inside jit, so XLA never generates them.
    params = model.init(rng, example)["params"]
    return {group: tree for group, tree in params.items() if group != "encoder"}
  params = dict(jax.jit(init_new)(rng, example))
  params["encoder"] = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), pretrained_params)
  return params
