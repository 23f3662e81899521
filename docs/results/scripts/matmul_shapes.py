"""Efficiency of lone XLA CPU matmuls at the step's shapes, against the 2048^3 peak, interleaved."""
import time, jax, jax.numpy as jnp, statistics
def prog(m, k, n, reps):
  a = jnp.ones((reps, m, k), jnp.float32); b = jnp.ones((k, n), jnp.float32)
  f = jax.jit(lambda a, b: jnp.einsum("rmk,kn->rmn", a, b))
  f(a, b).block_until_ready()
  def call():
    t = time.perf_counter(); f(a, b).block_until_ready(); return time.perf_counter() - t
  return call, 2.0 * reps * m * k * n
shapes = {"peak 2048^3": (2048, 2048, 2048, 1), "chunk2 ffn-in 256x384x1536": (256, 384, 1536, 8),
          "chunk2 ffn-out 256x1536x384": (256, 1536, 384, 8), "chunk2 qkv 256x384x384": (256, 384, 384, 24),
          "chunk4 ffn-in 512x384x1536": (512, 384, 1536, 4), "chunk16 ffn-in 2048x384x1536": (2048, 384, 1536, 1),
          "padded b16 ffn-in 2048x384x1536": (2048, 384, 1536, 1), "bert-base chunk2 ffn-in 256x768x3072": (256, 768, 3072, 4)}
progs = {k: prog(*v) for k, v in shapes.items()}
best = {k: [] for k in shapes}
for _ in range(7):
  for k, (call, flops) in progs.items(): best[k].append(flops / call())
peak = max(best["peak 2048^3"])
for k in shapes: print(f"{k:40s} {max(best[k])/1e9:7.1f} GFLOP/s best, {statistics.median(best[k])/1e9:7.1f} median  {max(best[k])/peak:6.1%} of peak")
