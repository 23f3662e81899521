"""Device mesh, parameter shardings and global batches.

One mesh with axes ('data', 'model'). Default: pure data parallelism (parameters replicated, the
example axis split over 'data'). With `fsdp=True`, every large parameter is additionally split over
'data' along its largest divisible axis (ZeRO-3 style), except the embedding tables; XLA inserts the
all-gathers.

Multi-host: each process materialises only its slice of every global batch and
`global_batch` assembles the global jax.Array with jax.make_array_from_process_local_data.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"
# Parameters smaller than this stay replicated under FSDP: sharding them costs more in collectives
# than it saves in memory.
FSDP_MIN_SIZE = 2 ** 18


def make_mesh(model_parallelism: int = 1, devices: list | None = None) -> Mesh:
  """A ('data', 'model') mesh over all devices (data = num_devices // model_parallelism)."""
  devices = list(jax.devices() if devices is None else devices)
  if model_parallelism < 1 or len(devices) % model_parallelism:
    raise ValueError(f"mesh.model={model_parallelism} must divide the device count {len(devices)}")
  grid = np.array(devices).reshape(len(devices) // model_parallelism, model_parallelism)
  return Mesh(grid, (DATA, MODEL))


def data_size(mesh: Mesh) -> int:
  return mesh.shape[DATA]


def _fsdp_spec(shape: tuple[int, ...], n_data: int) -> P:
  """Shard the largest axis divisible by the data-axis size; replicate small or indivisible
  leaves."""
  if int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE or n_data == 1:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % n_data == 0:
      spec = [None] * len(shape)
      spec[axis] = DATA
      return P(*spec)
  return P()


# Lookup tables stay replicated under FSDP: a gather from a table split along its hidden axis makes
# XLA materialise the whole [tokens, d] output on every device (measured with camtl-compile-tpu,
# BERT-large, 24 tasks, b=256 on v5e 16x16: 17 GiB of temporaries per chip, so the step did not
# fit; 2.3 GiB with the encoder's embedding tables replicated (0.7 GiB in a 2-layer probe). Frozen
# tables hold no Adam state, so replicating them costs ~0.1 GiB per chip).
REPLICATED_UNDER_FSDP = ("embeddings",)


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", "")))) for k in path]


def param_spec(path, shape: tuple[int, ...], n_data: int, fsdp: bool) -> P:
  """The PartitionSpec of one parameter (or optimizer-state leaf) at key path `path`."""
  if not fsdp or any(name in REPLICATED_UNDER_FSDP for name in _path_names(path)):
    return P()
  return _fsdp_spec(shape, n_data)


def param_shardings(mesh: Mesh, abstract_tree: Any, fsdp: bool = False) -> Any:
  """NamedShardings for a tree of arrays/ShapeDtypeStructs: replicated, or FSDP over 'data'."""
  n = data_size(mesh)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, param_spec(path, tuple(x.shape), n, fsdp)),
      abstract_tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, example_axis: int = 0) -> NamedSharding:
  """Sharding that splits the example axis (axis 1 for [T, b, ...] candidate sets) over 'data'."""
  return NamedSharding(mesh, P(*([None] * example_axis), DATA))


def constrain(tree: Any, example_sharding: NamedSharding | None) -> Any:
  """tree under with_sharding_constraint(example_sharding) inside jit; unchanged when None (the
  steps then run on one device, or XLA chooses)."""
  if example_sharding is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, example_sharding)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh,
                 example_axis: int = 0) -> dict[str, jax.Array]:
  """This process's slice of every array -> global jax.Arrays split over 'data' on `example_axis`.

  Each process passes the contiguous block of examples it owns (process_index-th of
  process_count equal blocks); the global shape multiplies that axis by the process count.
  """
  sharding = batch_sharding(mesh, example_axis)
  procs = jax.process_count()

  def to_global(x: np.ndarray) -> jax.Array:
    shape = list(x.shape)
    shape[example_axis] *= procs
    return jax.make_array_from_process_local_data(sharding, x, tuple(shape))

  return jax.tree.map(to_global, local)  # nested dicts too (packed eval rows)


def check_divisible(global_examples: int, mesh: Mesh, what: str) -> None:
  """Clear error, before any compilation, when a batch cannot be split over the data axis."""
  n = data_size(mesh) * 1
  if global_examples % n:
    raise ValueError(f"{what}={global_examples} is not divisible by the {n} devices of the mesh's "
                     f"'data' axis ({jax.device_count()} devices, {jax.process_count()} "
                     f"processes); use a multiple of {n}")
