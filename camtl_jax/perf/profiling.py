"""What the benchmark and AOT tools share (perf/'s one shared module; the tools import nothing
else of perf/): XLA's memory and cost reports of a compiled program, compiled programs timed
side by side against a matmul peak, and where a compiled step's time goes.

Where the time goes: a jax.profiler trace of a step's calls, read back per HLO op.

  report = profiling.profile_calls(call, steps=3, trace_dir=DIR, hlo_text=compiled.as_text())

XLA's CPU runtime records one trace event per thunk (an HLO instruction or fusion it runs); the
compiled module's text gives each instruction its source: the op_name path (which module, and
whether it sits in a while loop's body or under jvp / transpose, i.e. an update's forward or
backward) and its Python stack. `summarize` sums the thunk durations per part of the step and per
op, and for every thunk holding a dot it counts the dot's FLOPs from the HLO shapes, so the report
can say how fast the matmuls themselves ran against everything else.

Durations are per thunk as recorded on its thread; XLA CPU runs independent thunks concurrently
and a large matmul on several threads, so thunk seconds can exceed the wall seconds of the step.
"""
from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import math
import re
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from camtl_jax import sharding
from camtl_jax.models import bert

GIB = 2 ** 30
MIB = 2 ** 20

# Parts of a train step, from an instruction's op_name path (first match wins).
PARTS = (("update backward", "transpose(jvp("), ("update forward", "jvp("),
         ("scoring forward", "/CAMTL/"))
PARAMETER_SIDE = "parameters (optimizer, clipping, NaN guard)"
OTHER = "selection, packing and the rest"

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([\d,]*)\]\S* (\w[\w\-]*)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")


@dataclasses.dataclass
class OpSource:
  """One instruction of the compiled module: its op_name, stack frame id and (for a fusion) the
  dot FLOPs of the computation it calls."""
  op_name: str = ""
  frame: int = 0
  calls: str | None = None
  dot_flops: float = 0.0


def _dims(text: str) -> list[int]:
  return [int(d) for d in text.split(",") if d]


def _dot_flops(line: str, out_dims: list[int], shapes: dict[str, list[int]]) -> float:
  """2 * |output| * |contracted| for an HLO dot line; 0 when its lhs shape is unknown."""
  operands = re.search(r"dot\(%([\w.\-]+)", line)
  contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
  if not operands or operands.group(1) not in shapes:
    return 0.0
  lhs = shapes[operands.group(1)]
  contracted = math.prod(lhs[d] for d in _dims(contracting.group(1))) if contracting else 1
  return 2.0 * math.prod(out_dims) * contracted


def hlo_sources(hlo_text: str) -> tuple[dict[str, OpSource], dict[int, list[str]]]:
  """Compiled HLO text -> ({instruction name: OpSource}, {stack frame id: ["path:function", ...]
  innermost first})."""
  sources: dict[str, OpSource] = {}
  computation_flops: dict[str, float] = collections.defaultdict(float)
  computation_op_name: dict[str, str] = {}  # the first op_name inside each computation
  shapes: dict[str, list[int]] = {}
  current = ""
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header and line.rstrip().endswith("{"):
      current, shapes = header.group(1), {}
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, _, dims, opcode = match.groups()
    shapes[name] = _dims(dims)
    op_name = re.search(r'op_name="([^"]+)"', line)
    frame = re.search(r"stack_frame_id=(\d+)", line)
    calls = re.search(r"calls=%([\w.\-]+)", line)
    source = OpSource(op_name.group(1) if op_name else "", int(frame.group(1)) if frame else 0,
                      calls.group(1) if calls else None)
    if source.op_name:
      computation_op_name.setdefault(current, source.op_name)
    if opcode == "dot":
      source.dot_flops = _dot_flops(line, shapes[name], shapes)
      computation_flops[current] += source.dot_flops
    sources[name] = source
  for source in sources.values():
    if source.calls:
      source.dot_flops += computation_flops.get(source.calls, 0.0)
      if not source.op_name:  # a fusion without metadata: the first op of what it calls
        source.op_name = computation_op_name.get(source.calls, "")
  return sources, _stack_frames(hlo_text)


