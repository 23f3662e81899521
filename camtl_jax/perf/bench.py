"""Benchmark of the compiled steps on the current backend (DESIGN 8).

  camtl-bench --config bench:minilm --steps 5 [--json OUT] [--config.batch_size=16 ...]

For one config (T = len(config.tasks), b = config.batch_size, L = config.max_length) it times:

  plain          the plain MTL step: conditioning='none', a baseline sampler (no scoring forward)
  camtl          the CA-MTL step (the config's conditional modules), baseline sampler
  camtl_mtu      the CA-MTL + MT-Uncertainty step: scoring forward over T*b, top-b, update
  score          the scoring forward alone over the T*b candidates (train.select: deterministic
                 forward, entropies, top-b), what camtl_mtu runs before its update
  forward_plain  a plain-model deterministic forward of T*b examples (eval_step), for comparison
  forward_camtl  the CA-MTL model's deterministic forward of T*b examples (eval_step)
  camtl_all_trainable  camtl with nothing frozen (frozen_layers=(0, 0), freeze_embeddings=False):
                 its FLOPs against camtl's show what freezing saves
  plain_all_trainable  plain with nothing frozen (the MTL baseline of configs mtl_baseline);
                 against camtl_all_trainable it isolates what the conditional modules themselves
                 cost (with the lower layers frozen, camtl also back-propagates through them to
                 reach the trainable alignment and conditional attention below and inside them)

Optional (--variants ...,hf_forward,hf_train; torch and transformers installed): HF transformers'
PyTorch BertForSequenceClassification of the same encoder shape doing forward_plain's and
plain_all_trainable's work, in a resident process called in the same rounds (hf_reference.py,
launched by module name); targets hf_forward_over_ours and hf_train_over_ours (>= 1: ours at
least as fast).

The baseline sampler is the config's when it is not 'mt_uncertainty', else 'proportional'. Each
program is lowered and compiled once (compile time reported separately) and run once to warm up
(its peak memory is taken then). Then --steps rounds each call every program once, blocked with
jax.block_until_ready, and the matmul of the peak three times: on a machine shared with other work
every program sees the same mix of quiet and busy moments. The time of a program is its fastest
call (the median, the mean and the process CPU time per call are reported too), the peak the
fastest matmul. Weights are random (only shapes matter for speed); candidates are synthetic
batches of docs/design/batch_format.md with every task's labels in range and all L positions
real tokens, so the numbers do not depend on any data.

Reported per program: seconds per call (fastest, median, mean; CPU seconds), examples/s, compile
time, XLA's FLOPs per call (cost_analysis, summed over devices; of the same program with its chunk
loops off, since XLA counts a loop body once and every synthetic row is full, so the chunked and
the one-pass program do the same arithmetic), achieved FLOP/s and
their fraction of a matrix-multiply peak measured in the same run on the same devices (a jitted
[n, n] @ [n, n] in the compute dtype), memory (XLA's memory_analysis per device; device
memory_stats() peak where the backend has it; the process's peak RSS during the program's warm-up
call, which includes the buffers of the programs compiled before it).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from camtl_jax import experiment, mtu, sharding, train
from camtl_jax.models import bert
from camtl_jax.models.heads import TaskSpec
from camtl_jax.perf import profiling
from camtl_jax.perf.profiling import MIB, Program
from camtl_jax.tasks import base


# ------------------------------------------------------------------------------------------------
# Configs of the variants


def _with(config: ml_collections.ConfigDict, **changes) -> ml_collections.ConfigDict:
  """An unlocked copy of config with changes; 'model__x' sets config.model.x."""
  c = ml_collections.ConfigDict(config.to_dict())
  for key, value in changes.items():
    if key.startswith("model__"):
      c.model[key[len("model__"):]] = value
    else:
      c[key] = value
  return c


def baseline_sampler(config: ml_collections.ConfigDict) -> str:
  return config.sampler if config.sampler != "mt_uncertainty" else "proportional"


# Step variant -> config. All share the encoder shape, tasks, b and L of the given config.
STEP_VARIANTS: dict[str, Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]] = {
    "plain": lambda c: _with(c, sampler=baseline_sampler(c), model__conditioning="none"),
    "camtl": lambda c: _with(c, sampler=baseline_sampler(c), model__conditioning="camtl"),
    "camtl_mtu": lambda c: _with(c, sampler="mt_uncertainty", model__conditioning="camtl"),
    "camtl_all_trainable": lambda c: _with(c, sampler=baseline_sampler(c),
                                           model__conditioning="camtl", frozen_layers=(0, 0),
                                           freeze_embeddings=False),
    "plain_all_trainable": lambda c: _with(c, sampler=baseline_sampler(c),
                                           model__conditioning="none", frozen_layers=(0, 0),
                                           freeze_embeddings=False),
}
# Forward-only programs: name -> (step variant whose model and params they use, kind).
FORWARD_VARIANTS: dict[str, tuple[str, str]] = {
    "forward_plain": ("plain", "eval"),
    "forward_camtl": ("camtl", "eval"),
    "score": ("camtl_mtu", "score"),
}
ORDER = ("plain", "camtl", "camtl_mtu", "score", "forward_plain", "forward_camtl",
         "camtl_all_trainable", "plain_all_trainable")
OPTIONAL = ("hf_forward", "hf_train")  # the PyTorch reference programs, run only when asked for


# ------------------------------------------------------------------------------------------------
# Synthetic candidates


def _fill_labels(out: dict[str, np.ndarray], spec: TaskSpec, rng: np.random.Generator) -> None:
  """Valid labels of the task's head type in one task's candidates out[key] [b, ...] (in place)."""
  n, length = out["context_mask"].shape
  if spec.type in (base.CLASSIFICATION, base.MULTIPLE_CHOICE):
    out["label"][:] = rng.integers(0, spec.num_labels, n)
  choices = spec.num_labels if spec.type == base.MULTIPLE_CHOICE else 1
  out["attention_mask"][:, choices:] = 0  # choice rows beyond the task's are empty
  if spec.type == base.REGRESSION:
    out["target"][:] = rng.normal(size=n)
  if spec.type == base.SPAN:  # [CLS] and the second half are the context
    out["context_mask"][:, 0] = 1
    out["context_mask"][:, length // 2:] = 1
    start = rng.integers(length // 2, length, n)
    out["start_position"][:] = start
    out["end_position"][:] = np.minimum(start + rng.integers(0, 8, n), length - 1)
  if spec.type == base.TAGGING:
    out["token_labels"][:, 1:-1] = rng.integers(0, spec.num_labels, (n, length - 2))


def synthetic_candidates(specs: tuple[TaskSpec, ...], batch_size: int, length: int,
                         vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A [T, b, ...] candidate set of docs/design/batch_format.md: random ids, every position of a
  used choice row a real token (the bucket is full), labels/targets/spans/tags valid for each
  task's head type."""
  rng = np.random.default_rng(seed)
  shapes = train.candidate_shapes(specs, batch_size, length)
  out = {k: np.zeros(v.shape, v.dtype) for k, v in shapes.items()}
  out["input_ids"] = rng.integers(1, vocab_size, shapes["input_ids"].shape).astype(np.int32)
  out["attention_mask"][:] = 1
  out["token_labels"][:] = -1
  out["weight"][:] = 1
  out["task_id"][:] = np.arange(len(specs))[:, None]
  out["uid"][:] = np.arange(len(specs) * batch_size).reshape(len(specs), batch_size)
  for t, spec in enumerate(specs):
    _fill_labels({k: v[t] for k, v in out.items()}, spec, rng)  # views: fills `out`
  return out


