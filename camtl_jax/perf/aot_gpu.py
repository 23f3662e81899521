"""The real train step compiled ahead of time for NVIDIA GPUs on a host that has none.

  camtl-compile --config glue_base --target h100:8 [--config.dtype=bfloat16] [--json OUT]

JAX's deviceless compilation: the CUDA PJRT plugin (pip, the `cuda` extra) describes a GPU
topology from an XLA GPU target description (a stream_executor.GpuTargetConfigProto in text form,
what `--xla_gpu_target_config_filename` reads) instead of from a driver, and its devices are
compile-only (jax.experimental.topologies.get_topology_desc(platform="cuda", topology="1xHxN",
target_config=TEXT)). The sharded train step of train.build_step (MT-U included when the config
samples with it) is lowered over a mesh of those devices and compiled by XLA's GPU pipeline (Triton
and PTX included, no autotuning: there is no device to time candidates on), then reported per GPU:
XLA's memory analysis against the card's HBM, and XLA's HLO cost analysis (flops, bytes accessed)
of the optimised per-device program with a roofline step time from the card's published peaks.
The compile-only executable has no cost-model time on GPU (GetCostAnalysis: UNIMPLEMENTED), so
the per-device HLO is analysed with XLA's generic HloCostAnalysis through the CPU client; it counts
the flops of dots inside fusions (Triton GEMMs) but not of library custom calls (cuBLAS, cuDNN),
whose number is reported (`uncounted_custom_calls`).

The CUDA plugin must not share an environment with the default tests: install it in its own venv
(`pip install -e ".[cuda]"`; docs/results/gpu_compile.md). Targets: GPUS below, H100 SXM 80GB and
A100 SXM 80GB, from NVIDIA's published specifications; another card's description can be passed
as a file (target_config).
"""
from __future__ import annotations

import importlib.util
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from camtl_jax import sharding, train
from camtl_jax.perf import profiling

GIB = profiling.GIB
# Share of HBM that JAX preallocates for arrays when launch/gpu.sh runs (its --mem-fraction
# default, XLA_PYTHON_CLIENT_MEM_FRACTION); the rest is for cuBLAS/cuDNN workspaces.
MEM_FRACTION = 0.9

# Per card: the GpuDeviceInfoProto fields XLA's GPU compiler reads (SM count, shared memory, L2,
# compute capability; NVIDIA's data sheets and CUDA occupancy tables), HBM, and the dense peaks by
# compute dtype (float32 matmuls run as TF32 on these cards under JAX's default precision).
GPUS: dict[str, dict[str, Any]] = {
    "h100": {
        "description": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0), "core_count": 132,
        "fpus_per_core": 128, "shared_memory_per_core": 233472,
        "shared_memory_per_block_optin": 232448, "l2_cache_size": 50 * 2 ** 20,
        "clock_rate_ghz": 1.98, "hbm_bytes": 80 * GIB, "hbm_bandwidth": 3.35e12,
        "peak_flops": {"bfloat16": 989.4e12, "float32": 494.7e12},
    },
    "a100": {
        "description": "NVIDIA A100-SXM4-80GB", "compute_capability": (8, 0), "core_count": 108,
        "fpus_per_core": 64, "shared_memory_per_core": 167936,
        "shared_memory_per_block_optin": 166912, "l2_cache_size": 40 * 2 ** 20,
        "clock_rate_ghz": 1.41, "hbm_bytes": 80 * GIB, "hbm_bandwidth": 2.039e12,
        "peak_flops": {"bfloat16": 312e12, "float32": 156e12},
    },
}
# Library calls whose flops XLA's generic cost analysis does not count (0 flops each).
LIBRARY_CALLS = ("__cublas", "__cudnn")


class GpuTargetUnavailable(ValueError):
  """The CUDA plugin is missing or cannot describe the target on this host."""