def _stack_frames(hlo_text: str) -> dict[int, list[str]]:
  """The module's FileNames / FunctionNames / FileLocations / StackFrames tables -> frames."""
  tables: dict[str, dict[int, str]] = collections.defaultdict(dict)
  table = None
  for line in hlo_text.splitlines():
    if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      table = line
      continue
    entry = re.match(r"^(\d+) (.*)$", line) if table else None
    if entry:
      tables[table][int(entry.group(1))] = entry.group(2)
    elif table and line.strip():
      table = None
  def location(loc_id: int) -> str:
    loc = tables["FileLocations"].get(loc_id, "")
    file_id = re.search(r"file_name_id=(\d+)", loc)
    func_id = re.search(r"function_name_id=(\d+)", loc)
    file = tables["FileNames"].get(int(file_id.group(1)), "?").strip('"') if file_id else "?"
    func = tables["FunctionNames"].get(int(func_id.group(1)), "?").strip('"') if func_id else "?"
    return f"{file}:{func}"
  frames: dict[int, list[str]] = {}
  for frame_id in tables["StackFrames"]:
    chain, seen, current = [], set(), frame_id
    while current and current not in seen:
      seen.add(current)
      text = tables["StackFrames"].get(current, "")
      loc = re.search(r"file_location_id=(\d+)", text)
      parent = re.search(r"parent_frame_id=(\d+)", text)
      if loc:
        chain.append(location(int(loc.group(1))))
      current = int(parent.group(1)) if parent else 0
    frames[frame_id] = chain
  return frames


def step_part(source: OpSource, frames: dict[int, list[str]]) -> str:
  """Which part of a train step an instruction belongs to (PARTS, else by its Python stack)."""
  for part, marker in PARTS:
    if marker in source.op_name:
      return part
  stack = frames.get(source.frame, [])
  ours = [f for f in stack if "/camtl_jax/" in f]
  # optax and optim.py: the optimizer and clipping; train_step's own lines: the NaN guard's
  # where over the state and the state update.
  if any("/optax/" in f or "/camtl_jax/optim.py:" in f for f in stack) or (
      ours and ours[0].endswith("/train.py:train_step")):
    return PARAMETER_SIDE
  return OTHER


def thunk_times(trace_dir: str | Path) -> dict[str, tuple[float, int]]:
  """The newest perfetto trace under trace_dir -> {hlo_op: (total seconds, thunk calls)} over the
  jitted modules' thunks."""
  traces = sorted(Path(trace_dir).glob("**/perfetto_trace.json.gz"),
                  key=lambda p: p.stat().st_mtime)
  if not traces:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
  with gzip.open(traces[-1]) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
  for event in events:
    args = event.get("args", {})
    if event.get("ph") == "X" and "hlo_op" in args and args.get("hlo_module", "").startswith("jit"):
      totals[args["hlo_op"]][0] += event.get("dur", 0.0) * 1e-6
      totals[args["hlo_op"]][1] += 1
  return {name: (seconds, int(calls)) for name, (seconds, calls) in totals.items()}


