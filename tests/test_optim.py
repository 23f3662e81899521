"""Tests for camtl_jax/optim.py on hand-built parameter trees of the CA-MTL shape."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from camtl_jax import optim

D, V, T, C = 8, 11, 3, 4


def _dense(rng, d_in, d_out):
  return {"kernel": rng.normal(size=(d_in, d_out)).astype(np.float32),
          "bias": rng.normal(size=(d_out,)).astype(np.float32)}


def _ln(rng):
  return {"scale": 1 + 0.1 * rng.normal(size=(D,)).astype(np.float32),
          "bias": rng.normal(size=(D,)).astype(np.float32)}


def _layer(rng):
  return {"attention": {"query": _dense(rng, D, D), "key": _dense(rng, D, D),
                        "value": _dense(rng, D, D)},
          "attention_output": _dense(rng, D, D), "attention_LayerNorm": _ln(rng),
          "intermediate": _dense(rng, D, 2 * D), "output": _dense(rng, 2 * D, D),
          "output_LayerNorm": _ln(rng)}


def make_params(n_layers: int = 4, seed: int = 0) -> dict:
  """The plain encoder tree under 'encoder' plus CA-MTL parameters outside it."""
  rng = np.random.default_rng(seed)
  emb = lambda n: {"embedding": rng.normal(size=(n, D)).astype(np.float32)}
  encoder = {"embeddings": {"word_embeddings": emb(V), "position_embeddings": emb(16),
                            "token_type_embeddings": emb(2), "LayerNorm": _ln(rng)},
             **{f"layer_{i}": _layer(rng) for i in range(n_layers)},
             "pooler": {"dense": _dense(rng, D, D)}}
  return {
      "encoder": encoder,
      "task_embedding": emb(T),
      "task_transform": _dense(rng, D, D),
      # models/conditioning.py stores the alignment matrix as R = I + delta.
      "alignment": {"delta": rng.normal(size=(D, D)).astype(np.float32),
                    "film": {"dense": _dense(rng, D, 2 * D)}},
      # Conditional attention of a frozen layer (layer_0) and of an upper one: both trainable.
      "cond_attention": {f"layer_{i}": {"blocks": rng.normal(size=(2, 4, 4)).astype(np.float32),
                                        "film": {"dense": _dense(rng, D, 8)}} for i in (0, 3)},
      "cond_layernorm": {"layer_3": {"film": _dense(rng, D, 4 * D)}},
      "adapter": {"layer_3": {"down": _dense(rng, D, 3), "up": _dense(rng, 3, D)}},
      "heads": {"classification": {"kernel": rng.normal(size=(T, D, C)).astype(np.float32),
                                   "bias": np.zeros((T, C), np.float32)}},
  }


def flat(tree) -> dict[str, object]:
  """'a/b/c' -> leaf."""
  return {"/".join(optim.path_of(kp)): leaf
          for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def make_config(**overrides) -> ml_collections.ConfigDict:
  config = dict(learning_rate=1e-2, total_steps=20, warmup_fraction=0.1, weight_decay=0.01,
                clip_norm=1.0, new_param_lr_multiplier=1.0, frozen_layers=(0, 2),
                freeze_embeddings=True)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


# ---------------------------------------------------------------------------------------------
# Labels.

def test_labels_per_path():
  labels = flat(optim.freeze_labels(make_params(), (0, 2)))
  frozen = {p for p, l in labels.items() if l == optim.FROZEN}
  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    assert f"encoder/embeddings/{name}/embedding" in frozen
  assert {"encoder/embeddings/LayerNorm/scale", "encoder/embeddings/LayerNorm/bias"} <= frozen
  # Exactly the embeddings and layers 0, 1 are frozen; every leaf there is.
  assert frozen == {p for p in labels if p.startswith(("encoder/embeddings/", "encoder/layer_0/",
                                                      "encoder/layer_1/"))}
  assert labels["encoder/layer_0/attention/query/kernel"] == optim.FROZEN
  assert labels["encoder/layer_1/output_LayerNorm/scale"] == optim.FROZEN
  for path in ("encoder/layer_2/attention/key/kernel", "encoder/layer_3/output/bias",
               "encoder/pooler/dense/kernel", "task_embedding/embedding", "alignment/delta",
               "cond_attention/layer_0/blocks", "cond_attention/layer_0/film/dense/kernel",
               "heads/classification/kernel", "adapter/layer_3/up/kernel"):
    assert labels[path] == optim.TRAINABLE, path


def test_labels_default_lower_half_and_trainable_embeddings():
  labels = flat(optim.freeze_labels(make_params(n_layers=6), None, freeze_embeddings=False))
  frozen_layers = {p.split("/")[1] for p, l in labels.items() if l == optim.FROZEN}
  assert frozen_layers == {"layer_0", "layer_1", "layer_2"}
  assert labels["encoder/embeddings/word_embeddings/embedding"] == optim.TRAINABLE
  # An empty range freezes no layer.
  labels = flat(optim.freeze_labels(make_params(), (0, 0), freeze_embeddings=False))
  assert set(labels.values()) == {optim.TRAINABLE}


def test_exactly_once_assertion():
  params = make_params(n_layers=2)
  encoder = optim.Rule("encoder", lambda p: p[0] == "encoder", optim.FROZEN)
  heads = optim.Rule("heads", lambda p: p[0] == "heads", optim.TRAINABLE)
  kernels = optim.Rule("kernels", lambda p: p[-1] == "kernel", optim.TRAINABLE)
  with pytest.raises(ValueError) as err:
    optim.label_tree(params, [encoder, heads, kernels])
  message = str(err.value)
  assert "unmatched: task_embedding/embedding" in message
  assert "matched twice: encoder/layer_0/attention/query/kernel (by encoder, kernels)" in message
  assert "encoder/layer_0/attention/query/bias" not in message  # matched once
  # A parameter under the encoder that no rule knows about fails instead of being guessed.
  params["encoder"]["mystery"] = {"kernel": np.zeros((2, 2), np.float32)}
  with pytest.raises(ValueError, match="unmatched: encoder/mystery/kernel"):
    optim.freeze_labels(params, (0, 1))


@pytest.mark.parametrize("frozen_layers", [(0, 5), (3, 1), (-1, 2), (0, 1, 2), (0.0, 2), 6])
def test_frozen_range_validation(frozen_layers):
  with pytest.raises(ValueError, match="config.frozen_layers") as err:
    optim.freeze_labels(make_params(n_layers=4), frozen_layers)
  if frozen_layers in [(0, 5), (3, 1), (-1, 2)]:
    assert "4 layers" in str(err.value)


def test_frozen_range_accepts_numpy_ints_and_none():
  assert optim.frozen_range(tuple(np.array([1, 3])), 4) == range(1, 3)
  assert optim.frozen_range(None, 5) == range(0, 2)


def test_non_contiguous_layers_rejected():
  params = make_params(n_layers=3)
  del params["encoder"]["layer_1"]
  with pytest.raises(ValueError, match=r"layers \[0, 2\]"):
    optim.freeze_labels(params, (0, 1))


def test_weight_decay_mask():
  mask = flat(optim.weight_decay_mask(make_params()))
  decayed = {p for p, m in mask.items() if m}
  assert decayed == {p for p in mask if p.endswith(("kernel", "/blocks", "alignment/delta"))}
  for path in ("encoder/embeddings/word_embeddings/embedding", "task_embedding/embedding",
               "encoder/embeddings/LayerNorm/scale", "encoder/layer_2/output_LayerNorm/bias",
               "encoder/layer_2/intermediate/bias", "heads/classification/bias"):  # [T, C] bias
    assert not mask[path], path
  for path in ("encoder/layer_2/intermediate/kernel", "alignment/film/dense/kernel",
               "alignment/delta", "cond_attention/layer_3/blocks", "heads/classification/kernel"):
    assert mask[path], path


# ---------------------------------------------------------------------------------------------
# Schedule and optimiser.

def test_learning_rate_schedule():
  lr = optim.learning_rate_schedule(1.0, total_steps=100, warmup_fraction=0.1)
  np.testing.assert_allclose([lr(s) for s in (0, 5, 10, 55, 100, 120)],
                             [0.0, 0.5, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
  lr = optim.learning_rate_schedule(2.0, total_steps=10, warmup_steps=4)
  np.testing.assert_allclose([lr(s) for s in (0, 2, 4, 7, 10)], [0, 1, 2, 1, 0], atol=1e-6)
  lr = optim.learning_rate_schedule(1.0, total_steps=10, warmup_fraction=0.0)
  np.testing.assert_allclose([lr(0), lr(5), lr(10)], [1.0, 0.5, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="warmup_fraction"):
    optim.learning_rate_schedule(1.0, 10, warmup_fraction=1.5)
  with pytest.raises(ValueError, match="total_steps"):
    optim.learning_rate_schedule(1.0, 0)


def test_no_adam_state_for_frozen_leaves():
  params = make_params()
  tx, labels = optim.make_optimizer(make_config(), params)
  state = tx.init(params)
  labels = flat(labels)
  for moment in ("mu", "nu"):
    tree = flat(optax.tree_utils.tree_get(state, moment))
    # MaskedNode is an empty pytree: frozen paths have no leaf at all in the state.
    assert set(tree) == {p for p, l in labels.items() if l == optim.TRAINABLE}
  frozen_kernel = optax.tree_utils.tree_get(state, "mu")["encoder"]["layer_0"]["attention"]["query"]
  assert isinstance(frozen_kernel["kernel"], optax.MaskedNode)
  trainable_size = sum(np.size(x) for p, x in flat(params).items() if labels[p] == optim.TRAINABLE)
  state_size = sum(np.size(x) for x in jax.tree.leaves(state))
  assert trainable_size * 2 <= state_size <= trainable_size * 2 + 8  # + step counters


def _toy_loss(params) -> jax.Array:
  """Every leaf influences the loss, with a non-zero gradient."""
  return sum(jnp.sum(jnp.sin(x + 0.5) * (1.0 + 0.1 * x)) for x in jax.tree.leaves(params))


def _train(config, params, steps, is_pretrained=None):
  tx, labels = optim.make_optimizer(config, params, is_pretrained)

  @jax.jit
  def step(params, opt_state):
    trainable, frozen = optim.split_trainable(params, labels)
    grads = jax.grad(lambda t: _toy_loss(optim.merge(t, frozen)))(trainable)
    return optim.apply_gradients(tx, params, opt_state, grads, frozen)

  opt_state = tx.init(params)
  for _ in range(steps):
    params, opt_state = step(params, opt_state)
  return params, labels


def test_steps_keep_frozen_bit_identical_and_move_trainable():
  params = make_params()
  before = flat(jax.tree.map(np.array, params))
  after, labels = _train(make_config(), jax.tree.map(jnp.asarray, params), steps=4)
  after, labels = flat(jax.tree.map(np.asarray, after)), flat(labels)
  for path, x in after.items():
    if labels[path] == optim.FROZEN:
      np.testing.assert_array_equal(x, before[path], err_msg=path)
    else:
      assert np.all(x != before[path]), path


def test_weight_decay_applied_through_multi_transform():
  """With zero gradients Adam's step is 0, so one step only decays: p * (1 - lr * wd) exactly on
  trainable leaves of the decay mask, nothing elsewhere."""
  params = jax.tree.map(jnp.asarray, make_params())
  config = make_config(warmup_fraction=0.0, total_steps=1000, weight_decay=0.5)
  tx, labels = optim.make_optimizer(config, params)
  trainable, frozen = optim.split_trainable(params, labels)
  zero_grads = jax.tree.map(jnp.zeros_like, trainable)
  new, _ = jax.jit(optim.apply_gradients, static_argnums=0)(tx, params, tx.init(params),
                                                             zero_grads, frozen)
  mask, labels = flat(optim.weight_decay_mask(params)), flat(labels)
  for path, x in flat(new).items():
    before = np.asarray(flat(params)[path])
    decays = mask[path] and labels[path] == optim.TRAINABLE
    np.testing.assert_allclose(x, before * (1 - 1e-2 * 0.5) if decays else before, rtol=1e-6,
                               err_msg=path)


def test_new_param_lr_multiplier():
  params = jax.tree.map(jnp.asarray, make_params())
  start = flat(jax.tree.map(np.asarray, params))
  # One step after a 1-step warmup (step 1 has the peak lr).
  config = make_config(warmup_fraction=0.0, total_steps=1000, frozen_layers=(0, 0))
  base = flat(_train(config, params, 1)[0])
  config.new_param_lr_multiplier = 10.0
  scaled = flat(_train(config, params, 1)[0])
  for path in start:
    delta, delta_scaled = base[path] - start[path], scaled[path] - start[path]
    factor = 1.0 if path.startswith("encoder/") else 10.0
    np.testing.assert_allclose(delta_scaled, factor * delta, rtol=1e-3, atol=1e-6, err_msg=path)


def test_split_merge_and_trainable_only_grads():
  params = make_params()
  labels = optim.freeze_labels(params, (0, 2))
  trainable, frozen = optim.split_trainable(params, labels)
  assert jax.tree.all(jax.tree.map(lambda a, b: a is b, optim.merge(trainable, frozen), params))
  grads = jax.jit(jax.grad(lambda t: _toy_loss(optim.merge(t, frozen))))(trainable)
  assert grads["encoder"]["layer_0"]["attention"]["query"]["kernel"] is None
  assert grads["encoder"]["layer_2"]["attention"]["query"]["kernel"].shape == (D, D)
  full = flat(optim.zeros_for_frozen(grads, frozen))
  assert set(full) == set(flat(params))
  assert not np.any(full["encoder/embeddings/word_embeddings/embedding"])


# ---------------------------------------------------------------------------------------------
# Compiled cost: frozen layers cost no weight-gradient FLOPs.

def _flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def test_frozen_half_costs_fewer_flops():
  d, batch = 128, 64
  rng = np.random.default_rng(0)
  params = {"encoder": {f"layer_{i}": {"intermediate": _dense_np(rng, d, d)} for i in range(2)},
            "heads": {"kernel": rng.normal(size=(d, 1)).astype(np.float32)}}
  x = jnp.asarray(rng.normal(size=(batch, d)), jnp.float32)

  def loss_fn(p):
    h = x
    for i in range(2):
      layer = p["encoder"][f"layer_{i}"]["intermediate"]
      h = jnp.tanh(h @ layer["kernel"] + layer["bias"])
    return jnp.mean((h @ p["heads"]["kernel"]) ** 2)

  def grad_step(labels):
    def step(params):
      trainable, frozen = optim.split_trainable(params, labels)
      return jax.value_and_grad(lambda t: loss_fn(optim.merge(t, frozen)))(trainable)
    return step

  all_trainable = optim.freeze_labels(params, (0, 0))
  lower_frozen = optim.freeze_labels(params, (0, 1))
  full, half = (_flops(grad_step(labels), params) for labels in (all_trainable, lower_frozen))
  # Forward 2 matmuls; backward dW1, dh1, dW0 when all train, only dW1 with layer 0 frozen: 3/5.
  assert half < 0.7 * full, (half, full)

  # The same holds for the whole optimiser step.
  def opt_step(frozen_layers):
    tx, labels = optim.make_optimizer(make_config(frozen_layers=frozen_layers), params)
    state = tx.init(params)
    def step(params, state):
      trainable, frozen = optim.split_trainable(params, labels)
      grads = jax.grad(lambda t: loss_fn(optim.merge(t, frozen)))(trainable)
      return optim.apply_gradients(tx, params, state, grads, frozen)
    return _flops(step, params, state)
  assert opt_step((0, 1)) < 0.7 * opt_step((0, 0))


def _dense_np(rng, d_in, d_out):
  return {"kernel": rng.normal(size=(d_in, d_out)).astype(np.float32) / np.sqrt(d_in),
          "bias": np.zeros((d_out,), np.float32)}
