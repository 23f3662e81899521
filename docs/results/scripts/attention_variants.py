# Before/after of models/bert.py attention (cur = before, manual_softmax = after), in isolation.
# python docs/results/scripts/attention_variants.py
import time, jax, jax.numpy as jnp, numpy as np
B, H, L, D = 128, 12, 128, 32
k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
q = jax.random.normal(k1, (B, H, L, D)); k = jax.random.normal(k2, (B, H, L, D)); v = jax.random.normal(k3, (B, H, L, D))
mask = (jnp.arange(L)[None, :] < jnp.array(np.random.default_rng(0).integers(10, L, B))[:, None])
bias = jnp.where(mask, 0.0, -1e9)[:, None, :]  # [B, 1, L]
def cur(q, k, v, bias):
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(D)
  probs = jax.nn.softmax(logits + bias[:, None], axis=-1)
  return jnp.einsum("bhqk,bhkd->bhqd", probs, v)
def scaled_q(q, k, v, bias):
  logits = jnp.einsum("bhqd,bhkd->bhqk", q * (1.0 / np.sqrt(D)).astype(np.float32), k)
  probs = jax.nn.softmax(logits + bias[:, None], axis=-1)
  return jnp.einsum("bhqk,bhkd->bhqd", probs, v)
def manual_softmax(q, k, v, bias):
  logits = jnp.einsum("bhqd,bhkd->bhqk", q * (1.0 / np.sqrt(D)).astype(np.float32), k) + bias[:, None]
  e = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
  ctx = jnp.einsum("bhqk,bhkd->bhqd", e, v)
  return ctx / e.sum(-1)[..., None]
def dpa(q, k, v, bias):
  t = lambda x: x.transpose(0, 2, 1, 3)
  return t(jax.nn.dot_product_attention(t(q), t(k), t(v), bias=bias[:, None]))
fs = {n: jax.jit(f) for n, f in [("cur", cur), ("scaled_q", scaled_q), ("manual_softmax", manual_softmax), ("dpa", dpa)]}
ref = fs["cur"](q, k, v, bias)
for n, f in fs.items():
  out = f(q, k, v, bias).block_until_ready(); print(n, "max diff", float(jnp.abs(out - ref).max()))
ts = {n: [] for n in fs}
for _ in range(7):
  for n, f in fs.items():
    t = time.perf_counter(); f(q, k, v, bias).block_until_ready(); ts[n].append(time.perf_counter() - t)
for n in fs: print(f"{n:16s} best {min(ts[n])*1000:6.1f} ms median {sorted(ts[n])[3]*1000:6.1f} ms")
print("grad, B=16, [B,L,L] bias")
B2 = 16
q2, k2_, v2 = q[:B2], k[:B2], v[:B2]
bias2 = jnp.broadcast_to(bias[:B2], (B2, L, L)) + 0.0
def g(f):
  return jax.jit(jax.grad(lambda q, k, v, b: (f(q, k, v, b[:, None][:, 0]) ** 2).sum(), argnums=(0, 1, 2)))
gs = {n: g(f) for n, f in [("cur", cur), ("manual_softmax", manual_softmax)]}
# bias [B, L, L] -> the functions add bias[:, None] so pass [B, L, L]
def cur3(q, k, v, b): return cur(q, k, v, b)
gr = {n: jax.jit(jax.grad(lambda q, k, v, b, f=f: (f(q, k, v, b) ** 2).sum(), argnums=(0, 1, 2))) for n, f in [("cur", cur), ("manual_softmax", manual_softmax)]}
r0 = gr["cur"](q2, k2_, v2, bias2)
for n, f in gr.items():
  r = f(q2, k2_, v2, bias2); print(n, "grad max diff", max(float(jnp.abs(a - b).max()) for a, b in zip(r, r0)))
ts = {n: [] for n in gr}
for _ in range(7):
  for n, f in gr.items():
    t = time.perf_counter(); jax.block_until_ready(f(q2, k2_, v2, bias2)); ts[n].append(time.perf_counter() - t)
for n in gr: print(f"{n:16s} best {min(ts[n])*1000:6.1f} ms median {sorted(ts[n])[3]*1000:6.1f} ms")
