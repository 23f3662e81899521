"""The compiled train step (score -> select -> update), the eval step, and the run loop.

State is a pytree {"step", "params", "opt_state", "used", "bad_run", "skipped", "regression_mse"}:
  used: bool [total train rows], rows ever selected for an update (data accounting);
  bad_run: consecutive NaN/Inf steps; skipped: NaN/Inf steps skipped in all;
  regression_mse: float32 [T], running MSE of each regression task (MT-U's regression uncertainty).
`train_step` and `eval_step` are module-level pure functions; `train_and_evaluate` jits them once
with explicit shardings (train_step donates the state) and runs the loop.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from camtl_jax import checkpoint, compile_cache, evaluate, experiment, optim, reporting, sampling
from camtl_jax import input_pipeline, mtu, packing, sharding, update, workdir
from camtl_jax.experiment import StepContext
from camtl_jax.models import camtl as camtl_lib

log = logging.getLogger(__name__)
State = dict[str, Any]


def select(ctx: StepContext, params, candidates: dict[str, jax.Array], flat: dict[str, jax.Array],
           step: jax.Array, rng: jax.Array, regression_mse: jax.Array, packed_rows=None
           ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Indices [b] into the T*b flat candidates, per-candidate (H, H_max) for logging, and the
  updated running regression MSE [T].

  MT-Uncertainty (mtu.select) scores the candidates with the model; the baseline samplers
  (sampling.SAMPLERS) do not look at it.
  """
  if ctx.sampler == sampling.MT_UNCERTAINTY:
    return mtu.select(ctx, params, candidates, flat, step, regression_mse, packed_rows)
  task_major = sampling.SAMPLERS[ctx.sampler](rng, step, ctx.task_sizes, ctx.batch_size,
                                              alpha=ctx.temperature_alpha)  # t*b + j
  idx = (task_major % ctx.batch_size) * ctx.num_tasks + task_major // ctx.batch_size
  zeros = jnp.zeros(flat["task_id"].shape, jnp.float32)
  return idx, zeros, jnp.ones_like(zeros), regression_mse


def train_step(ctx: StepContext, state: State, candidates: dict[str, jax.Array],
               packed_rows: dict[str, jax.Array] | None = None
               ) -> tuple[State, dict[str, jax.Array]]:
  """One MT-U step on candidates [T, b, ...] -> (new state, metric sums for this step).
  packed_rows: the candidates packed for the scoring forward (packing.pack_step, which adds
  candidates['unpack_index']); None: scored padded."""
  step = state["step"]
  rng = jax.random.fold_in(jax.random.key(ctx.seed), step)
  select_rng, dropout_rng = jax.random.split(rng)
  flat = sharding.constrain(mtu.flatten_candidates(candidates), ctx.example_sharding)
  idx, entropy, max_entropy, regression_mse = select(ctx, state["params"], candidates, flat, step,
                                                     select_rng, state["regression_mse"],
                                                     packed_rows)
  flat.pop("unpack_index", None)
  batch = sharding.constrain(jax.tree.map(lambda x: jnp.take(x, idx, axis=0), flat),
                            ctx.example_sharding)

  trainable, frozen = optim.split_trainable(state["params"], ctx.labels)
  loss, grads, per_example = update.loss_and_grads(ctx, trainable, frozen, batch, dropout_rng)
  # The NaN/Inf guard (update.guarded_apply) keeps the old state of a bad step, which is counted.
  # After max_bad_steps consecutive bad steps the state halts on the device at once (no step
  # updates it any more, even a finite one) until the host stops at its next log step.
  halted = state["bad_run"] >= ctx.max_bad_steps
  params, opt_state, ok, grad_norm = update.guarded_apply(
      ctx.tx, ctx.labels, state["params"], state["opt_state"], trainable, frozen, grads, loss,
      halted)
  new_state = {
      "step": step + 1,
      "params": params,
      "opt_state": opt_state,
      "used": jnp.where(ok, sampling.update_used(state["used"], batch["uid"], batch["weight"]),
                        state["used"]),
      "bad_run": jnp.where(ok, 0, state["bad_run"] + 1),
      "skipped": state["skipped"] + (~ok).astype(jnp.int32),
      "regression_mse": regression_mse,
  }
  return new_state, _step_metrics(ctx, batch, per_example, loss, grad_norm, ok, flat, entropy,
                                  max_entropy)


