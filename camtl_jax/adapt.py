"""Adapting a trained CA-MTL model to a new task: `camtl-adapt`.

  camtl-adapt --workdir DIR --new-task superglue/cb --data-dir DATA --fraction 0.1 --out NEW_DIR
  camtl-adapt --workdir DIR --new-task superglue/cb --data-dir DATA \\
      --zero-shot-from superglue/rte --label-map entailment=entailment,not_entailment=contradiction
  camtl-adapt --workdir DIR --new-task superglue/cb --data-dir DATA --out CURVE_DIR \\
      --fractions 0.01,0.1,1.0 --seeds 0,1,2

Adding a task adds one row to the task embedding and one row to the stacked head of the task's type
(a new head type gets a fresh head); every other parameter, conditional modules included, is
shared, so the new task reuses the trained conditioning. The new embedding row starts from the mean
of the existing rows, or from a named related task's row (--init-from); the new head row is
initialised as in training (normal(0.02) kernel, zero bias).

Fine-tuning uses a fraction of the new task's training examples, a deterministic subset drawn by
--seed, for --steps steps of --batch-size examples (epochs over the subset as needed):
  --train new  only the new task's embedding row and head row are updated; every shared parameter
               and every other task's rows stay bit-identical (the step keeps the old value of every
               frozen leaf and of every row outside the update mask), so the old tasks' predictions
               do not change at all. Default learning rate 1e-2: this is a linear probe of the
               pooled features (plus one embedding row), whose scale is small (|pooled| ~ 0.05 on
               MiniLM), so the encoder-fine-tuning rates (1e-4, 1e-3) barely move the logits in a
               few hundred steps (measured on the demo, 80 steps: 0.67 at 1e-3, 0.95 at 1e-2).
  --train all  the trained model's own frozen/trainable policy (embeddings and the lower layers
               frozen, DESIGN 4.1), trained on the new task only; old tasks may drift.
               Default learning rate: the training config's.

Zero-shot: the new task's dev set is read through an existing classification task's embedding and
head, with its predicted labels mapped to the new task's (--label-map source=target,...).

Outputs: a single adaptation writes a workdir (checkpoints/, config.json, tasks.json, adapt.json)
that camtl-predict and camtl-export read like a trained one; a learning curve (--fractions,
--seeds) writes learning_curve.csv, learning_curve.md and learning_curve.png. Classification
results carry the majority-class score (the best constant prediction on the dev set) as chance.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from camtl_jax import checkpoint, evaluate, experiment, input_pipeline, optim, update, workdir
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.models import heads
from camtl_jax.tasks import base, metrics, registry
from camtl_jax.tasks.base import Example, Task

log = logging.getLogger(__name__)

TRAIN_MODES = ("new", "all")
DEFAULT_LR = {"new": 1e-2, "all": None}  # None: the training config's learning rate
ADAPT_FILE = "adapt.json"


# ------------------------------------------------------------------------------------------------
# Adding a task row


def stacked(path: tuple[str, ...]) -> bool:
  """Whether the parameter at `path` (of flax's flatten_dict) is stacked over tasks: the task
  embedding [T, d] and every head [T_type, ...], the leaves that adding a task extends."""
  return path == ("task_embedding", "embedding") or path[0] == "heads"


def extend_params(trained: workdir.TrainedModel, new_task: Task, init_from: str | None = None,
                  seed: int = 0) -> tuple[camtl_lib.CAMTL, Any]:
  """(model with the new task appended, its params): the old params, the new embedding row (mean of
  the old rows, or `init_from`'s row) and a freshly initialised head row."""
  specs = trained.specs + (camtl_lib.TaskSpec.from_task(new_task),)
  model = camtl_lib.CAMTL(trained.model.encoder, trained.model.config, specs)
  fresh = camtl_lib.init_params(model, jax.random.key(seed), trained.params["encoder"],
                                camtl_lib.example_batch(specs, 1, 8))
  old = traverse_util.flatten_dict(trained.params)
  out = {}
  for path, value in traverse_util.flatten_dict(fresh).items():
    value = np.asarray(value)
    if path not in old:  # a head type the model did not have
      out[path] = value
    elif old[path].shape == value.shape:
      out[path] = np.asarray(old[path])
    elif stacked(path) and value.ndim == old[path].ndim:
      value = value.copy()
      value[:old[path].shape[0]] = 0  # old rows: their values, zeros in columns they never had
      value[tuple(slice(0, n) for n in old[path].shape)] = old[path]
      out[path] = value
    else:
      raise ValueError(f"cannot extend parameter {'/'.join(path)}: {old[path].shape} -> "
                       f"{value.shape}")
  if model.config.conditioned:
    emb = out[("task_embedding", "embedding")]
    rows = np.asarray(trained.params["task_embedding"]["embedding"])
    emb[-1] = rows[trained.task_id(init_from)] if init_from else rows.mean(0)
  return model, traverse_util.unflatten_dict(out)


def new_row_mask(model: camtl_lib.CAMTL, params: Any, task_id: int) -> Any:
  """bool tree, broadcastable to each leaf: True where '--train new' may change it (the new task's
  embedding row and head rows), False everywhere else."""
  layout = heads.HeadLayout.from_tasks(model.tasks)
  head_type, slot = model.tasks[task_id].type, int(layout.slot[task_id])

  def mask(kp, x):
    path = optim.path_of(kp)
    row = {("task_embedding", "embedding"): task_id}.get(path)
    if path[:2] == ("heads", head_type):
      row = slot
    if row is None:
      return np.zeros((1,) * x.ndim, bool)
    return (np.arange(x.shape[0]) == row).reshape((-1,) + (1,) * (x.ndim - 1))
  return jax.tree_util.tree_map_with_path(mask, params)


def train_labels(trained: workdir.TrainedModel, params: Any, mode: str, row_mask: Any) -> Any:
  """'trainable' / 'frozen' per leaf: the leaves of the row mask ('new'), or the training policy
  ('all')."""
  if mode == "new":
    return jax.tree.map(lambda m: optim.TRAINABLE if m.any() else optim.FROZEN, row_mask)
  c = trained.config
  return optim.freeze_labels(params, experiment.frozen_layers(c, trained.model.encoder.num_layers),
                             c.get("freeze_embeddings", True))


# ------------------------------------------------------------------------------------------------
# The step


def step_context(trained: workdir.TrainedModel, model: camtl_lib.CAMTL,
                 tx: optax.GradientTransformation, labels: Any) -> experiment.StepContext:
  """The StepContext adaptation's step closes over: the training config's, for the extended
  model, with the update padded in one pass and the batch's loss its mean over the examples
  (one task: the training rule's mean of task means, without the regression loss scale)."""
  ctx = experiment.make_context(trained.config, model, tx, labels, ())
  return dataclasses.replace(ctx, grad_accum_steps=1, update_chunk_rows=0,
                             loss_weighting="task_mean", task_loss_scale=None)


def adapt_step(ctx: experiment.StepContext, row_mask: Any | None, head_types: tuple[str, ...],
               params: Any, opt_state: Any, bad_run: jax.Array, batch: Mapping[str, jax.Array],
               rng: jax.Array) -> tuple[Any, Any, jax.Array, jax.Array]:
  """One update on a batch [B, K, L] of the new task (K and head_types from
  camtl.choice_layout) -> (params, opt_state, bad_run, loss): the training step's loss and
  gradient (update.loss_and_grads) and its NaN/Inf guard (update.guarded_apply; bad_run counts
  the consecutive skipped steps, and at ctx.max_bad_steps nothing moves any more).

  Frozen leaves, and (with a row mask) every row outside it, are taken from the old params, so they
  stay bit-identical (not merely unchanged up to p + 0).
  """
  trainable, frozen = optim.split_trainable(params, ctx.labels)
  loss, grads, _ = update.loss_and_grads(ctx, trainable, frozen, batch, rng, head_types)
  updated, opt_state, ok, _ = update.guarded_apply(ctx.tx, ctx.labels, params, opt_state,
                                                   trainable, frozen, grads, loss,
                                                   bad_run >= ctx.max_bad_steps)
  if row_mask is not None:
    updated = jax.tree.map(lambda new, old, m: jnp.where(m, new, old), updated, params, row_mask)
  return updated, opt_state, jnp.where(ok, 0, bad_run + 1), loss


# ------------------------------------------------------------------------------------------------
# Data


def subset(examples: Sequence[Example], fraction: float, seed: int) -> list[Example]:
  """A deterministic random subset: round(fraction * N) examples (at least 1), chosen by seed, in
  their original order."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}")
  n = max(1, round(fraction * len(examples)))
  keep = np.sort(np.random.default_rng([seed, 7919]).permutation(len(examples))[:n])
  return [examples[i] for i in keep]


def majority_score(task: Task, split) -> dict[str, float] | None:
  """Metrics of the best constant prediction (the dev set's most frequent label); classification
  only."""
  if task.type != base.CLASSIFICATION:
    return None
  refs = evaluate.references(split)
  label = collections.Counter(refs).most_common(1)[0][0]
  return metrics.compute_metrics(task, [label] * len(refs), refs,
                                 [ex.example_id for ex in split.examples])


# ------------------------------------------------------------------------------------------------
# The adapter: a trained model plus one new task, compiled once for any number of runs


@dataclasses.dataclass
class RunResult:
  fraction: float
  seed: int
  num_train: int
  steps: int
  results: dict[str, float]   # the new task's dev metrics
  score: float                # its main score
  params: Any = None
  stats: tuple[float, float] = (0.0, 1.0)  # regression: the subset's target mean / std
  seconds: float = 0.0


def _check_request(trained: workdir.TrainedModel, new_task: Task, mode: str,
                   init_from: str | None, steps: int) -> None:
  if mode not in TRAIN_MODES:
    raise ValueError(f"--train must be one of {TRAIN_MODES}, got {mode!r}")
  if new_task.name in [t.name for t in trained.tasks]:
    raise ValueError(f"the model in {trained.workdir} already has task {new_task.name!r}; "
                     "nothing to add")
  if init_from is not None:
    trained.task_id(init_from)  # a clear error for an unknown task
  if steps < 1:
    raise ValueError(f"--steps must be >= 1, got {steps}")


class Adapter:
  """Extends a trained model by `new_task` and fine-tunes it (module docstring)."""

  def __init__(self, trained: workdir.TrainedModel, new_task: Task, data_dir: str,
               mode: str = "new", init_from: str | None = None, steps: int = 200,
               batch_size: int | None = None, learning_rate: float | None = None, seed: int = 0,
               max_eval_examples: int = 0, cache_dir: str | None = None):
    _check_request(trained, new_task, mode, init_from, steps)
    self.base, self.task, self.data_dir, self.mode = trained, new_task, data_dir, mode
    self.steps = steps
    self.batch_size = batch_size or trained.config.batch_size
    self.cache_dir = cache_dir
    self.max_eval_examples = max_eval_examples
    self.model, self.params = extend_params(trained, new_task, init_from, seed)
    self.task_id = len(trained.tasks)
    self.row_mask = new_row_mask(self.model, self.params, self.task_id) if mode == "new" else None
    self.labels = train_labels(trained, self.params, mode, self.row_mask)
    lr = learning_rate or DEFAULT_LR[mode] or trained.config.learning_rate
    self.learning_rate = lr
    # The training optimizer (clipping, schedule, decay mask, new-parameter lr multiplier) with
    # the adaptation's labels, learning rate and length.
    self.tx, _ = experiment.make_optimizer(trained.config, self.params,
                                           trained.model.encoder.num_layers, labels=self.labels,
                                           learning_rate=lr, total_steps=steps)
    self.num_choices, head_types = camtl_lib.choice_layout(self.model.tasks, new_task.type)
    self.ctx = step_context(trained, self.model, self.tx, self.labels)
    self.step_fn = jax.jit(functools.partial(adapt_step, self.ctx, self.row_mask, head_types),
                           donate_argnums=(0, 1))
    source = experiment.data_source(trained.config, new_task)  # a spec task: its own files
    self.train_examples = registry.load_split(new_task, data_dir, "train", source=source)
    self.dev_examples = {s: registry.load_split(new_task, data_dir, s, source=source)
                         for s in experiment.dev_split_names(new_task)}
    self.extended = self.trained_model(self.params)  # one jitted forward for every evaluation

  def trained_model(self, params: Any, stats: tuple[float, float] = (0.0, 1.0)
                    ) -> workdir.TrainedModel:
    """The extended model as a TrainedModel (for prediction / evaluation / saving)."""
    b = self.base
    config = ml_collections.ConfigDict(b.config.to_dict())
    config.tasks = tuple(b.config.tasks) + (self.task.name,)
    return workdir.TrainedModel(b.workdir, config, b.tasks + [self.task], b.stats + [stats],
                                self.model, params, b.tokenizer, self.steps, {})

  def encode(self, examples, split: str, stats=None) -> input_pipeline.EncodedSplit:
    return experiment.encode_split(self.base.config, self.task, examples, self.base.tokenizer,
                                   self.cache_dir, split, stats)

  def dev_splits(self, stats=None) -> list[input_pipeline.EncodedSplit]:
    splits = [self.encode(ex, s, stats if self.task.type == base.REGRESSION else None)
              for s, ex in self.dev_examples.items()]
    return [evaluate.capped(s, self.max_eval_examples) for s in splits]

  def evaluate(self, params: Any, stats=(0.0, 1.0)) -> tuple[dict[str, float], float]:
    """The new task's dev metrics (all its dev splits) and main score."""
    results = {}
    for split in self.dev_splits(stats):
      results.update(self.extended.evaluate_split(split, self.task_id, params)[0])
    return results, metrics.main_score(self.task, results)

  def run(self, fraction: float, seed: int) -> RunResult:
    """Fine-tunes a copy of the extended params on a fraction of the train split."""
    start = time.perf_counter()
    examples = subset(self.train_examples, fraction, seed)
    split = self.encode(examples, "train")
    c = self.base.config
    loader = input_pipeline.CandidateLoader(
        [split], self.batch_size, seed, num_choices=self.num_choices,
        buckets=input_pipeline.default_buckets(c.max_length, c.bucket_step))
    params = jax.tree.map(jnp.array, self.params)  # a copy: the step donates its input
    opt_state = self.tx.init(params)
    key = jax.random.key(seed)
    loss, bad_run = jnp.nan, jnp.zeros((), jnp.int32)
    for step in range(self.steps):
      batch = {k: v[0] for k, v in loader.candidates(step).items()}
      batch["task_id"] = np.full_like(batch["task_id"], self.task_id)
      params, opt_state, bad_run, loss = self.step_fn(params, opt_state, bad_run, batch,
                                                      jax.random.fold_in(key, step))
    if int(bad_run) >= self.ctx.max_bad_steps:
      raise ValueError(f"adapting to {self.task.name}: {int(bad_run)} consecutive steps had a "
                       "NaN/Inf loss or gradient; lower --learning-rate")
    stats = (split.target_mean, split.target_std)
    results, score = self.evaluate(params, stats)
    log.info("%s: fraction %g (%d examples), seed %d, %d steps: final loss %.4f, %s",
             self.task.name, fraction, len(examples), seed, self.steps, float(loss), results)
    return RunResult(fraction, seed, len(examples), self.steps, results, score,
                     jax.device_get(params), stats, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------
# Zero-shot through an existing task's head


def parse_label_map(text: str) -> dict[str, str]:
  """'a=b,c=d' -> {'a': 'b', 'c': 'd'}."""
  pairs = [item.split("=") for item in text.split(",") if item.strip()]
  if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
    raise ValueError(f"--label-map must look like source=target,source=target; got {text!r}")
  return {a.strip(): b.strip() for a, b in pairs}


def zero_shot(trained: workdir.TrainedModel, new_task: Task, dev_examples: Sequence[Example],
              source: str, label_map: Mapping[str, str]) -> dict[str, float]:
  """The new task's dev metrics when its examples are read as task `source` and the predicted
  labels are mapped with label_map (every source label -> a new-task label)."""
  source_id = trained.task_id(source)
  src = trained.tasks[source_id]
  if src.type != base.CLASSIFICATION or new_task.type != base.CLASSIFICATION:
    raise ValueError(f"zero-shot needs two classification tasks; {src.name} is {src.type}, "
                     f"{new_task.name} is {new_task.type}")
  unknown = sorted(set(label_map) - set(src.labels))
  missing = sorted(set(src.labels) - set(label_map))
  wrong = sorted(set(label_map.values()) - set(new_task.labels))
  if unknown or missing or wrong:
    raise ValueError(f"--label-map: source labels of {src.name} are {list(src.labels)} "
                     f"(unknown {unknown}, unmapped {missing}); targets must be labels of "
                     f"{new_task.name} {list(new_task.labels)} (not: {wrong})")
  split = experiment.encode_split(trained.config, new_task, dev_examples, trained.tokenizer, None,
                                 "dev")
  rows, outputs = evaluate.forward_split(trained.apply, trained.params, split, source_id,
                                         trained.eval_setup())
  logits = np.concatenate([o["cls_logits"][:, :src.num_labels] for o in outputs])
  preds = evaluate.in_example_order(split, rows,
                                    [label_map[src.labels[i]] for i in logits.argmax(-1)])
  return metrics.compute_metrics(new_task, preds, evaluate.references(split),
                                 [ex.example_id for ex in split.examples])


# ------------------------------------------------------------------------------------------------
# Writing results


def save_workdir(adapter: Adapter, result: RunResult, out: str | Path, extra: Mapping) -> Path:
  """An adapted workdir that workdir.load (predict, export) reads like a trained one."""
  out = Path(out).expanduser().resolve()
  if (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
    raise FileExistsError(f"{out} already holds checkpoints; choose a new --out")
  out.mkdir(parents=True, exist_ok=True)
  model = adapter.trained_model(result.params, result.stats)
  workdir.write_config(out, model.config)
  workdir.write_task_records(out, model.tasks, model.stats)
  fp = dict(adapter.base.meta.get("fingerprint", {}))
  fp.update(tasks=[t.name for t in model.tasks], model=json.loads(json.dumps(
      dataclasses.asdict(adapter.model.config))),
      train_rows=list(fp.get("train_rows", [])) + [result.num_train])
  meta = {"fingerprint": fp, "evals": {str(result.steps): {
      "results": {adapter.task.name: result.results}, "score": result.score}}}
  manager = checkpoint.make_manager(out, keep=1, save_every=1, async_save=False)
  checkpoint.save(manager, result.steps, {"step": np.int32(result.steps), "params": result.params},
                  meta, result.score, force=True)
  manager.wait_until_finished()
  manager.close()
  (out / ADAPT_FILE).write_text(json.dumps(dict(extra), indent=2) + "\n")
  return out


def curve_table(results: Sequence[RunResult]) -> list[dict[str, Any]]:
  """Mean and standard deviation of the main score per fraction."""
  by_fraction = collections.defaultdict(list)
  for r in results:
    by_fraction[r.fraction].append(r)
  rows = []
  for fraction in sorted(by_fraction):
    runs = by_fraction[fraction]
    scores = np.array([r.score for r in runs])
    rows.append({"fraction": fraction, "num_train": runs[0].num_train, "seeds": len(runs),
                 "mean": float(scores.mean()), "std": float(scores.std()),
                 "scores": [float(s) for s in scores]})
  return rows


def write_curve(out: Path, task: Task, results: Sequence[RunResult], baselines: Mapping[str, float]
                ) -> None:
  """learning_curve.csv (one line per run), .md (mean +- std per fraction) and .png."""
  out.mkdir(parents=True, exist_ok=True)
  lines = ["fraction,num_train,seed,steps,score," + ",".join(task.metrics)]
  lines += [f"{r.fraction},{r.num_train},{r.seed},{r.steps},{r.score:.6f},"
            + ",".join(f"{r.results.get(m, float('nan')):.6f}" for m in task.metrics)
            for r in results]
  (out / "learning_curve.csv").write_text("\n".join(lines) + "\n")
  table = curve_table(results)
  md = [f"# {task.name}: dev score ({metrics.score_name(task)}) vs training fraction", "",
        "| fraction | examples | seeds | score (mean +- std) |", "|---|---|---|---|"]
  md += [f"| {r['fraction']:g} | {r['num_train']} | {r['seeds']} | {r['mean']:.4f} +- "
         f"{r['std']:.4f} |" for r in table]
  md += [f"| {name} | - | - | {value:.4f} |" for name, value in baselines.items()]
  (out / "learning_curve.md").write_text("\n".join(md) + "\n")
  _plot(out / "learning_curve.png", task, table, baselines)


def _plot(path: Path, task: Task, table: Sequence[Mapping], baselines: Mapping[str, float]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  x = [r["fraction"] for r in table]
  ax.errorbar(x, [r["mean"] for r in table], yerr=[r["std"] for r in table], marker="o",
              capsize=3, label="adapted")
  for (name, value), style in zip(baselines.items(), (":", "--", "-.")):
    ax.axhline(value, linestyle=style, color="gray", label=name)
  ax.set_xscale("log")
  ax.set_xlabel("fraction of the training data")
  ax.set_ylabel(f"dev score ({metrics.score_name(task)})")
  ax.set_title(task.name)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
