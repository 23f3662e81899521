"""Optimiser, learning-rate schedule, freeze labels and weight-decay mask (DESIGN 4.1).

One label tree marks every parameter 'trainable' or 'frozen'. It is built from parameter paths by a
short list of rules, and every leaf must be matched by exactly one rule (asserted), so a new
parameter whose path nobody thought about fails loudly instead of being silently frozen or trained.

The optimiser is
  optax.multi_transform({'trainable': clip + AdamW, 'frozen': set_to_zero()}, labels):
frozen leaves get no Adam moments (their optimiser state is `optax.MaskedNode`). The train step
differentiates only with respect to the trainable leaves:

  trainable, frozen = split_trainable(params, labels)
  loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, batch)   # loss_fn merges them
  params, opt_state = apply_gradients(tx, params, opt_state, grads, frozen)

`grads` has None where a leaf is frozen, so XLA never builds the weight-gradient matmuls of frozen
layers (nor, below the lowest trainable layer, the activation gradients). `apply_gradients` fills
the frozen positions with zeros for multi_transform; in the compiled step those zeros are constants
that XLA folds away (frozen params leave the step as the same, donated buffers: `p + 0 -> p`), so
the full-tree optimiser costs nothing over one that sees only the trainable subtree, and the state
layout stays the one `tx.init(params)` gives. (XLA would also dead-code-eliminate frozen gradients
of a full-tree jax.grad, since multi_transform never reads them, but anything else that reads the
full gradient tree, such as a global grad-norm metric, brings all of them back: measured +48% step
FLOPs on a toy model. Splitting makes "never computed" structural rather than an optimisation.)

Parameter tree (models/camtl.py): params['encoder'] is exactly the plain encoder's HF-like tree
(embeddings / layer_{i} / pooler); every CA-MTL parameter (task embedding, alignment, conditional
attention / LayerNorm FiLMs, adapters, heads) lives outside params['encoder'].
"""
from __future__ import annotations

import numbers
import re
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

PyTree = Any
Path = tuple[str, ...]

TRAINABLE = "trainable"
FROZEN = "frozen"

# Fixed by DESIGN 4.1 (BERT's fine-tuning recipe); not config fields.
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-6

_LAYER_RE = re.compile(r"layer_(\d+)")


# ----------------------------------------------------------------------------------------------
# Paths and label rules.

def path_of(key_path: Sequence[Any]) -> Path:
  """A jax key path (DictKey / GetAttrKey / SequenceKey ...) -> tuple of plain strings."""
  return tuple(jax.tree_util.keystr((k,), simple=True, separator="/") for k in key_path)