def _step_metrics(ctx, batch, per_example, loss, grad_norm, ok, flat, entropy, max_entropy):
  """Sums and counts only; Reporter divides at log time."""
  seg = functools.partial(jax.ops.segment_sum, num_segments=ctx.num_tasks)
  u = entropy / jnp.maximum(max_entropy, 1e-12)
  _, task_loss, task_count = sampling.per_task_mean_loss(per_example, batch["task_id"],
                                                         batch["weight"], ctx.num_tasks)
  return {
      "steps": jnp.ones((), jnp.float32),
      "loss": jnp.where(ok, loss, 0.0),
      "grad_norm": jnp.where(ok, grad_norm, 0.0),
      "skipped": (~ok).astype(jnp.float32),
      "task_loss": task_loss,
      "task_count": task_count,
      "u_sum": seg(u, flat["task_id"]),
      "u_count": seg(jnp.ones_like(u), flat["task_id"]),
  }


def eval_step(ctx: StepContext, params, batch: dict[str, jax.Array],
              head_types: tuple[str, ...] | None = None) -> dict[str, jax.Array]:
  """Deterministic forward: the model's per-example outputs [B, ...] (logits per head type,
  loss); head_types: only these heads (camtl.choice_layout), None: all. Run in chunks of
  ctx.eval_chunk_rows examples (evaluate.deterministic_forward)."""
  return evaluate.deterministic_forward(ctx.model, params, batch, ctx.eval_chunk_rows, head_types)


# ------------------------------------------------------------------------------------------------
# State


def _example_batch(run: experiment.Run) -> dict[str, np.ndarray]:
  cands = run.loader.candidates(0)
  return {k: v[:, :1].reshape((-1,) + v.shape[2:]) for k, v in cands.items()}


def init_state(run: experiment.Run) -> tuple[State, Any, Any]:
  """Fresh state (pretrained encoder + initialised new parameters), its optimizer and labels."""
  params = camtl_lib.init_params(run.model, jax.random.key(run.config.seed), run.pretrained,
                                 _example_batch(run))
  tx, labels = experiment.make_optimizer(run.config, params, run.model.encoder.num_layers)
  return new_state(params, tx, run.loader.total_examples, len(run.tasks)), tx, labels


def new_state(params, tx, total_rows: int, num_tasks: int) -> State:
  """The state around fresh params (also built from shapes alone, under eval_shape: build_step)."""
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "opt_state": tx.init(params),
      "used": jnp.zeros((total_rows,), jnp.bool_),
      "bad_run": jnp.zeros((), jnp.int32),
      "skipped": jnp.zeros((), jnp.int32),
      # Standardised targets: the prior's mean squared error is 1.
      "regression_mse": jnp.ones((num_tasks,), jnp.float32),
  }


def state_shardings(mesh: jax.sharding.Mesh, fsdp: bool, state: State) -> Any:
  """Parameters and their Adam moments replicated (or FSDP over 'data'); counters replicated."""
  rep = sharding.replicated(mesh)
  return {
      "step": rep, "used": rep, "bad_run": rep, "skipped": rep, "regression_mse": rep,
      "params": sharding.param_shardings(mesh, state["params"], fsdp),
      "opt_state": sharding.param_shardings(mesh, state["opt_state"], fsdp),
  }


# ------------------------------------------------------------------------------------------------
# The one compile path: training, evaluation, AOT, the benchmarks and the tests all jit here.


