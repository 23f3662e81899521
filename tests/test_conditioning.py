"""The conditional modules alone: identity at init, formulas vs numpy, the block-diagonal bias."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camtl_jax.models import bert, conditioning as cond

RNG = np.random.default_rng(0)


def _randomize(params, scale=0.3, seed=1):
  """Every leaf replaced by normal noise (so zero-initialised kernels matter)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [scale * jax.random.normal(k, x.shape)
                                   for k, x in zip(keys, leaves)])


def test_film_is_identity_at_init_and_its_kernel_gets_gradients():
  z = jnp.asarray(RNG.normal(size=(3, 8)), jnp.float32)
  x = jnp.asarray(RNG.normal(size=(3, 5)), jnp.float32)
  module = cond.FiLM(5)
  params = module.init(jax.random.key(0), z)["params"]
  gamma, beta = module.apply({"params": params}, z)
  assert gamma.shape == beta.shape == (3, 5)
  np.testing.assert_array_equal(cond.film(x, gamma, beta), x)

  def loss(p):
    g, b = module.apply({"params": p}, z)
    return jnp.sum(cond.film(x, g, b) ** 2)
  grads = jax.grad(loss)(params)
  assert np.abs(grads["dense"]["kernel"]).max() > 0


def test_task_embedding_shapes_and_init_scale():
  module = cond.TaskEmbedding(num_tasks=5, features=64)
  params = module.init(jax.random.key(0))["params"]
  z, z1 = module.apply({"params": params})
  assert z.shape == z1.shape == (5, 64)
  assert 0.005 < float(jnp.std(params["embedding"])) < 0.05  # normal(0.02)


@pytest.mark.parametrize("mode", ["matrix", "film"])
def test_alignment_identity_at_init_and_formula(mode):
  t, r, length, d = 3, 4, 5, 6
  z = jnp.asarray(RNG.normal(size=(t, d)), jnp.float32)
  e = jnp.asarray(RNG.normal(size=(r, length, d)), jnp.float32)
  row_task = jnp.array([2, 0, 1, 2])
  module = cond.ConditionalAlignment(mode)
  params = module.init(jax.random.key(0), e, z, row_task)["params"]
  np.testing.assert_array_equal(module.apply({"params": params}, e, z, row_task), e)

  params = _randomize(params)
  out = np.asarray(module.apply({"params": params}, e, z, row_task))
  film = np.asarray(z) @ np.asarray(params["film"]["dense"]["kernel"]) + np.asarray(
      params["film"]["dense"]["bias"])
  gamma, beta = film[np.asarray(row_task), :d], film[np.asarray(row_task), d:]
  ref = np.asarray(e)
  for i in range(r):  # E' = E @ (R * (1 + gamma)[None, :]) + beta, R = I + delta
    matrix = np.eye(d) + np.asarray(params["delta"]) if mode == "matrix" else np.eye(d)
    expected = ref[i] @ (matrix * (1 + gamma[i])[None, :]) + beta[i]
    np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-5)