def paths(params: PyTree) -> list[Path]:
  """The path of every leaf of `params`, in flattening order."""
  return [path_of(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _layer_index(path: Path) -> int | None:
  """i for encoder/layer_i/..., else None."""
  if len(path) >= 2 and path[0] == "encoder":
    match = _LAYER_RE.fullmatch(path[1])
    if match:
      return int(match.group(1))
  return None


class Rule(NamedTuple):
  """A label rule: every leaf whose path satisfies `match` gets `label`."""
  description: str
  match: Callable[[Path], bool]
  label: str


def label_tree(params: PyTree, rules: Sequence[Rule]) -> PyTree:
  """Labels every leaf of `params` with the label of the one rule that matches its path.

  Raises ValueError listing every path matched by no rule or by more than one rule.
  """
  key_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
  labels, unmatched, doubled = [], [], []
  for key_path, _ in key_paths:
    path = path_of(key_path)
    hits = [rule for rule in rules if rule.match(path)]
    if len(hits) == 1:
      labels.append(hits[0].label)
      continue
    (unmatched if not hits else doubled).append(
        "/".join(path) + ("" if not hits else f" (by {', '.join(r.description for r in hits)})"))
  if unmatched or doubled:
    lines = [f"  unmatched: {p}" for p in unmatched] + [f"  matched twice: {p}" for p in doubled]
    raise ValueError("every parameter must be matched by exactly one label rule:\n"
                     + "\n".join(lines))
  return jax.tree_util.tree_unflatten(treedef, labels)


def freeze_rules(frozen: range, freeze_embeddings: bool = True) -> tuple[Rule, ...]:
  """The rules of DESIGN 4.1, mutually exclusive by construction.

  The embeddings LayerNorm is frozen with the embedding tables (the whole `embeddings` module,
  as usual when freezing BERT embeddings): with the default matrix alignment right above it, its
  per-feature scale and shift are absorbed by R * (1 + gamma) and beta, so training it would add
  nothing but redundant parameters.
  """
  in_encoder = lambda part: (lambda p: p[:2] == ("encoder", part))
  layer = _layer_index
  return (
      Rule("encoder embeddings", in_encoder("embeddings"),
           FROZEN if freeze_embeddings else TRAINABLE),
      Rule(f"frozen encoder layers [{frozen.start}, {frozen.stop})",
           lambda p: layer(p) is not None and layer(p) in frozen, FROZEN),
      Rule("trainable encoder layers", lambda p: layer(p) is not None and layer(p) not in frozen,
           TRAINABLE),
      Rule("encoder pooler", in_encoder("pooler"), TRAINABLE),
      # Conditional modules of frozen layers live here too: they stay trainable.
      Rule("new parameters (outside the encoder)", lambda p: p[0] != "encoder", TRAINABLE),
  )


def num_layers(params: PyTree) -> int:
  """Number of encoder layers in params['encoder'] (layer_0 .. layer_{n-1}, checked contiguous)."""
  found = sorted({i for p in paths(params) if (i := _layer_index(p)) is not None})
  if found != list(range(len(found))):
    raise ValueError(f"params['encoder'] has layers {found}; "
                     f"expected layer_0 .. layer_{len(found) - 1}")
  return len(found)


def _is_int(x: Any) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def frozen_range(frozen_layers: Sequence[int] | None, n_layers: int) -> range:
  """Validates `frozen_layers` = (start, stop) against the model; None means the lower half."""
  if frozen_layers is None:
    return range(0, n_layers // 2)
  if not (isinstance(frozen_layers, Sequence) and len(frozen_layers) == 2
          and all(map(_is_int, frozen_layers))):
    raise ValueError(f"config.frozen_layers must be (start, stop) integers, got {frozen_layers!r}")
  start, stop = int(frozen_layers[0]), int(frozen_layers[1])
  if not 0 <= start <= stop <= n_layers:
    raise ValueError(f"config.frozen_layers={(start, stop)} is outside the encoder's {n_layers} "
                     f"layers: need 0 <= start <= stop <= {n_layers}")
  return range(start, stop)


def freeze_labels(params: PyTree, frozen_layers: Sequence[int] | None = None,
                  freeze_embeddings: bool = True) -> PyTree:
  """'trainable' / 'frozen' label for every leaf of `params` (same tree structure).

  Frozen: params['encoder']['embeddings'] (if freeze_embeddings) and params['encoder']['layer_i']
  for i in [start, stop) = frozen_layers (None: the lower half). Everything else is trainable,
  including the conditional parameters of frozen layers (they live outside params['encoder']).
  """
  frozen = frozen_range(frozen_layers, num_layers(params))
  return label_tree(params, freeze_rules(frozen, freeze_embeddings))


# ----------------------------------------------------------------------------------------------
# Weight decay.

# Not decayed (BERT recipe): biases and LayerNorm scale/bias, by name because stacked heads have
# 2-D biases [T, C]; embedding tables; and, to be safe with future modules, every vector.
_NO_DECAY_NAMES = ("bias", "scale", "embedding")


def _decays(path: Path, leaf: Any) -> bool:
  # Every decayed parameter starts at (or near) 0, so decay pulls towards the initial function.
  # In particular the alignment matrix is stored as R = I + delta (models/conditioning.py), so
  # decaying delta pulls R towards the identity, never towards 0 (which would erase the embeddings).
  return jnp.ndim(leaf) >= 2 and path[-1] not in _NO_DECAY_NAMES


def weight_decay_mask(params: PyTree) -> PyTree:
  """True where AdamW applies weight decay: matrices (kernels [.., d_in, d_out], the alignment's
  delta [d, d], the conditional attention blocks [N, c, c], stacked heads [T, d, C]), except the
  embedding tables (word/position/type and the task embedding). False for every bias and LayerNorm
  scale/bias and every parameter of rank < 2."""
  return jax.tree_util.tree_map_with_path(lambda kp, x: _decays(path_of(kp), x), params)


# ----------------------------------------------------------------------------------------------
# Schedule and optimiser.

def learning_rate_schedule(peak_lr: float, total_steps: int, warmup_fraction: float = 0.1,
                           warmup_steps: int | None = None) -> optax.Schedule:
  """Linear warmup from 0 to peak_lr over warmup_steps (default round(warmup_fraction *
  total_steps)), then linear decay to 0 at total_steps; 0 after. lr(0) = 0 (as HF's schedule)."""
  if total_steps < 1:
    raise ValueError(f"config.total_steps must be >= 1, got {total_steps}")
  if warmup_steps is None:
    if not 0.0 <= warmup_fraction <= 1.0:
      raise ValueError(f"config.warmup_fraction must be in [0, 1], got {warmup_fraction}")
    warmup_steps = round(warmup_fraction * total_steps)
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(f"warmup_steps={warmup_steps} must be in [0, total_steps={total_steps}]")
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak_lr, warmup_steps),
       optax.linear_schedule(peak_lr, 0.0, total_steps - warmup_steps)],
      [warmup_steps])