@dataclasses.dataclass(frozen=True)
class Steps:
  """train_step and eval_step jitted once each, with explicit shardings, and what they close over.

  p_train(state, candidates, rows) -> (state, metrics): candidates [T, b, ...] split over 'data'
    on axis 1; rows: the candidates packed for the scoring forward (packing.pack_step, split over
    'data' on axis 0), or None to score them padded. jit keeps one program for each case (a packed
    run compiles the padded one only if a candidate set ever overflows its packed rows). The
    state is donated.
  p_eval(params, batch, head_types) -> outputs [B, ...]: head_types static (one program per head
    group, as evaluation packs its batches at max_length by default; padded: one per group and
    bucket). Both lower from abstract shapes too (p_train.lower(...), build_step).
  """
  ctx: StepContext             # example_sharding set: the steps' own context
  mesh: jax.sharding.Mesh
  shardings: Any               # of the state (state_shardings)
  p_train: Callable
  p_eval: Callable


def compile_steps(ctx: StepContext, mesh: jax.sharding.Mesh, shardings: Any) -> Steps:
  """The Steps of a context over a mesh, for a state with these shardings."""
  candidates = sharding.batch_sharding(mesh, example_axis=1)
  examples = sharding.batch_sharding(mesh, example_axis=0)
  rep = sharding.replicated(mesh)
  ctx = dataclasses.replace(ctx, example_sharding=examples)
  p_train = jax.jit(functools.partial(train_step, ctx),
                    in_shardings=(shardings, candidates, examples),
                    out_shardings=(shardings, rep), donate_argnums=0)
  p_eval = jax.jit(functools.partial(eval_step, ctx), in_shardings=(shardings["params"], examples),
                   out_shardings=examples, static_argnums=2)
  return Steps(ctx, mesh, shardings, p_train, p_eval)


def recompile(steps: Steps, **changes) -> Steps:
  """The same steps with StepContext fields changed (e.g. update_chunk_rows=0): a new jit."""
  return compile_steps(dataclasses.replace(steps.ctx, **changes), steps.mesh, steps.shardings)


def compile_run(run: experiment.Run, **changes) -> tuple[State, Steps]:
  """A run's fresh state (init_state; not yet placed: jax.device_put(state, steps.shardings)) and
  its Steps; changes: StepContext fields to override (benchmarks and tests)."""
  state, tx, labels = init_state(run)
  shardings = state_shardings(run.mesh, run.config.mesh.fsdp, state)
  ctx = dataclasses.replace(make_context(run, tx, labels), **changes)
  return state, compile_steps(ctx, run.mesh, shardings)


# The data-usage mask's rows per task (bool, replicated) when a step is built without data.
NOMINAL_ROWS_PER_TASK = 100_000


@dataclasses.dataclass(frozen=True)
class StepSetup:
  """A config's Steps built from shapes alone (no checkpoint, no data).

  init(rng) -> State is the state init_state builds, but with a random encoder (jit it with
  out_shardings=steps.shardings); abstract is its jax.eval_shape; candidates the abstract global
  candidate set [T, b, ...] at the requested length.
  """
  config: ml_collections.ConfigDict
  model: camtl_lib.CAMTL
  mesh: jax.sharding.Mesh
  init: Callable[[jax.Array], State]
  abstract: State
  candidates: dict[str, jax.ShapeDtypeStruct]
  steps: Steps


def candidate_shapes(specs: tuple, batch_size: int, length: int
                     ) -> dict[str, jax.ShapeDtypeStruct]:
  """A global candidate set of docs/design/batch_format.md: task_id [T, b], input_ids
  [T, b, K, L], ... (specs: models.heads.TaskSpec per task)."""
  one = camtl_lib.example_batch(specs, 1, length)
  return {k: jax.ShapeDtypeStruct((len(specs), batch_size) + v.shape[1:], v.dtype)
          for k, v in one.items()}


