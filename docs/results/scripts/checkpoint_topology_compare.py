"""Compares the runs of checkpoint_topology_runs.py: python THIS ROOT (repository root)."""
import sys, json
sys.path.insert(0, ".")
from pathlib import Path
import numpy as np, jax
from tests import test_checkpoint_topology as t
root = Path(sys.argv[1])
for resumed, orig in (("dp8_to_1", "dp8"), ("one1_to_8", "one1"), ("one1", "dp8")):
  a, b = t._state(root, resumed), t._state(root, orig)
  a2, b2 = t._state(root, resumed, 2), t._state(root, orig, 2)
  same2 = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a2), jax.tree.leaves(b2)))
  used = np.array_equal(a["used"], b["used"])
  worst = []
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a["params"])[0], jax.tree.leaves(b["params"])):
    d = np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
    worst.append((float(d.max()), float((d / (np.abs(np.asarray(y, np.float64)) + 1e-5)).max()), jax.tree_util.keystr(path)))
  worst.sort(reverse=True)
  moved = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(a2["params"])))
  print(resumed, "vs", orig, "step2 identical:", same2, "used equal:", used, "moved since 2:", moved)
  for w in worst[:4]: print("   ", w)