def default_is_pretrained(path: Path) -> bool:
  """Pretrained parameters are exactly those of the plain encoder, params['encoder']."""
  return path[0] == "encoder"


def _new_param_scaling(multiplier: float, is_pretrained: Callable[[Path], bool]
                       ) -> tuple[optax.GradientTransformation, ...]:
  """Multiplies the final updates of new (non-pretrained) parameters by `multiplier`.

  Applied after AdamW, so it scales lr * (adam step + decoupled decay) exactly like a per-group lr.
  The mask is a function of the tree it sees, so it works inside multi_transform's masking.
  """
  if multiplier == 1.0:
    return ()
  is_new = lambda tree: jax.tree_util.tree_map_with_path(
      lambda kp, _: not is_pretrained(path_of(kp)), tree)
  return (optax.masked(optax.scale(multiplier), is_new),)


def make_optimizer(config: Any, params: PyTree,
                   is_pretrained: Callable[[Path], bool] | None = None,
                   labels: PyTree | None = None) -> tuple[optax.GradientTransformation, PyTree]:
  """(optimizer, labels) for `params`.

  config fields: learning_rate, total_steps, warmup_fraction, weight_decay, clip_norm,
  new_param_lr_multiplier (1.0 = off), frozen_layers ((start, stop) or None = lower half),
  freeze_embeddings.
  is_pretrained(path) says which parameters come from the checkpoint (default: params['encoder']).
  labels: a 'trainable' / 'frozen' tree to use instead of freeze_labels (adaptation).
  """
  if labels is None:
    labels = freeze_labels(params, config.frozen_layers, config.freeze_embeddings)
  schedule = learning_rate_schedule(config.learning_rate, config.total_steps,
                                    config.warmup_fraction)
  trainable = optax.chain(
      optax.clip_by_global_norm(config.clip_norm),
      optax.adamw(schedule, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS,
                  weight_decay=config.weight_decay, mask=weight_decay_mask),
      *_new_param_scaling(config.new_param_lr_multiplier, is_pretrained or default_is_pretrained))
  tx = optax.multi_transform({TRAINABLE: trainable, FROZEN: optax.set_to_zero()}, labels)
  return tx, labels


# ----------------------------------------------------------------------------------------------
# Differentiating only with respect to the trainable leaves.

def _is_none(x: Any) -> bool:
  return x is None


def split_trainable(params: PyTree, labels: PyTree) -> tuple[PyTree, PyTree]:
  """(trainable, frozen): two trees of params' structure, each with None at the other's leaves.

  None is an empty pytree node, so jax.grad with respect to `trainable` returns a tree with None
  at the frozen positions and never computes their gradients.
  """
  pick = lambda wanted: jax.tree.map(lambda l, p: p if l == wanted else None, labels, params)
  return pick(TRAINABLE), pick(FROZEN)


def merge(trainable: PyTree, frozen: PyTree) -> PyTree:
  """Inverse of split_trainable: the full tree, each leaf from the tree where it is not None."""
  return jax.tree.map(lambda t, f: f if t is None else t, trainable, frozen, is_leaf=_is_none)


def zeros_for_frozen(grads: PyTree, frozen: PyTree) -> PyTree:
  """The full gradient tree multi_transform expects: `grads` (None at frozen leaves, as returned by
  jax.grad w.r.t. the trainable tree) with zeros at the frozen leaves. Under jit the zeros are
  constants that set_to_zero and `p + 0` fold away."""
  return merge(grads, jax.tree.map(jnp.zeros_like, frozen))


def apply_gradients(tx: optax.GradientTransformation, params: PyTree, opt_state: optax.OptState,
                    grads: PyTree, frozen: PyTree) -> tuple[PyTree, optax.OptState]:
  """One optimiser update from trainable-only grads; returns (new params, new opt_state).

  Frozen leaves come back bit-identical (their update is exactly zero).
  """
  updates, opt_state = tx.update(zeros_for_frozen(grads, frozen), opt_state, params)
  return optax.apply_updates(params, updates), opt_state