def build_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               encoder: Any = None, length: int | None = None,
               rows_per_task: int = NOMINAL_ROWS_PER_TASK, **changes) -> StepSetup:
  """Everything the compiled train step needs, from the config's shapes: the encoder shape from a
  named shape or a model directory's config (experiment.encoder_shape) unless `encoder`
  (bert.EncoderConfig) is given, the task specs from the registry's records, an abstract state.

  length: the candidates' bucket length L (default config.max_length). rows_per_task sizes the
  data-usage mask and the baseline samplers' task sizes. changes: StepContext fields to override.
  """
  encoder = encoder or experiment.encoder_shape(config)
  experiment.validate_config(config, encoder.num_layers, mesh)
  specs = experiment.task_specs(experiment.config_tasks(config))
  model = experiment.build_model(config, encoder, specs)
  example = camtl_lib.example_batch(specs, 1, min(8, config.max_length))
  params = jax.eval_shape(model.init, jax.random.key(0), example)["params"]
  tx, labels = experiment.make_optimizer(config, params, encoder.num_layers)
  total_rows = rows_per_task * len(specs)

  def init(rng: jax.Array) -> State:
    return new_state(model.init(rng, example)["params"], tx, total_rows, len(specs))
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = state_shardings(mesh, config.mesh.fsdp, abstract)
  ctx = dataclasses.replace(experiment.make_context(config, model, tx, labels,
                                                    (rows_per_task,) * len(specs)), **changes)
  candidates = candidate_shapes(specs, config.batch_size, length or config.max_length)
  return StepSetup(config, model, mesh, init, abstract, candidates,
                   compile_steps(ctx, mesh, shardings))


def lower_train_step(setup: StepSetup):
  """jax.stages.Lowered of the sharded train step on the abstract state and candidates (scored
  padded)."""
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       setup.abstract, setup.steps.shardings)
  return setup.steps.p_train.lower(state, setup.candidates, None)


def make_context(run: experiment.Run, tx, labels) -> StepContext:
  """The StepContext of a run (its config, model and train split sizes)."""
  return experiment.make_context(run.config, run.model, tx, labels,
                                 [s.num_rows for s in run.train_splits])


def run_fingerprint(run: experiment.Run) -> dict:
  """What must not change between runs sharing the workdir."""
  return experiment.fingerprint(run.config, run.model, [s.num_rows for s in run.train_splits])


def restore_or_init(run: experiment.Run, manager, fresh: State, shardings: Any
                    ) -> tuple[State, dict]:
  """The newest readable checkpoint of the workdir, or the fresh state (compile_run's), on the
  devices with these shardings. Returns (state, meta)."""
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          fresh, shardings)
  restored = checkpoint.restore_latest(manager, abstract, run_fingerprint(run), run.workdir)
  if restored is None:
    return jax.device_put(fresh, shardings), {}
  return restored


# ------------------------------------------------------------------------------------------------
# The loop


class TrainingStopped(RuntimeError):
  """Too many consecutive NaN/Inf steps; a checkpoint was written first."""


def _learning_rate(config, step: int) -> float:
  schedule = optim.learning_rate_schedule(config.learning_rate, config.total_steps,
                                          config.warmup_fraction)
  return float(schedule(step))


class Interrupted(Exception):
  """SIGTERM / Ctrl-C: the current step was saved; rerunning the same command resumes."""

  def __init__(self, step: int, workdir: Path, exit_status: int = 143):
    super().__init__(f"stopped at step {step}; rerun the same command to resume from {workdir}")
    self.step = step
    self.exit_status = exit_status  # workdir.StopSignals.exit_status: 130 SIGINT, 143 SIGTERM


