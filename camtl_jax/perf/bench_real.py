"""The MT-U train step on REAL candidate sets (camtl-bench --config bench:glue5): packed scoring
and update against the padded step, timed in turn on the same candidates of the same steps.

  camtl-bench --config bench:glue5 --steps 6 --json /tmp/bench_glue5.json

Variants (each a CA-MTL + MT-U train step of the config, from the same initial state):
  packed        the default: candidates at max_length, scored packed (packing.py) and the update
                packed on the device, in chunks of rows (update.py)
  padded_128    the same candidates scored and updated padded: every one of the T*b + b rows is
                max_length long
  bucketed      the step before packing: candidates padded to the bucket of the step's longest
                (bucket_step), a program per bucket length, the update padded

Step s of every variant sees the candidates of step s; the variants are called in turn, step by
step, so a busy moment of a shared machine hits all of them. Step 0 is the warm-up (compiles).
Reported per variant: seconds per step (median, min, max over the timed steps, compiling calls
left out and counted in compile_seconds), examples/s (b per step), padding_fraction (the share of
the token slots that hold no token, in the scoring forward and the update batch together, counting
the packed update's chunks actually run; each variant's selection is read from an untimed call of
the selection on its own state), programs_compiled over all steps, compile_seconds, the compiled
FLOPs of the step and their fraction of the matmul peak measured in the same run, and XLA's
memory_analysis. XLA counts a while loop's body once: the packed step's FLOPs add, for the
scoring forward and for the update, (mean chunks run - 1) times the FLOPs of one chunk, each
compiled on its own.
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from camtl_jax import experiment, input_pipeline, mtu, optim, packing, sharding, train, update
from camtl_jax.models import bert
from camtl_jax.perf import profiling

VARIANTS = ("packed", "padded_128", "bucketed")


@dataclasses.dataclass
class Variant:
  """One step variant's program, state and what was measured. signatures: the distinct input
  shapes it was called with; jit compiles one program for each."""
  name: str
  step: Callable
  state: Any
  step_s: list[float] = dataclasses.field(default_factory=list)
  compile_s: float = 0.0
  slots: int = 0
  tokens: int = 0
  signatures: set = dataclasses.field(default_factory=set)


def _inputs(run, bucketed_loader, step: int) -> dict[str, Any]:
  """The candidates of `step` for every variant (the same rows), with token counts."""
  cands = run.loader.candidates(step)
  rows = packing.pack_step(cands, run.pack_plan, packing.host_lengths(
      [s.lengths for s in run.train_splits], run.loader.indices(step), jax.process_count()))
  padded = {k: v for k, v in cands.items() if k != "unpack_index"}
  bucketed = bucketed_loader.candidates(step)
  glob = lambda c, axis=1: sharding.global_batch(c, run.mesh, example_axis=axis)  # noqa: E731
  return {"packed": (glob(cands), None if rows is None else glob(rows, 0)),
          "padded_128": (glob(padded), None), "bucketed": (glob(bucketed), None),
          "rows": rows, "cands": cands, "lengths": {"padded_128": padded["input_ids"].shape[-1],
                                                    "bucketed": bucketed["input_ids"].shape[-1]}}


def _selection(ctx) -> Callable:
  """select(params, candidates, step, regression_mse) -> (indices [b], flat candidates), jitted
  once: the step's MT-U selection, read untimed for the update's padding_fraction."""
  def select(params, cands, step, mse):
    flat = mtu.flatten_candidates(cands)
    return train.select(ctx, params, cands, flat, step, jax.random.key(0), mse)[0], flat
  return jax.jit(select)


def _selected(select, state, inputs) -> dict[str, np.ndarray]:
  """The b examples this step's selection picks from the candidates (host arrays [b, ...])."""
  idx, flat = select(state["params"], inputs["padded_128"][0], state["step"],
                     state["regression_mse"])
  return {k: np.asarray(jax.device_get(v))[np.asarray(idx)] for k, v in flat.items()}