def _numpy_block_bias(w, gamma, beta, length):
  """Direct construction: M[i, j] = (1 + gamma[j']) W[n, i', j'] + beta[j'] when i, j are in the
  same block n (i = n c + i', j = n c + j'), else 0; then cropped to [:length, :length]."""
  n, c, _ = w.shape
  m = np.zeros((n * c, n * c))
  for i in range(n * c):
    for j in range(n * c):
      if i // c == j // c:
        m[i, j] = (1 + gamma[j % c]) * w[i // c, i % c, j % c] + beta[j % c]
  return m[:length, :length]


@pytest.mark.parametrize("max_length,num_blocks,length", [
    (10, 3, 10),   # c = 4: blocks 4, 4 and a last block cropped to 2
    (10, 3, 7),    # batch shorter than L_max: cropped inside the second block
    (12, 4, 12),   # N divides L_max
    (9, 1, 5),     # one block
])
def test_block_diagonal_attention_bias_matches_numpy(max_length, num_blocks, length):
  t, d = 2, 8
  z1 = jnp.asarray(RNG.normal(size=(t, d)), jnp.float32)
  module = cond.ConditionalAttentionBias(num_blocks, max_length)
  params = module.init(jax.random.key(0), z1, length)["params"]
  c = cond.block_size(max_length, num_blocks)
  assert params["blocks"].shape == (num_blocks, c, c)
  np.testing.assert_array_equal(module.apply({"params": params}, z1, length), 0.0)  # zero at init

  params = _randomize(params)
  bias = np.asarray(module.apply({"params": params}, z1, length))
  assert bias.shape == (t, length, length)
  film = np.asarray(z1) @ np.asarray(params["film"]["dense"]["kernel"]) + np.asarray(
      params["film"]["dense"]["bias"])
  for task in range(t):
    ref = _numpy_block_bias(np.asarray(params["blocks"]), film[task, :c], film[task, c:], length)
    np.testing.assert_allclose(bias[task], ref, rtol=1e-6, atol=1e-6)
    assert np.all(bias[task][ref == 0] == 0)  # exactly zero off the blocks
  assert not np.allclose(bias[0], bias[1])  # task-dependent


def test_attention_bias_longer_than_max_length_fails_clearly():
  module = cond.ConditionalAttentionBias(2, 8)
  z1 = jnp.zeros((1, 4))
  with pytest.raises(ValueError, match="exceeds max_length 8"):
    module.init(jax.random.key(0), z1, 9)


def test_default_num_blocks_any_max_length():
  assert cond.default_num_blocks(768, 128) == 6  # the original's BERT-base setting
  assert cond.default_num_blocks(1024, 128) == 8
  assert cond.default_num_blocks(768, 512) == 1  # the original asserts d % L_max == 0 and fails
  assert cond.default_num_blocks(384, 100) == 3 and cond.block_size(100, 3) == 34


def test_attention_bias_is_shared_by_all_heads():
  """bert.SelfAttention adds a [B, L, L] bias to every head's logits: per-head numpy reference."""
  cfg = bert.EncoderConfig(hidden_size=8, num_heads=2, intermediate_size=16, num_layers=1)
  b, length, d = 2, 5, 8
  h = jnp.asarray(RNG.normal(size=(b, length, d)), jnp.float32)
  bias = jnp.asarray(RNG.normal(size=(b, length, length)), jnp.float32)
  attn = bert.SelfAttention(cfg)
  params = attn.init(jax.random.key(0), h, bias)["params"]
  out = np.asarray(attn.apply({"params": params}, h, bias))
  proj = {k: np.asarray(h) @ np.asarray(params[k]["kernel"]) + np.asarray(params[k]["bias"])
          for k in ("query", "key", "value")}
  hd = d // cfg.num_heads
  for head in range(cfg.num_heads):
    sl = slice(head * hd, (head + 1) * hd)
    logits = np.einsum("bqd,bkd->bqk", proj["query"][..., sl], proj["key"][..., sl]) / math.sqrt(hd)
    logits = logits + np.asarray(bias)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(out[..., sl], probs @ proj["value"][..., sl], rtol=1e-5, atol=1e-5)


def test_conditional_layernorms_identity_at_init_and_layout():
  z1 = jnp.asarray(RNG.normal(size=(3, 6)), jnp.float32)
  module = cond.ConditionalLayerNorms((2, 3))
  params = module.init(jax.random.key(0), z1)["params"]
  assert set(params) == {"layer_2", "layer_3"}
  assert set(params["layer_2"]) == {"attention_LayerNorm", "output_LayerNorm"}
  mods = module.apply({"params": params}, z1)
  for (g1, b1), (g2, b2) in mods.values():
    for x in (g1, b1, g2, b2):
      assert x.shape == (3, 6)
      np.testing.assert_array_equal(x, 0.0)


@pytest.mark.parametrize("activation", ["gelu", "none"])
def test_bottleneck_zero_at_init_and_formula(activation):
  t, r, length, d = 2, 3, 4, 9
  z1 = jnp.asarray(RNG.normal(size=(t, d)), jnp.float32)
  h = jnp.asarray(RNG.normal(size=(r, length, d)), jnp.float32)
  row_task = jnp.array([1, 0, 1])
  module = cond.ConditionalAdapters((4, 5), reduction=3, activation=activation)

  def run(params):
    return module.apply({"params": params}, z1, row_task)[5](h)
  # Calling the returned adapters creates their parameters: init through a function that calls them.
  params = module.init(jax.random.key(0), z1, row_task, method=lambda m, z, t: {
      i: a(h) for i, a in m(z, t).items()})["params"]
  assert params["layer_5"]["down"]["kernel"].shape == (d, d // 3)
  np.testing.assert_array_equal(run(params), 0.0)

  params = _randomize(params)
  out = np.asarray(run(params))
  np_ = lambda x: np.asarray(x)  # noqa: E731
  z2 = np_(z1) @ np_(params["task_transform"]["kernel"]) + np_(params["task_transform"]["bias"])
  p = params["layer_5"]
  film = z2 @ np_(p["film"]["dense"]["kernel"]) + np_(p["film"]["dense"]["bias"])
  gamma, beta = film[np_(row_task), :d], film[np_(row_task), d:]
  x = (1 + gamma[:, None]) * np_(h) + beta[:, None]
  x = x @ np_(p["down"]["kernel"]) + np_(p["down"]["bias"])
  if activation == "gelu":
    x = np.asarray(bert.ACTIVATIONS["gelu"](jnp.asarray(x)))
  ref = x @ np_(p["up"]["kernel"]) + np_(p["up"]["bias"])
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