def train_and_evaluate(config: ml_collections.ConfigDict, workdir_path: str) -> dict:
  """Trains (resuming from the workdir if it holds a checkpoint), evaluates, writes results.

  Returns {"results": per-task dev metrics of the selected checkpoint, "score", "aggregates",
  "step", "data_used"}. Raises Interrupted after a SIGTERM / Ctrl-C (the step is saved).
  """
  path = Path(workdir_path).expanduser().resolve()
  workdir.refuse_other_runs(config, path)
  created = not path.exists()
  path.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  lock = workdir.WorkdirLock(path) if is_main else None
  if lock:
    lock.acquire()
  try:
    return _train(config, path, is_main)
  except BaseException:
    if created and is_main:  # e.g. refused for missing data: leave no empty workdir behind
      workdir.remove_if_unused(path)
    raise
  finally:
    if lock:
      lock.release()


def _train(config, path: Path, is_main: bool) -> dict:
  with input_pipeline.deferred_cache_writes() as token_caches:
    run = experiment.build_run(config, path)
  # A data change that shows only in the row counts (e.g. doc_stride) is refused before the
  # run's token caches are written into the workdir.
  workdir.refuse_other_runs(config, path, [s.num_rows for s in run.train_splits])
  input_pipeline.write_caches(token_caches)
  log.info("%s", experiment.format_parameter_report(experiment.parameter_report(
      run.model, config.freeze_embeddings)))
  manager = checkpoint.make_manager(path, config.keep_checkpoints, config.checkpoint_every,
                                    config.async_checkpoint)
  fresh, steps = compile_run(run)
  state, meta = restore_or_init(run, manager, fresh, steps.shardings)  # refuses another run's dir
  if int(state["bad_run"]) >= config.max_bad_steps:
    raise TrainingStopped(f"the checkpoint in {path} stopped after {int(state['bad_run'])} "
                          "consecutive NaN/Inf steps; lower the learning rate or check the data, "
                          "and use a new --workdir")
  if is_main:  # config.json and tasks.json, once the workdir is known to belong to this run
    workdir.write_config(run.workdir, run.config)
    workdir.write_task_records(run.workdir, run.tasks,
                               [(s.target_mean, s.target_std) for s in run.train_splits])
  evaluator = functools.partial(
      evaluate.evaluate, steps.p_eval, tasks=run.tasks, dev_splits=run.dev_splits,
      setup=evaluate.eval_setup(config, run.model.tasks, run.mesh),
      max_examples=config.max_eval_examples)
  meta = {"fingerprint": run_fingerprint(run), "trajectory": workdir.trajectory(config),
          "evals": meta.get("evals", {})}
  reporter = reporting.Reporter(path, [t.name for t in run.tasks], config.total_steps,
                                int(state["step"]), config.batch_size, enabled=is_main)
  signals = workdir.StopSignals(enabled=jax.process_count() == 1)
  try:
    state = _loop(run, manager, state, meta, steps.p_train, evaluator, reporter, signals)
  finally:
    signals.restore()
    manager.wait_until_finished()
    reporter.close()
  return _finish(run, state, meta, evaluator)


def _loop(run, manager, state, meta, p_train, evaluator, reporter, signals) -> State:
  """The steps from the state's step to config.total_steps: train, log, evaluate, save."""
  config = run.config
  pending, overflows = [], []
  for step in range(int(state["step"]), config.total_steps):
    candidates = run.loader.candidates(step)
    camtl_lib.validate_candidates(candidates, run.model.tasks)  # jitted code cannot raise
    rows = _packed_rows(run, candidates, step, overflows)
    candidates = sharding.global_batch(candidates, run.mesh, example_axis=1)
    rows = None if rows is None else sharding.global_batch(rows, run.mesh, example_axis=0)
    state, metrics = _timed_step(reporter, p_train, state, candidates, rows, first=not pending and
                                 step == reporter.start_step)
    pending.append(metrics)
    done = step + 1
    reporter.advance(done, metrics)
    if done % config.log_every == 0 or done == config.total_steps:
      reporter.log_train(done, reporting.reduce_metrics(pending), _learning_rate(config, step))
      pending = []
      _check_bad_steps(run, manager, state, meta, done)
    score = None
    if done % config.eval_every == 0 or done == config.total_steps:
      results, score = reporter.timed_eval(done, lambda: evaluator(state["params"]))
      meta["evals"][str(done)] = {"results": results, "score": score}
    stop = signals.requested or manager.reached_preemption(done)
    checkpoint.save(manager, done, state, meta, score, force=score is not None or stop)
    if stop:
      manager.wait_until_finished()
      raise Interrupted(done, run.workdir, signals.exit_status)
  return state