def parse_gpu_target(target: str) -> tuple[str, int, int]:
  """'h100:8' -> ('h100', 1, 8); 'a100:2x8' -> ('a100', 2, 8): card, hosts, GPUs per host."""
  card, _, count = target.partition(":")
  parts = count.split("x")
  if card not in GPUS or not 1 <= len(parts) <= 2 or not all(p.isdigit() and int(p) > 0
                                                              for p in parts):
    raise ValueError(f"GPU target {target!r}: expected CARD:N or CARD:HOSTSxN with CARD one of "
                     f"{sorted(GPUS)}, e.g. h100:1, h100:8, a100:2x8")
  hosts, per_host = (1, int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
  return card, hosts, per_host


def target_config_text(card: str) -> str:
  """The GpuTargetConfigProto (text format) of a card in GPUS, with the installed cuDNN version."""
  g = GPUS[card]
  major, minor = g["compute_capability"]
  dnn = _cudnn_version()
  return "\n".join([
      "gpu_device_info {",
      "  threads_per_block_limit: 1024", "  threads_per_warp: 32",
      "  shared_memory_per_block: 49152",
      f"  shared_memory_per_core: {g['shared_memory_per_core']}",
      "  threads_per_core_limit: 2048", f"  core_count: {g['core_count']}",
      f"  fpus_per_core: {g['fpus_per_core']}",
      "  block_dim_limit_x: 2147483647", "  block_dim_limit_y: 65535",
      "  block_dim_limit_z: 65535",
      f"  memory_bandwidth: {int(g['hbm_bandwidth'])}", f"  l2_cache_size: {g['l2_cache_size']}",
      f"  clock_rate_ghz: {g['clock_rate_ghz']}", f"  device_memory_size: {g['hbm_bytes']}",
      f"  shared_memory_per_block_optin: {g['shared_memory_per_block_optin']}",
      f"  cuda_compute_capability {{ major: {major} minor: {minor} }}",
      "  registers_per_core_limit: 65536", "  registers_per_block_limit: 65536",
      "}",
      'platform_name: "CUDA"',
      f"dnn_version_info {{ major: {dnn[0]} minor: {dnn[1]} patch: {dnn[2]} }}",
      f'device_description_str: "{g["description"]}"',
  ]) + "\n"


def _cudnn_version() -> tuple[int, int, int]:
  """The pip cuDNN's version (what the plugin would load on a GPU machine); 9.0.0 without it."""
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  for dist in ("nvidia-cudnn-cu12", "nvidia-cudnn-cu13"):
    try:
      parts = importlib.metadata.version(dist).split(".")
    except importlib.metadata.PackageNotFoundError:
      continue
    return tuple(int(p) for p in (parts + ["0", "0"])[:3])  # type: ignore[return-value]
  return (9, 0, 0)


def _require_cuda_plugin() -> None:
  if not any(importlib.util.find_spec(name) for name in ("jax_cuda12_plugin",
                                                          "jax_cuda13_plugin")):
    raise GpuTargetUnavailable(
        "the CUDA plugin is not installed, so GPU programs cannot be compiled on this host. "
        "Install the optional extra in an environment of its own: pip install -e \".[cuda]\" "
        "(jax-cuda12-plugin[with-cuda] of the installed jax version)")


def gpu_devices(target: str, target_config: str | None = None) -> list:
  """The compile-only devices of a GPU target (hosts x GPUs per host), via the CUDA plugin.

  target_config: a GpuTargetConfigProto in text form (default: target_config_text of the card).
  """
  card, hosts, per_host = parse_gpu_target(target)
  _require_cuda_plugin()
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    desc = topologies.get_topology_desc(
        platform="cuda", topology=f"1x{hosts}x{per_host}",
        target_config=target_config or target_config_text(card))
  except Exception as e:  # noqa: BLE001 - the plugin reports every failure as a runtime error
    raise GpuTargetUnavailable(f"the CUDA plugin cannot describe {target!r} on this host: "
                               f"{type(e).__name__}: {str(e).strip().splitlines()[0]}") from e
  return list(desc.devices)


def hlo_cost_report(compiled) -> dict[str, float]:
  """Per-device flops, transcendentals and bytes accessed of the optimised program: XLA's
  HloCostAnalysis over the compiled HLO modules (through the CPU client), and the number of
  library custom calls whose flops it leaves out."""
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  from jax._src.lib import _jax  # pylint: disable=import-outside-toplevel
  cpu = xla_bridge.get_backend("cpu")
  report = {"flops": 0.0, "transcendentals": 0.0, "bytes_accessed": 0.0}
  for module in compiled.runtime_executable().hlo_modules():
    cost = _jax.hlo_module_cost_analysis(cpu, module)
    report["flops"] += float(cost.get("flops", 0.0))
    report["transcendentals"] += float(cost.get("transcendentals", 0.0))
    report["bytes_accessed"] += float(cost.get("bytes accessed", 0.0))
  text = compiled.as_text()
  report["uncounted_custom_calls"] = float(sum(text.count(f'custom_call_target="{name}')
                                               for name in LIBRARY_CALLS))
  return report


def compile_for_gpu(config: ml_collections.ConfigDict, target: str,
                    rows_per_task: int = train.NOMINAL_ROWS_PER_TASK,
                    target_config: str | None = None) -> dict[str, Any]:
  """Compiles the config's sharded train step for a GPU target; returns the report dict (the
  TPU report's keys, per GPU: memory_per_chip, hbm_per_chip, cost_per_chip, roofline_seconds)."""
  card, hosts, per_host = parse_gpu_target(target)
  gpu = GPUS[card]
  devices = gpu_devices(target, target_config)
  mesh = sharding.make_mesh(config.mesh.model, devices)
  setup = train.build_step(config, mesh, rows_per_task=rows_per_task)
  encoder = setup.model.encoder
  report = {
      "platform": "gpu", "topology": target, "chips": len(devices),
      "device_kind": devices[0].device_kind, "hosts": hosts, "mesh": dict(mesh.shape),
      "fsdp": bool(config.mesh.fsdp), "target_config": target_config or target_config_text(card),
      "encoder": {"model_path": config.model_path, "layers": encoder.num_layers,
                  "hidden": encoder.hidden_size, "dtype": encoder.dtype},
      "parameters": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(setup.abstract["params"])),
      "tasks": len(config.tasks), "sampler": config.sampler,
      "candidates": list(setup.candidates["input_ids"].shape),
      "global_batch": config.batch_size, "grad_accum_steps": int(config.grad_accum_steps),
      "hbm_per_chip": gpu["hbm_bytes"], "usable_hbm_per_chip": int(MEM_FRACTION * gpu["hbm_bytes"]),
      "jax_version": jax.__version__,
  }
  start = time.perf_counter()
  compiled = train.lower_train_step(setup).compile()
  memory, cost = profiling.memory_report(compiled), hlo_cost_report(compiled)
  total = memory.get("total", 0)
  report.update(compile_seconds=time.perf_counter() - start, memory_per_chip=memory,
                hbm_fraction=total / gpu["hbm_bytes"], fits=total <= report["usable_hbm_per_chip"],
                cost_per_chip=cost, flops_per_step=cost["flops"] * len(devices))
  peak = gpu["peak_flops"]["bfloat16" if encoder.dtype == "bfloat16" else "float32"]
  compute, traffic = cost["flops"] / peak, cost["bytes_accessed"] / gpu["hbm_bandwidth"]
  report.update(peak_flops=peak, hbm_bandwidth=gpu["hbm_bandwidth"],
                roofline_seconds=max(compute, traffic),
                roofline_bound="compute" if compute >= traffic else "memory")
  return report


