"""The real train step built from shapes alone, and compiled ahead of time for a TPU topology.

  camtl-compile-tpu --config glue_base --topology v5e:4x4 [--json OUT] [--config.x=y]

`train.build_step` (the library's one compile path, from shapes) makes everything
`train.train_step` closes over (model, optimizer, freeze labels, StepContext, state shardings) from
an EncoderConfig, the task list and the config, with no checkpoint and no data: the encoder shape
comes from a named shape ('bert-base', 'bert-large', 'roberta-base', 'roberta-large':
experiment.NAMED_ENCODERS) or a model directory's config, the task specs from the registry's Task
records, and the state is abstract (jax.eval_shape). The benchmark (bench.py) instantiates the
same setup with random weights.

`compile_for_topology` lowers the sharded train step (MT-U included when the config samples with
it) over a mesh of a TPU topology's devices with libtpu on a CPU-only host
(jax.experimental.topologies, compile-only devices) and reports, per chip, XLA's memory analysis
against the chip's HBM and its cost analysis (flops, bytes, and the cost model's step time). So a
pod run is checked for out-of-memory before any TPU is rented.

libtpu is an optional extra: `pip install -e ".[tpu]"` (libtpu==0.0.42.*, the version jax 0.10.2's
`jax[tpu]` extra pins). Installing libtpu on a CPU host is harmless but every JAX process then
probes for a TPU and takes /tmp/libtpu_lockfile; keep it in its own environment (or a
`pip install --target DIR` on PYTHONPATH only for this command) on shared machines.
"""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections

from camtl_jax import experiment, sharding, train
from camtl_jax.perf import profiling

# Names of the setup from shapes and of XLA's reports, kept for aot.py's callers: their one
# definition is the library's (train.py) and perf/profiling.py's.
NOMINAL_ROWS_PER_TASK = train.NOMINAL_ROWS_PER_TASK
GIB = profiling.GIB
StepSetup, build_step, lower_train_step = train.StepSetup, train.build_step, train.lower_train_step
memory_report, cost_report = profiling.memory_report, profiling.cost_report

# Per chip, by topology prefix: HBM, the chip config that makes one JAX device per chip, and the
# published dense bf16 peak and HBM bandwidth (for a roofline step time next to XLA's cost model).
CHIPS: dict[str, dict[str, Any]] = {
    "v4": {"hbm_bytes": 32 * GIB, "chip_config_name": "megacore", "peak_flops": 275e12,
           "hbm_bandwidth": 1228e9},
    "v5e": {"hbm_bytes": 16 * GIB, "chip_config_name": "default", "peak_flops": 197e12,
            "hbm_bandwidth": 819e9},
    "v5p": {"hbm_bytes": 95 * GIB, "chip_config_name": "megacore", "peak_flops": 459e12,
            "hbm_bandwidth": 2765e9},
    "v6e": {"hbm_bytes": 32 * GIB, "chip_config_name": "default", "peak_flops": 918e12,
            "hbm_bandwidth": 1640e9},
}


# ------------------------------------------------------------------------------------------------
# TPU topologies


class TopologyUnavailable(ValueError):
  """libtpu is missing or cannot describe the topology on this host."""


def parse_topology(topology: str) -> tuple[str, dict[str, Any]]:
  """'v5e:4x4' -> ('v5e', CHIPS['v5e']); ValueError for an unknown chip or a malformed name."""
  chip, _, dims = topology.partition(":")
  if chip not in CHIPS or not dims or not all(d.isdigit() for d in dims.split("x")):
    raise ValueError(f"topology {topology!r}: expected CHIP:AxB[xC] with CHIP one of "
                     f"{sorted(CHIPS)}, e.g. v5e:4x4, v5e:16x16, v4:4x4x8")
  return chip, CHIPS[chip]


def _require_libtpu() -> None:
  try:
    import libtpu  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise TopologyUnavailable(
        "libtpu is not installed, so TPU programs cannot be compiled on this host. Install the "
        "optional extra: pip install -e \".[tpu]\" (libtpu==0.0.42.*, the version jax 0.10.2 "
        "pins)") from e


def topology_devices(topology: str) -> list:
  """The compile-only devices of a TPU topology (one per chip), via libtpu on any host."""
  _, chip = parse_topology(topology)
  _require_libtpu()
  # Compile-only use: no TPU is opened, so skip libtpu's one-process-per-host lock (which
  # another JAX process on a shared host may hold).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    desc = topologies.get_topology_desc(topology_name=topology, platform="tpu",
                                        chip_config_name=chip["chip_config_name"])
  except Exception as e:  # noqa: BLE001 - libtpu reports every failure as a runtime error
    raise TopologyUnavailable(f"libtpu cannot describe topology {topology!r} on this host: "
                              f"{type(e).__name__}: {e}") from e
  return list(desc.devices)