def summarize(times: dict[str, tuple[float, int]], hlo_text: str, steps: int,
              peak_flops_per_s: float | None = None, top: int = 12) -> dict[str, Any]:
  """Per step: thunk seconds and thunk count; per part its seconds, share, and the seconds and
  FLOP rate of its thunks that hold a dot; the `top` ops by time, and the `top` without a dot
  (where the time beside the matmuls goes)."""
  sources, frames = hlo_sources(hlo_text)
  parts: dict[str, dict[str, float]] = collections.defaultdict(
      lambda: {"seconds": 0.0, "dot_seconds": 0.0, "dot_flops": 0.0, "thunks": 0})
  for name, (seconds, calls) in times.items():
    source = sources.get(name, OpSource())
    row = parts[step_part(source, frames)]
    row["seconds"] += seconds / steps
    row["thunks"] += calls / steps
    if source.dot_flops:
      row["dot_seconds"] += seconds / steps
      row["dot_flops"] += source.dot_flops * calls / steps
  total = sum(r["seconds"] for r in parts.values())
  for row in parts.values():
    row["share"] = row["seconds"] / total if total else 0.0
    rate = row["dot_flops"] / row["dot_seconds"] if row["dot_seconds"] else None
    row["dot_flops_per_s"] = rate
    row["dot_peak_fraction"] = rate / peak_flops_per_s if rate and peak_flops_per_s else None
  ranked = sorted(times.items(), key=lambda kv: -kv[1][0])
  def listed(items):
    return [{"op": name, "op_name": sources.get(name, OpSource()).op_name,
             "part": step_part(sources.get(name, OpSource()), frames),
             "seconds_per_step": seconds / steps, "share": seconds / steps / total,
             "calls_per_step": calls / steps} for name, (seconds, calls) in items[:top]]
  return {"steps": steps, "thunk_seconds_per_step": total,
          "thunks_per_step": sum(calls for _, calls in times.values()) / steps,
          "parts": dict(sorted(parts.items(), key=lambda kv: -kv[1]["seconds"])),
          "top_ops": listed(ranked),
          "top_ops_without_dots": listed([kv for kv in ranked
                                          if not sources.get(kv[0], OpSource()).dot_flops])}


def profile_calls(call: Callable[[int], Any], steps: int, trace_dir: str | Path, hlo_text: str,
                  peak_flops_per_s: float | None = None) -> dict[str, Any]:
  """Runs call(i) for i in range(steps) (each blocking on its result) under jax.profiler.trace
  and summarizes the thunks of the compiled module whose text is hlo_text; adds the wall seconds
  per profiled step (the profiler itself slows small thunks)."""
  wall = []
  with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
    for i in range(steps):
      start = time.perf_counter()
      jax.block_until_ready(call(i))
      wall.append(time.perf_counter() - start)
  report = summarize(thunk_times(trace_dir), hlo_text, steps, peak_flops_per_s)
  report["wall_seconds_per_step"] = sorted(wall)[len(wall) // 2]
  return report


def format_profile(report: dict[str, Any]) -> str:
  lines = [f"profile of {report['steps']} steps: {report['wall_seconds_per_step']:.3f} s wall per "
           f"step under the profiler, {report['thunk_seconds_per_step']:.3f} thunk s, "
           f"{report['thunks_per_step']:.0f} thunks",
           f"{'part':<46}{'share':>7}{'s/step':>8}{'dot s':>8}{'dot GFLOP/s':>12}{'%peak':>7}"]
  for part, row in report["parts"].items():
    rate = row["dot_flops_per_s"]
    frac = row["dot_peak_fraction"]
    lines.append(f"{part:<46}{row['share']:>7.1%}{row['seconds']:>8.3f}{row['dot_seconds']:>8.3f}"
                 + (f"{rate / 1e9:>12.1f}" if rate else f"{'-':>12}")
                 + (f"{frac:>7.1%}" if frac else f"{'-':>7}"))
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# What XLA says about a compiled program


def memory_report(compiled) -> dict[str, int]:
  """Per-device bytes from compiled.memory_analysis(); total = arguments + outputs + temporaries
  - aliased (donated outputs reuse their argument buffers) + generated code."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  report = {
      "arguments": int(m.argument_size_in_bytes), "outputs": int(m.output_size_in_bytes),
      "temporaries": int(m.temp_size_in_bytes), "aliased": int(m.alias_size_in_bytes),
      "generated_code": int(m.generated_code_size_in_bytes),
  }
  report["total"] = (report["arguments"] + report["outputs"] + report["temporaries"]
                     - report["aliased"] + report["generated_code"])
  return report


def cost_report(compiled) -> dict[str, float]:
  """Per-device flops, transcendentals, bytes accessed and (TPU) the cost model's
  optimal_seconds."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  cost = cost or {}
  keys = {"flops": "flops", "transcendentals": "transcendentals",
          "bytes_accessed": "bytes accessed", "optimal_seconds": "optimal_seconds"}
  return {name: float(cost[key]) for name, key in keys.items() if key in cost}


# ------------------------------------------------------------------------------------------------
# Compiled programs timed side by side


def _proc_status(field: str) -> int | None:
  """A /proc/self/status size field in bytes (Linux), else None."""
  try:
    for line in Path("/proc/self/status").read_text().splitlines():
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _reset_peak_rss() -> None:
  """Resets the kernel's peak-RSS mark (VmHWM) so the next reading is this program's peak."""
  try:
    Path("/proc/self/clear_refs").write_text("5")
  except OSError:
    pass


def _device_peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


@dataclasses.dataclass
class Program:
  """One compiled program and what was measured of it.

  args: the next call's arguments; carry(out, args) -> the call after (the train step donates
  its state, so each call takes the state the previous one returned).
  """
  name: str
  examples: int
  compiled: Any
  args: tuple
  carry: Callable[[Any, tuple], tuple]
  compile_s: float
  rss_peak: int | None = None
  device_peak: int | None = None
  flops: float | None = None      # per call and device; None: the compiled program's cost_analysis
  step_s: list[float] = dataclasses.field(default_factory=list)
  cpu_s: list[float] = dataclasses.field(default_factory=list)

  def call(self) -> tuple[float, float]:
    """One blocked call: (wall seconds, process CPU seconds)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(self.compiled(*self.args))
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    self.args = self.carry(out, self.args)
    return wall, cpu


def compile_program(name: str, jitted, args: tuple, examples: int,
                    carry: Callable[[Any, tuple], tuple] | None = None) -> Program:
  """Lowers and compiles (timed), then warms up once, recording the peak memory of that call."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  program = Program(name, examples, compiled, args, carry or (lambda out, a: a),
                    time.perf_counter() - start)
  _reset_peak_rss()
  program.call()
  program.rss_peak, program.device_peak = _proc_status("VmHWM"), _device_peak_bytes()
  return program