def format_gpu_report(r: dict[str, Any]) -> str:
  """A short human-readable summary of compile_for_gpu's report."""
  gib = lambda n: f"{n / GIB:8.2f} GiB"  # noqa: E731
  m, c = r["memory_per_chip"], r["cost_per_chip"]
  lines = [
      f"{r['topology']}: {r['chips']} GPUs ({r['device_kind']}), {r['hosts']} host(s), mesh "
      f"{r['mesh']}, fsdp={r['fsdp']} (compile-only: no GPU on this host)",
      f"model: {r['encoder']['model_path']} ({r['encoder']['layers']} layers, d="
      f"{r['encoder']['hidden']}, {r['encoder']['dtype']}), {r['parameters']:,} parameters, "
      f"{r['tasks']} tasks, sampler={r['sampler']}",
      f"candidates [T, b, K, L] = {r['candidates']}, global batch {r['global_batch']}; "
      f"compiled in {r['compile_seconds']:.1f} s",
      "memory per GPU (XLA memory_analysis):",
  ]
  lines += [f"  {k:<15}{gib(m[k])}" for k in ("arguments", "outputs", "temporaries", "aliased",
                                               "total") if k in m]
  lines.append(f"  HBM            {gib(r['hbm_per_chip'])}  -> {100 * r['hbm_fraction']:.1f}% "
               f"used; {'fits' if r['fits'] else 'DOES NOT FIT'} in the "
               f"{MEM_FRACTION:.0%} JAX preallocates")
  lines.append("cost per GPU (XLA HloCostAnalysis of the optimised per-GPU program):")
  lines.append(f"  flops          {c['flops'] / 1e12:8.3f} TFLOP  ({r['flops_per_step'] / 1e12:.3f}"
               f" TFLOP per step over all GPUs; {int(c['uncounted_custom_calls'])} library "
               "calls not counted)")
  lines.append(f"  bytes accessed {c['bytes_accessed'] / GIB:8.2f} GiB")
  s = r["roofline_seconds"]
  lines.append(f"  step time (roofline: flops / {r['peak_flops'] / 1e12:.0f} TFLOP/s peak, bytes / "
               f"{r['hbm_bandwidth'] / 1e12:.2f} TB/s) {s * 1e3:.2f} ms, {r['roofline_bound']}-"
               f"bound -> {r['global_batch'] / s:,.0f} examples/s at best "
               "(XLA's GPU cost-model time is not exposed for compile-only executables)")
  return "\n".join(lines)