def compile_for_topology(config: ml_collections.ConfigDict, topology: str,
                         rows_per_task: int = NOMINAL_ROWS_PER_TASK) -> dict[str, Any]:
  """Compiles the config's sharded train step for a TPU topology; returns the report dict.

  A step that cannot fit is reported (fits=False, compile_error = XLA's message), not raised: the
  TPU compiler refuses programs whose buffers exceed the chip's HBM.
  """
  _, chip = parse_topology(topology)
  devices = topology_devices(topology)
  mesh = sharding.make_mesh(config.mesh.model, devices)
  setup = train.build_step(config, mesh, rows_per_task=rows_per_task)
  encoder = setup.model.encoder
  report = {
      "topology": topology, "chips": len(devices), "device_kind": devices[0].device_kind,
      "hosts": len({d.process_index for d in devices}),
      "mesh": dict(mesh.shape), "fsdp": bool(config.mesh.fsdp),
      "encoder": {"model_path": config.model_path, "layers": encoder.num_layers,
                  "hidden": encoder.hidden_size, "dtype": encoder.dtype},
      "parameters": experiment.count_parameters(setup.abstract["params"]),
      "tasks": len(config.tasks), "sampler": config.sampler,
      "candidates": list(setup.candidates["input_ids"].shape),
      "global_batch": config.batch_size, "hbm_per_chip": chip["hbm_bytes"],
  }
  start = time.perf_counter()
  try:
    compiled = train.lower_train_step(setup).compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    report.update(fits=False, compile_error=str(e).strip().splitlines()[0],
                  compile_seconds=time.perf_counter() - start)
    return report
  memory, cost = profiling.memory_report(compiled), profiling.cost_report(compiled)
  report.update(
      compile_seconds=time.perf_counter() - start, memory_per_chip=memory,
      hbm_fraction=memory.get("total", 0) / chip["hbm_bytes"],
      fits=memory.get("total", 0) <= chip["hbm_bytes"], cost_per_chip=cost)
  if "flops" in cost:
    report["flops_per_step"] = cost["flops"] * len(devices)
  report.update(_step_time(cost, chip, compiled))
  return report


# Custom calls the TPU compiler inserts that its cost model prices at -1 s each (found by counting:
# optimal_seconds = modelled time - their number, e.g. -62.982 with 62 ConcatBitcast + 1 ZeroCrop).
UNMODELLED_CUSTOM_CALLS = ("ConcatBitcast", "ZeroCrop")


def _step_time(cost: dict[str, float], chip: dict[str, Any], compiled) -> dict[str, Any]:
  """XLA's cost-model step time, and a roofline bound from XLA's own flops and bytes.

  optimal_seconds counts -1 s for each custom call in UNMODELLED_CUSTOM_CALLS (sliced weight
  prefetches and crops the compiler inserts itself); adding their number back gives the modelled
  time of everything else, reported as cost_model_seconds next to the raw value.
  """
  out: dict[str, Any] = {}
  seconds = cost.get("optimal_seconds")
  if seconds is not None:
    text = compiled.as_text()
    unmodelled = sum(text.count(f'custom_call_target="{name}"') for name in UNMODELLED_CUSTOM_CALLS)
    modelled = seconds + unmodelled
    out["cost_model_raw_seconds"] = seconds
    out["cost_model_unmodelled_ops"] = unmodelled
    out["cost_model_seconds"] = modelled if modelled > 0 else None
  if "flops" in cost and "bytes_accessed" in cost:
    compute = cost["flops"] / chip["peak_flops"]
    memory = cost["bytes_accessed"] / chip["hbm_bandwidth"]
    out["roofline_seconds"] = max(compute, memory)
    out["roofline_bound"] = "compute" if compute >= memory else "memory"
  return out


def format_report(r: dict[str, Any]) -> str:
  """A short human-readable summary of compile_for_topology's report."""
  gib = lambda n: f"{n / GIB:8.2f} GiB"  # noqa: E731
  lines = [
      f"{r['topology']}: {r['chips']} chips ({r['device_kind']}), {r['hosts']} hosts, mesh "
      f"{r['mesh']}, fsdp={r['fsdp']}",
      f"model: {r['encoder']['model_path']} ({r['encoder']['layers']} layers, d="
      f"{r['encoder']['hidden']}, {r['encoder']['dtype']}), {r['parameters']:,} parameters, "
      f"{r['tasks']} tasks, sampler={r['sampler']}",
      f"candidates [T, b, K, L] = {r['candidates']}, global batch {r['global_batch']}; "
      f"compiled in {r['compile_seconds']:.1f} s",
  ]
  if "compile_error" in r:
    return "\n".join(lines + [f"DOES NOT FIT in {gib(r['hbm_per_chip']).strip()} per chip: "
                               f"{r['compile_error']}"])
  m, c = r["memory_per_chip"], r["cost_per_chip"]
  lines.append("memory per chip (XLA memory_analysis):")
  lines += [f"  {k:<15}{gib(m[k])}" for k in ("arguments", "outputs", "temporaries", "aliased",
                                               "generated_code", "total") if k in m]
  lines.append(f"  HBM            {gib(r['hbm_per_chip'])}  -> {100 * r['hbm_fraction']:.1f}% "
               f"used, {'fits' if r['fits'] else 'DOES NOT FIT'}")
  lines.append("cost per chip (XLA cost_analysis):")
  if "flops" in c:
    lines.append(f"  flops          {c['flops'] / 1e12:8.3f} TFLOP  "
                 f"({r['flops_per_step'] / 1e15:.3f} PFLOP per step over all chips)")
  if "bytes_accessed" in c:
    lines.append(f"  bytes accessed {c['bytes_accessed'] / GIB:8.2f} GiB")
  if r.get("cost_model_seconds"):
    s = r["cost_model_seconds"]
    lines.append(f"  step time (XLA cost model)  {s * 1e3:8.1f} ms -> {r['global_batch'] / s:,.0f} "
                 f"examples/s  (raw optimal_seconds {r['cost_model_raw_seconds']:.3f} with "
                 f"{r['cost_model_unmodelled_ops']} unmodelled custom calls at -1 s each)")
  elif "cost_model_raw_seconds" in r:
    lines.append(f"  step time (XLA cost model)  unavailable (optimal_seconds "
                 f"{r['cost_model_raw_seconds']:.3f})")
  if "roofline_seconds" in r:
    s = r["roofline_seconds"]
    lines.append(f"  step time (roofline: XLA flops / bf16 peak, bytes / HBM bandwidth) "
                 f"{s * 1e3:.1f} ms, {r['roofline_bound']}-bound -> "
                 f"{r['global_batch'] / s:,.0f} examples/s at best")
  return "\n".join(lines)