def matmul_program(mesh: jax.sharding.Mesh, n: int, dtype: str) -> Program:
  """A jitted [n*D, n] @ [n, n] split over the D devices of 'data': the peak we compare with."""
  d = sharding.data_size(mesh)
  rows = sharding.batch_sharding(mesh, 0)
  a = jax.device_put(jnp.ones((n * d, n), bert.DTYPES[dtype]), rows)
  b = jax.device_put(jnp.ones((n, n), bert.DTYPES[dtype]), sharding.replicated(mesh))
  return compile_program("matmul", jax.jit(jnp.matmul, out_shardings=rows), (a, b), 0)


def matmul_peak(mesh: jax.sharding.Mesh, n: int, dtype: str, calls: int = 3) -> float:
  """FLOP/s of the fastest of `calls` calls of matmul_program."""
  matmul = matmul_program(mesh, n, dtype)
  for _ in range(calls):
    matmul.step_s.append(matmul.call()[0])
  return 2.0 * sharding.data_size(mesh) * n ** 3 / min(matmul.step_s)


def time_round_robin(programs: list, matmul: Program, steps: int, matmul_reps: int = 3) -> None:
  """`steps` rounds, each calling every program once and the matmul matmul_reps times. On a
  machine shared with other work, every program then sees the same mix of quiet and busy
  moments, and the fastest call of each is comparable with the fastest matmul. programs: Program
  or anything with call() -> (wall, cpu) seconds and step_s, cpu_s lists."""
  for _ in range(steps):
    for program in [matmul] * matmul_reps + programs:
      wall, cpu = program.call()
      program.step_s.append(wall)
      program.cpu_s.append(cpu)