def update_chunks(batch: dict[str, np.ndarray], chunk_rows: int) -> int:
  """Chunks of chunk_rows rows the packed update runs for the batch (first-fit decreasing into
  rows of L tokens, as packing.pack_rows does on the device)."""
  lengths = batch["attention_mask"][:, 0].sum(-1)
  rows = len(packing.first_fit_decreasing(lengths, batch["input_ids"].shape[-1]))
  return -(-rows // chunk_rows)


def score_chunks(rows: dict[str, np.ndarray], chunk_rows: int) -> int:
  """Chunks of chunk_rows rows the packed scoring forward runs (up to the last row in use)."""
  used = np.flatnonzero((rows["segment_ids"] > 0).any(axis=1))
  return max(1, -(-(int(used[-1]) + 1 if used.size else 0) // chunk_rows))


def _score_chunk_flops(ctx, state, cands: dict[str, np.ndarray], rows: dict[str, np.ndarray]
                       ) -> float:
  """Compiled FLOPs of one chunk of the packed scoring forward (of the group without choices)."""
  group = mtu.score_groups(ctx.task_info)[0]

  def one_chunk(params, flat, rows):
    example_row = packing.example_rows(flat["unpack_index"], rows["input_ids"].shape[1])
    part, local, _ = packing.chunk_of(rows, flat["unpack_index"], example_row, jnp.int32(0),
                                      ctx.score_chunk_rows)
    return ctx.model.apply({"params": params}, dict(flat, unpack_index=local), packed=part,
                           head_types=group.head_types)
  flat = {k: np.asarray(v) for k, v in mtu.flatten_candidates(cands).items()}
  compiled = jax.jit(one_chunk).lower(state["params"], flat, rows).compile()
  return profiling.cost_report(compiled).get("flops", 0.0)


def _chunk_flops(ctx, labels, state, batch: dict[str, np.ndarray]) -> float:
  """Compiled FLOPs of one chunk of the packed update (update.chunk_loss_and_grads)."""
  trainable, frozen = optim.split_trainable(state["params"], labels)

  def one_chunk(trainable, batch):
    packed = update.pack_update(ctx, batch)
    return update.chunk_loss_and_grads(ctx, trainable, frozen, batch, packed, jnp.int32(0),
                                       jax.random.key(0))
  compiled = jax.jit(one_chunk).lower(trainable, batch).compile()
  return profiling.cost_report(compiled).get("flops", 0.0)


def _call(variant: Variant, args: tuple) -> None:
  """One blocked step; a call with new input shapes compiles, and counts as compile time."""
  signature = tuple(jax.tree.map(lambda x: tuple(x.shape), jax.tree.leaves(args)))
  start = time.perf_counter()
  variant.state, metrics = variant.step(variant.state, *args)
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - start
  if signature in variant.signatures:
    variant.step_s.append(seconds)
  else:
    variant.signatures.add(signature)
    variant.compile_s += seconds


def with_random_encoder(run: experiment.Run, name: str) -> experiment.Run:
  """The run at the shape of encoder `name` (experiment.NAMED_ENCODERS, e.g. 'bert-base') with
  random weights in place of the checkpoint's: the same real candidates (tokenised by the
  checkpoint's tokenizer, whose ids must fit the vocabulary) at another model's cost."""
  shape_config = run.config.copy_and_resolve_references()
  shape_config.model_path = name
  encoder = experiment.encoder_shape(shape_config)
  ids = jnp.zeros((1, 8), jnp.int32)
  pretrained = bert.Encoder(encoder).init(jax.random.key(run.config.seed), ids, ids,
                                          jnp.ones_like(ids))["params"]
  model = experiment.build_model(run.config, encoder, experiment.task_specs(run.tasks))
  return dataclasses.replace(run, model=model, pretrained=pretrained)


def real_data_benchmark(config, steps: int = 6, matmul_size: int = 2048,
                        log: Callable[[str], None] = print, profile_dir: str | None = None,
                        profile_steps: int = 3) -> dict[str, Any]:
  """Runs the VARIANTS on the config's real data (see the module docstring); returns the report.
  profile_dir: also trace profile_steps further packed steps there (jax.profiler) and add the
  report's `profile` (profiling.summarize: time per part of the step, the matmuls' FLOP rate)."""
  # The tokenisation cache (config.cache_dir, else under this folder) is reused by later runs.
  run = experiment.build_run(config, Path(tempfile.gettempdir()) / "camtl_bench_real")
  if config.bench_encoder:
    run = with_random_encoder(run, config.bench_encoder)
  state, packed_steps = train.compile_run(run)  # scored packed (padded when a set overflows)
  ctx, labels = packed_steps.ctx, packed_steps.ctx.labels
  p_packed = packed_steps.p_train
  p_padded = train.recompile(packed_steps, update_chunk_rows=0).p_train
  p_bucketed = train.recompile(packed_steps, update_chunk_rows=0).p_train  # its own programs
  state = jax.device_put(state, packed_steps.shardings)
  bucketed_loader = input_pipeline.CandidateLoader(
      run.train_splits, config.batch_size, config.seed,
      buckets=input_pipeline.default_buckets(config.max_length, config.bucket_step),
      process_index=jax.process_index(), process_count=jax.process_count())
  copy = lambda: jax.tree.map(jnp.copy, state)  # noqa: E731 every step donates its state
  variants = {
      "packed": Variant("packed", p_packed, copy()),
      "padded_128": Variant("padded_128", p_padded, copy()),
      "bucketed": Variant("bucketed", p_bucketed, copy()),
  }
  b, num_tasks = config.batch_size, len(run.tasks)
  select = _selection(ctx)
  chunks, scored = [], []
  for step in range(steps + 1):
    inputs = _inputs(run, bucketed_loader, step)
    real = int(inputs["cands"]["attention_mask"].sum())
    for name, variant in variants.items():
      selected = _selected(select, variant.state, inputs)
      _call(variant, inputs[name])
      if step == 0:
        continue
      length = inputs["lengths"].get(name, config.max_length)
      if name == "packed":
        chunks.append(update_chunks(selected, ctx.update_chunk_rows))
        if inputs["rows"] is not None:
          scored.append(score_chunks(inputs["rows"], ctx.score_chunk_rows))
        scoring = (scored[-1] * ctx.score_chunk_rows * config.max_length
                   if inputs["rows"] is not None else num_tasks * b * length)
        variant.slots += scoring + chunks[-1] * ctx.update_chunk_rows * config.max_length
      else:
        variant.slots += num_tasks * b * length + b * length
      variant.tokens += real + int(selected["attention_mask"].sum())
    log(f"step {step}: " + ", ".join(f"{n} {v.step_s[-1]:.2f} s" if v.step_s and step else
                                     f"{n} compiled" for n, v in variants.items()))
  peak = profiling.matmul_peak(run.mesh, matmul_size, config.dtype)
  inputs = _inputs(run, bucketed_loader, 1)
  compiled = {"packed": p_packed.lower(variants["packed"].state, *inputs["packed"]).compile(),
              "padded_128": p_padded.lower(variants["padded_128"].state,
                                           *inputs["padded_128"]).compile()}
  flops = {name: profiling.cost_report(c).get("flops", 0.0) * run.mesh.size
           for name, c in compiled.items()}
  flops["packed"] += (statistics.mean(chunks) - 1) * run.mesh.size * _chunk_flops(
      ctx, labels, variants["packed"].state, _selected(select, variants["packed"].state, inputs))
  if scored and inputs["rows"] is not None:
    flops["packed"] += (statistics.mean(scored) - 1) * run.mesh.size * _score_chunk_flops(
        ctx, variants["packed"].state, inputs["cands"], inputs["rows"])
  profile = None
  if profile_dir:
    packed = variants["packed"]
    # The candidates are read before tracing, so the profiled wall time is the step's alone.
    profiled_inputs = [_inputs(run, bucketed_loader, steps + 1 + i)["packed"]
                       for i in range(profile_steps)]

    def profiled_call(i):
      packed.state, metrics = packed.step(packed.state, *profiled_inputs[i])
      return metrics
    profile = profiling.profile_calls(profiled_call, profile_steps, profile_dir,
                                      compiled["packed"].as_text(), peak)
  rows = {}
  for name, v in variants.items():
    # None when every call of the variant compiled (a new bucket length at each step).
    median = statistics.median(v.step_s) if v.step_s else None
    flops_per_step = flops.get(name)
    rows[name] = {
        "seconds_per_step": median, "seconds_min": min(v.step_s, default=None),
        "seconds_max": max(v.step_s, default=None),
        "examples_per_s": b / median if median else None,
        "padding_fraction": 1.0 - v.tokens / v.slots,
        "programs_compiled": len(v.signatures),
        "compile_seconds": v.compile_s, "flops_per_step": flops_per_step,
        "peak_fraction": (None if flops_per_step is None or not median
                          else flops_per_step / median / peak),
        "memory_per_device": (profiling.memory_report(compiled[name]) if name in compiled
                              else None)}
  packed_over = [a / c for a, c in zip(variants["packed"].step_s, variants["padded_128"].step_s)]
  return {"config": {"tasks": list(config.tasks), "b": b, "L": config.max_length,
                     "model_path": config.bench_encoder or config.model_path,
                     "dtype": config.dtype,
                     "packed_rows_per_step": run.pack_plan.rows_per_host * jax.process_count(),
                     "update_chunk_rows": ctx.update_chunk_rows,
                     "update_chunks_per_step": statistics.mean(chunks),
                     "score_chunk_rows": ctx.score_chunk_rows,
                     "score_chunks_per_step": statistics.mean(scored) if scored else None,
                     "candidate_rows_per_step": num_tasks * b},
          "backend": jax.default_backend(), "devices": run.mesh.size, "timed_steps": steps,
          "matmul_peak_flops_per_s": peak, "variants": rows,
          "packed_over_padded_128": {"median": statistics.median(packed_over),
                                     "min": min(packed_over), "max": max(packed_over)},
          "profile": profile}


def format_table(report: dict[str, Any]) -> str:
  c = report["config"]
  lines = [f"{c['model_path']} on {len(c['tasks'])} real tasks, b={c['b']} L={c['L']}, "
           f"{report['backend']} x{report['devices']}; packed rows per step "
           f"{c['packed_rows_per_step']} of {c['candidate_rows_per_step']} candidates; "
           f"median of {report['timed_steps']} steps",
           f"{'variant':<12}{'s/step':>8}{'min':>7}{'max':>7}{'ex/s':>7}{'padding':>9}"
           f"{'programs':>9}{'compile s':>10}{'%peak':>7}"]
  num = lambda x, width, digits: (f"{x:>{width}.{digits}f}" if x is not None  # noqa: E731
                                  else f"{'-':>{width}}")
  for name, r in report["variants"].items():
    peak = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
    lines.append(f"{name:<12}{num(r['seconds_per_step'], 8, 3)}{num(r['seconds_min'], 7, 3)}"
                 f"{num(r['seconds_max'], 7, 3)}{num(r['examples_per_s'], 7, 1)}"
                 f"{r['padding_fraction']:>9.3f}{r['programs_compiled']:>9d}"
                 f"{r['compile_seconds']:>10.1f}{num(peak, 7, 1)}")
  ratio = report["packed_over_padded_128"]
  lines.append(f"packed / padded_128 step time: median {ratio['median']:.3f} "
               f"[{ratio['min']:.3f}, {ratio['max']:.3f}]")
  if report.get("profile"):
    lines.append(profiling.format_profile(report["profile"]))
  return "\n".join(lines)