def _packed_rows(run, candidates: dict[str, np.ndarray], step: int, overflows: list[int]
                 ) -> dict[str, np.ndarray] | None:
  """This host's candidates packed for the scoring forward (packing.pack_step, which adds
  candidates['unpack_index']); None: packing is off, or the candidate set needs more rows than
  planned (it is scored padded, a second program; `overflows` collects those steps and the
  first is said)."""
  if not run.pack_plan.enabled:
    return None
  rows = packing.pack_step(candidates, run.pack_plan, packing.host_lengths(
      [s.lengths for s in run.train_splits], run.loader.indices(step), jax.process_count()))
  if rows is None and not overflows:
    log.warning("a candidate set needs more than the %d packed rows per host planned: it and "
                "any such later one are scored padded (compiling that program once)",
                run.pack_plan.rows_per_host)
  if rows is None:
    overflows.append(step)
  return rows


def _timed_step(reporter, p_train, state, candidates, rows, first: bool):
  """p_train(state, candidates, rows); the first call of a run compiles, and says so."""
  if not first:
    return p_train(state, candidates, rows)
  log.info("compiling the train step ...")
  start, hits = time.perf_counter(), compile_cache.hits()
  out = p_train(state, candidates, rows)  # returns once compiled and dispatched
  log.info("compiled the train step in %.1f s%s", time.perf_counter() - start,
           compile_cache.hit_note(hits))
  return out


def _check_bad_steps(run, manager, state, meta, step) -> None:
  bad_run, skipped = int(state["bad_run"]), int(state["skipped"])
  if skipped:
    log.warning("%d step(s) skipped so far for a NaN/Inf loss or gradient", skipped)
  if bad_run >= run.config.max_bad_steps:
    checkpoint.save(manager, step, state, meta, force=True)
    manager.wait_until_finished()
    raise TrainingStopped(f"{bad_run} consecutive steps had a NaN/Inf loss or gradient "
                          f"(step {step}); stopped with a checkpoint in {run.workdir}. Lower the "
                          "learning rate or check the data.")


def best_evaluated_step(evals: dict[str, dict]) -> str:
  """The step (a key of meta['evals']) with the best dev score: the later step among equal
  scores, NaN and inf last, as checkpoint.ranked_steps picks the checkpoint that predict and
  export load."""
  return max(evals, key=lambda s: (checkpoint.score_rank(evals[s]["score"]), int(s)))


def _finish(run: experiment.Run, state: State, meta: dict, evaluator: Callable) -> dict:
  """Selects the best evaluated step, writes results.json/.txt and the sampling plot."""
  evals = meta["evals"]
  best = best_evaluated_step(evals) if evals else str(int(state["step"]))
  chosen = evals.get(best) or dict(zip(("results", "score"), evaluator(state["params"])))
  used = sampling.data_used_fractions(np.asarray(jax.device_get(state["used"])),
                                      run.loader.num_examples, [t.name for t in run.tasks])
  summary = {"step": int(best), "score": chosen["score"], "results": chosen["results"],
             "aggregates": evaluate.aggregates(run.tasks, chosen["results"]),
             "data_used": used}
  if jax.process_index() == 0:
    reporting.write_results(run.workdir, summary)
  return summary