def _flat(candidates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """[T, b, ...] -> [T*b, ...] (row order does not matter for timing)."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in candidates.items()}


# ------------------------------------------------------------------------------------------------
# The PyTorch reference programs, run in their own process: `python -m camtl_jax.perf.hf_reference`
# (launched by module name, so this module imports neither torch nor that tool)


@dataclasses.dataclass
class ReferenceShape:
  """What the PyTorch model and its inputs look like (the bench's encoder and batch); sent to the
  reference process as its JSON setup request (hf_reference.main reads these fields)."""
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  vocab_size: int
  length: int
  forward_examples: int
  train_examples: int
  num_labels: int = 2
  threads: int = 0  # 0: os.cpu_count()


class ReferenceWorker:
  """The resident PyTorch process. Requests and replies are JSON lines; its stderr goes to a file,
  quoted when it fails."""

  def __init__(self, shape: ReferenceShape):
    self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", prefix="camtl_hf_reference_")
    self.proc = subprocess.Popen([sys.executable, "-m", "camtl_jax.perf.hf_reference"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                 text=True)
    self.request({"setup": dataclasses.asdict(shape)})

  def request(self, message: dict[str, Any]) -> dict[str, Any]:
    self.proc.stdin.write(json.dumps(message) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      self.log.seek(0)
      raise RuntimeError("the HF reference process stopped: " + self.log.read()[-2000:])
    return json.loads(line)

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.stdin.close()
      self.proc.wait(timeout=60)
    self.log.close()


class HFProgram:
  """One reference program in the worker, called like profiling.Program (call, step_s, cpu_s)."""

  def __init__(self, name: str, examples: int, worker: ReferenceWorker):
    self.name, self.examples, self.worker = name, examples, worker
    self.step_s: list[float] = []
    self.cpu_s: list[float] = []

  def call(self) -> tuple[float, float]:
    """One call in the worker: (its wall seconds, its process CPU seconds)."""
    reply = self.worker.request({"run": self.name})
    return reply["wall"], reply["cpu"]


def reference_programs(shape: ReferenceShape, names: tuple[str, ...]
                       ) -> tuple[ReferenceWorker, list[HFProgram]]:
  """The worker and the requested reference programs (OPTIONAL; each warmed up once)."""
  if importlib.util.find_spec("torch") is None:
    raise ValueError(f"{', '.join(names)} need PyTorch: pip install torch==2.13.0 (the CPU "
                     "build), or leave them out of --variants")
  worker = ReferenceWorker(shape)
  made = [HFProgram(n, shape.forward_examples if n == "hf_forward" else shape.train_examples,
                    worker) for n in names]
  for program in made:
    program.call()
  return worker, made


# ------------------------------------------------------------------------------------------------
# The variants


def _row(p: Program, devices: int, peak: float) -> dict[str, Any]:
  best = min(p.step_s)
  cost, memory = profiling.cost_report(p.compiled), profiling.memory_report(p.compiled)
  flops = (cost.get("flops", 0.0) if p.flops is None else p.flops) * devices
  return {
      "name": p.name, "examples": p.examples, "seconds_per_step": best,
      "seconds_per_step_median": statistics.median(p.step_s),
      "seconds_per_step_mean": statistics.fmean(p.step_s), "step_seconds": p.step_s,
      "cpu_seconds_per_step": statistics.median(p.cpu_s),
      "examples_per_s": p.examples / best, "compile_seconds": p.compile_s,
      "flops_per_step": flops, "flops_per_s": flops / best, "peak_fraction": flops / best / peak,
      "bytes_accessed_per_step": cost.get("bytes_accessed", 0.0) * devices,
      "memory_per_device": memory, "rss_peak_bytes": p.rss_peak,
      "device_peak_bytes": p.device_peak,
  }


def _reference_row(p: HFProgram) -> dict[str, Any]:
  """A PyTorch reference program's times (no XLA FLOPs or memory analysis for it)."""
  best = min(p.step_s)
  return {"name": p.name, "examples": p.examples, "seconds_per_step": best,
          "seconds_per_step_median": statistics.median(p.step_s),
          "seconds_per_step_mean": statistics.fmean(p.step_s), "step_seconds": p.step_s,
          "cpu_seconds_per_step": statistics.median(p.cpu_s), "examples_per_s": p.examples / best}


def _state(setup: train.StepSetup, seed: int):
  return jax.jit(setup.init, out_shardings=setup.steps.shardings)(jax.random.key(seed))


def _forward_fn(setup: train.StepSetup, kind: str):
  """The jitted forward-only program: 'eval' (the steps' eval_step, every head type as the scoring
  forward runs them) over flat examples [T*b, ...], 'score' (MT-U's scoring and selection) over
  the candidates [T, b, ...]."""
  steps = setup.steps
  if kind == "eval":
    return steps.p_eval
  mse = setup.abstract["regression_mse"]

  def score(params, cands):
    flat = mtu.flatten_candidates(cands)
    return train.select(steps.ctx, params, cands, flat, jnp.zeros((), jnp.int32),
                        jax.random.key(0), jnp.ones(mse.shape, mse.dtype))
  return jax.jit(score, in_shardings=(steps.shardings["params"],
                                      sharding.batch_sharding(setup.mesh, 1)))


def variant_programs(name: str, config, mesh, encoder, cands: dict[str, jax.Array],
                     flat: dict[str, jax.Array], forwards: tuple[str, ...],
                     with_step: bool = True) -> list[Program]:
  """The compiled step variant `name` (unless with_step is False) and the forward-only programs
  that use its model."""
  setup = train.build_step(STEP_VARIANTS[name](config), mesh, encoder)
  b, t = config.batch_size, len(config.tasks)
  state = _state(setup, config.seed)
  inputs = {"eval": flat, "score": cands}
  one_pass = one_pass_setup(setup)
  programs = []
  for fwd in forwards:
    args = (jax.tree.map(jnp.copy, state["params"]), inputs[FORWARD_VARIANTS[fwd][1]])
    jitted = _forward_fn(setup, FORWARD_VARIANTS[fwd][1])
    programs.append(profiling.compile_program(fwd, jitted, args, t * b))
    programs[-1].flops = _lowered_flops(_forward_fn(one_pass, FORWARD_VARIANTS[fwd][1]), args)
  if with_step:
    programs.append(profiling.compile_program(name, setup.steps.p_train, (state, cands, None), b,
                                              carry=lambda out, a: (out[0],) + a[1:]))
    programs[-1].flops = _lowered_flops(one_pass.steps.p_train, (state, cands, None))
  return programs


def one_pass_setup(setup: train.StepSetup) -> train.StepSetup:
  """The same setup with the update and the evaluation forward in one pass (no chunk loops): its
  programs' cost_analysis counts the FLOPs the chunked ones do on full rows."""
  return dataclasses.replace(setup, steps=train.recompile(setup.steps, update_chunk_rows=0,
                                                          eval_chunk_rows=0))


def _lowered_flops(jitted, args: tuple) -> float:
  """XLA's FLOPs per device of jitted(*args), from the lowered (not compiled) program."""
  cost = jitted.lower(*args).cost_analysis() or {}
  return float(cost.get("flops", 0.0))


def frozen_weight_grad_flops(config, encoder: bert.EncoderConfig, num_choices: int) -> float:
  """Weight-gradient matmul FLOPs of the frozen layers for one update of b examples:
  2 * (matmul weights of a layer) * tokens per frozen layer (what freezing should save)."""
  start, stop = experiment.frozen_layers(config, encoder.num_layers)
  d, f = encoder.hidden_size, encoder.intermediate_size
  weights = 4 * d * d + 2 * d * f
  tokens = config.batch_size * num_choices * config.max_length
  return 2.0 * weights * tokens * (stop - start)


def benchmark(config: ml_collections.ConfigDict, steps: int = 5, matmul_size: int = 2048,
              variants: tuple[str, ...] = ORDER, log: Callable[[str], None] = print
              ) -> dict[str, Any]:
  """Runs the variants; returns the report (see format_table and the JSON of camtl-bench)."""
  mesh = sharding.make_mesh(config.mesh.model)
  encoder = experiment.encoder_shape(config)
  specs = experiment.task_specs(experiment.config_tasks(config))
  cands_np = synthetic_candidates(specs, config.batch_size, config.max_length, encoder.vocab_size,
                                  config.seed)
  cands = sharding.global_batch(cands_np, mesh, example_axis=1)
  flat = sharding.global_batch(_flat(cands_np), mesh, example_axis=0)
  matmul = profiling.matmul_program(mesh, matmul_size, config.dtype)
  programs: list[Program] = []
  for name in [v for v in ORDER if v in STEP_VARIANTS]:
    forwards = tuple(f for f, (owner, _) in FORWARD_VARIANTS.items()
                     if owner == name and f in variants)
    if name not in variants and not forwards:
      continue
    made = variant_programs(name, config, mesh, encoder, cands, flat, forwards,
                            with_step=name in variants)
    programs += made
    log(f"compiled {', '.join(p.name for p in made)}")
  worker, references = None, []
  if wanted := tuple(v for v in OPTIONAL if v in variants):
    worker, references = reference_programs(ReferenceShape(
        encoder.hidden_size, encoder.num_layers, encoder.num_heads, encoder.intermediate_size,
        encoder.vocab_size, config.max_length, len(specs) * config.batch_size,
        config.batch_size), wanted)
    log(f"started the PyTorch reference process for {', '.join(wanted)}")
  try:
    profiling.time_round_robin(programs + references, matmul, steps)
  finally:
    if worker:
      worker.close()
  d = sharding.data_size(mesh)
  peak = {"n": matmul_size, "dtype": config.dtype, "devices": d, "best_s": min(matmul.step_s),
          "median_s": statistics.median(matmul.step_s),
          "flops_per_s": 2.0 * d * matmul_size ** 3 / min(matmul.step_s)}
  rows = {p.name: _row(p, mesh.size, peak["flops_per_s"]) for p in programs}
  rows.update({p.name: _reference_row(p) for p in references})
  k = cands_np["input_ids"].shape[2]
  return {
      "config": {"tasks": list(config.tasks), "T": len(specs), "b": config.batch_size, "K": k,
                 "L": config.max_length, "model_path": config.model_path,
                 "layers": encoder.num_layers, "hidden": encoder.hidden_size,
                 "dtype": config.dtype, "frozen_layers": list(experiment.frozen_layers(
                     config, encoder.num_layers)), "sampler": config.sampler},
      "backend": jax.default_backend(), "devices": mesh.size,
      "device_kind": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
      "steps": steps, "matmul": peak, "variants": rows,
      "frozen_effect": _frozen_effect(rows, config, encoder, k),
      "targets": _targets(rows),
  }


def _ratio(rows, a: str, b: str, key: str) -> float | None:
  if a in rows and b in rows and rows[b][key]:
    return rows[a][key] / rows[b][key]
  return None


def _frozen_effect(rows, config, encoder, k: int) -> dict[str, Any]:
  if "camtl" not in rows or "camtl_all_trainable" not in rows:
    return {}
  saved = rows["camtl_all_trainable"]["flops_per_step"] - rows["camtl"]["flops_per_step"]
  return {"flops_frozen": rows["camtl"]["flops_per_step"],
          "flops_all_trainable": rows["camtl_all_trainable"]["flops_per_step"],
          "flops_saved": saved,
          "expected_weight_grad_flops": frozen_weight_grad_flops(config, encoder, k),
          "time_ratio": _ratio(rows, "camtl", "camtl_all_trainable", "seconds_per_step")}


def _overhead(rows, name: str, a: str, b: str) -> dict[str, dict]:
  """Time (and FLOPs) of step a over step b, minus 1, against the 10% limit."""
  ratio = _ratio(rows, a, b, "seconds_per_step")
  if ratio is None:
    return {}
  return {name: {"value": ratio - 1, "limit": 0.10, "met": ratio - 1 <= 0.10,
                 "flops": _ratio(rows, a, b, "flops_per_step") - 1}}


def _targets(rows) -> dict[str, Any]:
  """DESIGN 8's targets, each as (value, limit, met) plus context (FLOPs ratios)."""
  out = {}
  # With the configured freezing (both steps), and with nothing frozen (the modules' own cost).
  out.update(_overhead(rows, "conditional_overhead", "camtl", "plain"))
  out.update(_overhead(rows, "conditional_overhead_all_trainable", "camtl_all_trainable",
                       "plain_all_trainable"))
  score = _ratio(rows, "score", "forward_plain", "seconds_per_step")
  if score is not None:
    out["score_vs_plain_forward"] = {
        "value": score, "limit": 1.0, "met": score <= 1.0,
        "flops": _ratio(rows, "score", "forward_plain", "flops_per_step"),
        "vs_camtl_forward": _ratio(rows, "score", "forward_camtl", "seconds_per_step")}
  for ref, ours in (("hf_forward", "forward_plain"), ("hf_train", "plain_all_trainable")):
    if ref in rows and ours in rows:  # per round: the two programs ran side by side
      per_round = [a / b for a, b in zip(rows[ref]["step_seconds"], rows[ours]["step_seconds"])]
      value = _ratio(rows, ref, ours, "seconds_per_step")
      out[f"{ref}_over_ours"] = {"value": value, "limit": 1.0, "met": value >= 1.0,
                                 "per_round_median": statistics.median(per_round),
                                 "per_round_min": min(per_round),
                                 "per_round_max": max(per_round)}
  for name in ("plain", "camtl", "camtl_mtu"):
    if name in rows:
      fraction = rows[name]["peak_fraction"]
      out[f"{name}_peak_fraction"] = {"value": fraction, "limit": 0.5, "met": fraction >= 0.5}
  return out


# ------------------------------------------------------------------------------------------------
# Output


HEADER = (f"{'program':<20}{'s/step':>8}{'median':>8}{'cpu s':>7}{'ex/s':>8}{'compile':>8}"
          f"{'GFLOP':>8}{'GFLOP/s':>8}{'%peak':>6}{'temp MiB':>9}{'args MiB':>9}{'RSS MiB':>8}")


def _format_row(r: dict[str, Any]) -> str:
  mem = r["memory_per_device"]
  mib = lambda x: f"{x / MIB:>9.0f}" if x is not None else f"{'-':>9}"  # noqa: E731
  rss = f"{r['rss_peak_bytes'] / MIB:>8.0f}" if r["rss_peak_bytes"] else f"{'-':>8}"
  return (f"{r['name']:<20}{r['seconds_per_step']:>8.3f}{r['seconds_per_step_median']:>8.3f}"
          f"{r['cpu_seconds_per_step']:>7.2f}{r['examples_per_s']:>8.1f}"
          f"{r['compile_seconds']:>8.1f}{r['flops_per_step'] / 1e9:>8.1f}"
          f"{r['flops_per_s'] / 1e9:>8.1f}{100 * r['peak_fraction']:>6.1f}"
          f"{mib(mem.get('temporaries'))}{mib(mem.get('arguments'))}{rss}")


def format_table(report: dict[str, Any]) -> str:
  c, m = report["config"], report["matmul"]
  lines = [
      f"{c['model_path']} ({c['layers']} layers, d={c['hidden']}, {c['dtype']}), T={c['T']} "
      f"b={c['b']} K={c['K']} L={c['L']}, frozen layers {c['frozen_layers']}; "
      f"{report['backend']} x{report['devices']} ({report['device_kind']}, "
      f"{report['cpu_count']} CPUs); s/step = fastest of {report['steps']} calls",
      f"matmul peak {m['n']}^3 {m['dtype']}: {m['flops_per_s'] / 1e9:.1f} GFLOP/s",
      HEADER]
  lines += [_format_row(report["variants"][name]) for name in ORDER
            if name in report["variants"]]
  lines += [f"{r['name']:<20}{r['seconds_per_step']:>8.3f}{r['seconds_per_step_median']:>8.3f}"
            f"{r['cpu_seconds_per_step']:>7.2f}{r['examples_per_s']:>8.1f}   (PyTorch, HF)"
            for name, r in report["variants"].items() if name in OPTIONAL]
  fe = report["frozen_effect"]
  if fe:
    lines.append(f"frozen layers: step FLOPs {fe['flops_frozen'] / 1e9:.1f} G vs "
                 f"{fe['flops_all_trainable'] / 1e9:.1f} G all trainable: saves "
                 f"{fe['flops_saved'] / 1e9:.1f} G (weight-gradient matmuls of the frozen layers: "
                 f"{fe['expected_weight_grad_flops'] / 1e9:.1f} G)")
  for name, t in report["targets"].items():
    extra = {k: v for k, v in t.items() if k not in ("value", "limit", "met")}
    more = "".join(f", {k} {v:.3f}" for k, v in extra.items() if v is not None)
    lines.append(f"target {name}: {t['value']:.3f} (limit {t['limit']}) "
                 f"{'met' if t['met'] else 'MISSED'}{more}")
  return "\n".join(lines)
