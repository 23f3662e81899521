"""Standalone per-task export of a trained CA-MTL model (the library behind `camtl-export`).

  camtl-export --workdir DIR --task demo/sentiment OUT_DIR [--benchmark]

For one task the conditional modules are functions of a constant (the task's embedding), so they
fold into plain weights:

  alignment 'matrix'  E' = E @ (R * (1 + gamma)[None, :]) + beta  ->  one dense d x d kernel
                      K = (I + delta) * (1 + gamma)[None, :] and bias beta, applied to the
                      embedding LayerNorm's output (we keep the embedding tables and their LayerNorm
                      untouched, so tokens still map to the checkpoint's rows);
                      'film': E' = (1 + gamma) * E + beta -> an elementwise scale and shift.
  conditional attention  the task's block-diagonal bias of every configured layer, a constant
                      [L_max, L_max], cropped to the batch's length [:L, :L].
  conditional LayerNorm  scale * (1 + gamma) and bias + beta become the LayerNorm's scale / bias.
  adapter             kept (down, act, up); its input FiLM folds into the down projection:
                      ((1 + g) * h + b) @ W + c = h @ ((1 + g)[:, None] * W) + (b @ W + c).
  heads               only the task's row of its head type, cropped to its classes / tags.

The artifact directory holds:
  model.stablehlo     jax.export of forward(weights, inputs...) with a symbolic batch AND length
                      (b, l with l <= max_length), serialized (Exported.serialize())
  weights.npz         the folded weights, keys "a/b/c" of the nested weight tree
  meta.json           task, type, labels, inputs / outputs, max_length, regression mean / std,
                      parameter counts, source checkpoint
  tokenizer/          a copy of the checkpoint's tokenizer (save_pretrained)
  load_and_run.py     artifact_loader.py: needs jax, numpy, flatbuffers (+ tokenizers for --text)
  README.md           what to install and how to run it

Outputs equal the multi-task model's for that task (fp32; max abs difference measured by the tests,
well under 1e-5): the folded alignment and adapter kernels change only the rounding of two matmuls.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from camtl_jax import artifact_loader, input_pipeline, workdir
from camtl_jax.models import bert
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.models import conditioning, heads
from camtl_jax.tasks import base

log = logging.getLogger(__name__)
Weights = dict[str, Any]

ARTIFACT = "model.stablehlo"
WEIGHTS = "weights.npz"
META = "meta.json"
LOADER = "load_and_run.py"   # a copy of camtl_jax/artifact_loader.py
README = "README.md"
# The packages the artifact needs, and only those (tests run it in a venv holding just these).
ARTIFACT_REQUIREMENTS = ("jax", "numpy", "flatbuffers")
TEXT_REQUIREMENTS = ("tokenizers",)
ARTIFACT_README = """# {task}: exported CA-MTL task model

Needs: pip install """ + " ".join(ARTIFACT_REQUIREMENTS) + """ (and """ + " ".join(
    TEXT_REQUIREMENTS) + """ for --text); nothing of the training library.

    python load_and_run.py INPUTS.npz OUTPUTS.npz
    python load_and_run.py --text "a sentence" [--text-pair "a second one"]
    python load_and_run.py --text PREMISE --choice A --choice B    # multiple choice
    python load_and_run.py --text QUESTION --text-pair CONTEXT     # span

--text answers as camtl-predict does: a label with probabilities, a value with its std, the
chosen option, the answer's text, or one tag per word (no [CLS] / [SEP]).

Files: model.stablehlo (the serialized forward), weights.npz, meta.json (labels, inputs, outputs,
max_length), tokenizer/ (the checkpoint's tokenizer), load_and_run.py.
"""

# Inputs of the exported function per task type, in call order. [B, L] int32, except multiple
# choice: [B, K, L] with K the task's number of choices.
INPUTS: dict[str, tuple[str, ...]] = {
    base.CLASSIFICATION: ("input_ids", "token_type_ids", "attention_mask"),
    base.REGRESSION: ("input_ids", "token_type_ids", "attention_mask"),
    base.MULTIPLE_CHOICE: ("input_ids", "token_type_ids", "attention_mask"),
    base.SPAN: ("input_ids", "token_type_ids", "attention_mask", "context_mask"),
    base.TAGGING: ("input_ids", "token_type_ids", "attention_mask"),
}
# Outputs per task type (float32): logits [B, C] / [B, K] / [B, L, C]; regression value [B] in
# standardised units (value * target_std + target_mean is the task's scale) and log_var [B].
OUTPUTS: dict[str, tuple[str, ...]] = {
    base.CLASSIFICATION: ("logits",),
    base.REGRESSION: ("value", "log_var"),
    base.MULTIPLE_CHOICE: ("logits",),
    base.SPAN: ("start_logits", "end_logits"),
    base.TAGGING: ("logits",),
}


# ------------------------------------------------------------------------------------------------
# Per-task conditioning values, computed with the model's own modules (so they are bitwise the
# values the multi-task forward computes), then folded.


def _film(params: Mapping, z: jax.Array, features: int) -> tuple[np.ndarray, np.ndarray]:
  gamma, beta = conditioning.FiLM(features).apply({"params": params}, z)
  return np.asarray(gamma), np.asarray(beta)


def _fold_alignment(params: Mapping, mode: str, z: jax.Array, t: int) -> Weights:
  d = z.shape[-1]
  gamma, beta = _film(params["film"], z, d)
  if mode == "film":
    return {"scale": 1.0 + gamma[t], "bias": beta[t]}
  kernel = (np.eye(d, dtype=np.float32) + np.asarray(params["delta"])) * (1.0 + gamma[t])[None, :]
  return {"kernel": kernel, "bias": beta[t]}


def _fold_attention(params: Mapping, z1: jax.Array, t: int, num_blocks: int, max_length: int
                    ) -> np.ndarray:
  bias = conditioning.ConditionalAttentionBias(num_blocks, max_length).apply(
      {"params": params}, z1, max_length)
  return np.asarray(bias[t])  # [L_max, L_max]


def _fold_layernorms(encoder: Weights, params: Mapping, z1: jax.Array, t: int) -> None:
  """In place: the layers' LayerNorm scale / bias become the task's conditional ones."""
  for layer, lns in params.items():
    for ln_name, film_params in lns.items():
      gamma, beta = _film(film_params, z1, z1.shape[-1])
      ln = encoder[layer][ln_name]
      # The exact expressions of bert.LayerNorm's modulated branch.
      ln["scale"] = np.asarray(jnp.asarray(ln["scale"]) * (1.0 + jnp.asarray(gamma[t])))
      ln["bias"] = np.asarray(jnp.asarray(ln["bias"]) + jnp.asarray(beta[t]))


def _fold_adapters(params: Mapping, z1: jax.Array, t: int) -> Weights:
  d = z1.shape[-1]
  z2 = nn.Dense(d).apply({"params": params["task_transform"]}, z1)
  out = {}
  for layer, p in params.items():
    if layer == "task_transform":
      continue
    gamma, beta = _film(p["film"], z2, d)
    w, c = np.asarray(p["down"]["kernel"]), np.asarray(p["down"]["bias"])
    out[layer] = {"down": {"kernel": (1.0 + gamma[t])[:, None] * w, "bias": beta[t] @ w + c},
                  "up": {k: np.asarray(v) for k, v in p["up"].items()}}
  return out


def _head_weights(params: Mapping, head_type: str, slot: int, num_labels: int) -> Weights:
  """The task's row of its stacked head, cropped to its classes / tags: a one-row stack
  (kernel [1, d, F], bias [1, F]) that heads.HEAD_OUTPUTS reads with slot 0."""
  crop = {base.CLASSIFICATION: num_labels, base.TAGGING: num_labels}.get(head_type)
  row = lambda p: {"kernel": np.asarray(p["kernel"][slot:slot + 1, :, :crop]),  # noqa: E731
                   "bias": np.asarray(p["bias"][slot:slot + 1, :crop])}
  return {name: row(p) for name, p in params.items()}


def fold(trained: workdir.TrainedModel, task_id: int) -> Weights:
  """The standalone weight tree of one task (module docstring): encoder (conditional LayerNorms
  folded), alignment, attention_bias {layer_i: [L_max, L_max]}, adapter, head."""
  model, params = trained.model, trained.params
  cfg, enc = model.config, model.encoder
  encoder = jax.tree.map(lambda x: np.array(x, np.float32), params["encoder"])
  weights = {"encoder": encoder}
  head_type = model.tasks[task_id].type
  layout = heads.HeadLayout.from_tasks(model.tasks)
  weights["head"] = _head_weights(params["heads"][head_type], head_type,
                                  int(layout.slot[task_id]), int(layout.num_labels[task_id]))
  if not cfg.conditioned:
    return weights
  z, z1 = conditioning.TaskEmbedding(len(model.tasks), enc.hidden_size).apply(
      {"params": params["task_embedding"]})
  if cfg.alignment != "none":
    weights["alignment"] = _fold_alignment(params["alignment"], cfg.alignment, z, task_id)
  if layers := cfg.attention_layer_ids(enc.num_layers):
    weights["attention_bias"] = {
        f"layer_{i}": _fold_attention(params["cond_attention"][f"layer_{i}"], z1, task_id,
                                      cfg.num_blocks(enc.hidden_size), cfg.max_length)
        for i in layers}
  if cfg.layernorm_layer_ids(enc.num_layers):
    _fold_layernorms(encoder, params["cond_layernorm"], z1, task_id)
  if cfg.adapter_layer_ids(enc.num_layers):
    weights["adapter"] = _fold_adapters(params["adapter"], z1, task_id)
  return jax.tree.map(lambda x: np.asarray(x, np.float32), weights)


# ------------------------------------------------------------------------------------------------
# The standalone forward (traced once by jax.export; flax is only used at export time)


def _dense(p: Mapping, x: jax.Array) -> jax.Array:
  return x @ p["kernel"] + p["bias"]


# Task type -> {the artifact's output name: the multi-task model's output key} (defined in the
# standalone loader, which reads both kinds of artifact).
OUTPUT_KEYS: dict[str, dict[str, str]] = artifact_loader.OUTPUT_KEYS


def _head(task_type: str, w: Weights, hidden: jax.Array, pooled: jax.Array,
          inputs: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The task's head (heads.HEAD_OUTPUTS, on its one-row stack w): hidden [B, L, d] (choice row
  0), pooled [B, K, d] -> OUTPUTS[task_type]."""
  b = hidden.shape[0]
  num_valid = next(iter(w.values()))["kernel"].shape[-1]
  if task_type == base.MULTIPLE_CHOICE:
    num_valid = pooled.shape[1]
  rows = heads.HeadRows(slot=jnp.zeros((b,), jnp.int32), active=jnp.ones((b,), bool),
                        num_valid=jnp.full((b,), num_valid, jnp.int32))
  x = heads.HEAD_INPUT[task_type](heads.Features(pooled=pooled, hidden=hidden))
  out = heads.HEAD_OUTPUTS[task_type](w, x, inputs, rows)
  return {name: out[key] for name, key in OUTPUT_KEYS[task_type].items()}


def _adapter_fn(p: Mapping, activation: str) -> Callable[[jax.Array], jax.Array]:
  return lambda h: _dense(p["up"], conditioning.ADAPTER_ACTIVATIONS[activation](
      _dense(p["down"], h)))


def _align_fn(p: Mapping) -> Callable[[jax.Array], jax.Array]:
  if "kernel" in p:
    return lambda h: _dense(p, h)
  return lambda h: p["scale"] * h + p["bias"]


def _hooks(config: camtl_lib.CAMTLConfig, w: Weights, length) -> camtl_lib.EncoderHooks:
  adapters = {int(k.split("_")[1]): _adapter_fn(p, config.adapter_activation)
              for k, p in w.get("adapter", {}).items()}
  top = config.adapter == "top"
  return camtl_lib.EncoderHooks(
      align=_align_fn(w["alignment"]) if "alignment" in w else None,
      attention_bias={int(k.split("_")[1]): b[None, :length, :length]
                      for k, b in w.get("attention_bias", {}).items()},
      adapter=adapters if top else {}, skip={} if top else adapters)


def forward(encoder: bert.EncoderConfig, config: camtl_lib.CAMTLConfig, task_type: str,
            weights: Weights, *args: jax.Array) -> dict[str, jax.Array]:
  """The task's model on plain weights. args: INPUTS[task_type], [B, L] ([B, K, L] for multiple
  choice). Returns OUTPUTS[task_type] (heads.HEAD_OUTPUTS under OUTPUT_KEYS' names)."""
  inputs = dict(zip(INPUTS[task_type], args))
  ids = inputs["input_ids"]
  shape = ids.shape
  rows = lambda x: x.reshape(-1, shape[-1])  # noqa: E731 [B(, K), L] -> [R, L]
  hidden, pooled = camtl_lib.ConditionalEncoder(encoder).apply(
      {"params": weights["encoder"]}, rows(ids), rows(inputs["token_type_ids"]),
      rows(inputs["attention_mask"]), _hooks(config, weights, shape[-1]), True)
  k = shape[1] if len(shape) == 3 else 1
  hidden = hidden.reshape(shape[0], k, shape[-1], hidden.shape[-1])[:, 0]  # choice row 0
  pooled = pooled.reshape(shape[0], k, pooled.shape[-1])                   # [B, K, d]
  return _head(task_type, weights["head"], hidden, pooled, inputs)


def input_specs(task_type: str, num_choices: int, max_length: int) -> list[jax.ShapeDtypeStruct]:
  """Symbolic input shapes: (b, l) with 1 <= l <= max_length; (b, K, l) for multiple choice."""
  b, l = jax.export.symbolic_shape("b, l", constraints=(f"l <= {max_length}",))
  shape = (b, num_choices, l) if task_type == base.MULTIPLE_CHOICE else (b, l)
  return [jax.ShapeDtypeStruct(shape, jnp.int32) for _ in INPUTS[task_type]]


def export_forward(trained: workdir.TrainedModel, task_id: int, weights: Weights
                   ) -> jax.export.Exported:
  """jax.export of the task's forward with weights as the first (pytree) argument."""
  spec = trained.model.tasks[task_id]
  num_choices = spec.num_labels if spec.type == base.MULTIPLE_CHOICE else 1
  fn = jax.jit(functools.partial(forward, trained.model.encoder, trained.model.config, spec.type))
  weight_specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), weights)
  return jax.export.export(fn)(weight_specs, *input_specs(spec.type, num_choices,
                                                           trained.config.max_length))


# ------------------------------------------------------------------------------------------------
# The multi-task model's batch for the same inputs (what the artifact must equal)


def multitask_batch(trained: workdir.TrainedModel, task_id: int,
                    inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Export inputs -> a batch of the multi-task model (K_max choice rows, all label keys)."""
  ids = np.asarray(inputs["input_ids"])
  b, length = ids.shape[0], ids.shape[-1]
  batch = camtl_lib.example_batch(trained.model.tasks, b, length)
  for key in camtl_lib.CHOICE_KEYS:
    x = np.asarray(inputs[key])
    batch[key] = np.zeros_like(batch[key])
    batch[key][:, :x.shape[1]] = x if x.ndim == 3 else x[:, None]
  if "context_mask" in inputs:
    batch["context_mask"] = np.asarray(inputs["context_mask"], np.int32)
  batch["task_id"] = np.full((b,), task_id, np.int32)
  return batch


def sample_inputs(trained: workdir.TrainedModel, task_id: int, examples,
                  batch_size: int = 64) -> dict[str, np.ndarray]:
  """Export inputs for some examples: the first evaluation batch of their encoding."""
  split = trained.encode(task_id, examples)
  buckets = input_pipeline.default_buckets(trained.config.max_length, trained.config.bucket_step)
  batch, _ = next(input_pipeline.eval_batches(split, task_id, batch_size,
                                              num_choices=trained.num_choices, buckets=buckets))
  return export_inputs(trained.model.tasks[task_id], batch)


def export_inputs(spec: camtl_lib.TaskSpec, batch: Mapping[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
  """A multi-task batch [B, K_max, L] -> the export's inputs ([B, L], or [B, K_task, L])."""
  k = spec.num_labels if spec.type == base.MULTIPLE_CHOICE else 1
  out = {}
  for key in INPUTS[spec.type]:
    x = np.asarray(batch[key], np.int32)
    out[key] = x if key == "context_mask" else (x[:, :k] if k > 1 else x[:, 0])
  return out


# ------------------------------------------------------------------------------------------------
# Writing the artifact


def count(tree: Any) -> int:
  return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


@dataclasses.dataclass
class ExportResult:
  out_dir: Path
  task: str
  parameters: int            # the artifact's weights
  multitask_parameters: int  # the whole multi-task model


def export_task(trained: workdir.TrainedModel, task_name: str, out_dir: str | Path
                ) -> ExportResult:
  """Writes the standalone artifact of one task (module docstring) into out_dir."""
  task_id = trained.task_id(task_name)
  task = trained.tasks[task_id]
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  weights = fold(trained, task_id)
  exported = export_forward(trained, task_id, weights)
  (out / ARTIFACT).write_bytes(exported.serialize())
  flat = traverse_util.flatten_dict(weights, sep="/")
  np.savez(out / WEIGHTS, **flat)
  if (out / "tokenizer").exists():
    shutil.rmtree(out / "tokenizer")
  trained.tokenizer.save_pretrained(str(out / "tokenizer"))
  shutil.copyfile(Path(artifact_loader.__file__), out / LOADER)
  (out / README).write_text(ARTIFACT_README.format(task=task.name))
  result = ExportResult(out, task.name, count(weights), count(trained.params))
  mean, std = trained.stats[task_id]
  meta = {
      "task": task.name, "type": task.type, "labels": list(task.labels),
      "num_choices": task.num_choices, "max_length": int(trained.config.max_length),
      "doc_stride": int(trained.config.doc_stride),
      "target_mean": mean, "target_std": std,
      "inputs": list(INPUTS[task.type]),
      "input_shape": "[b, K, l]" if task.type == base.MULTIPLE_CHOICE else "[b, l]",
      "outputs": list(OUTPUTS[task.type]),
      "parameters": result.parameters, "multitask_parameters": result.multitask_parameters,
      "source": {"workdir": str(trained.workdir), "step": trained.step},
  }
  (out / META).write_text(json.dumps(meta, indent=2) + "\n")
  log.info("exported %s to %s: %d parameters (multi-task model: %d)", task.name, out,
           result.parameters, result.multitask_parameters)
  return result


# ------------------------------------------------------------------------------------------------
# Latency


def _time(fn: Callable[[], Any], repeats: int) -> float:
  jax.block_until_ready(fn())  # compile
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn())
  return (time.perf_counter() - start) / repeats


def benchmark(trained: workdir.TrainedModel, task_name: str, out_dir: str | Path,
              batch_size: int = 32, repeats: int = 10) -> dict[str, float]:
  """Seconds per example of the multi-task model's eval forward and of the artifact (loaded from
  out_dir through jax.export.deserialize), on one batch of max_length tokens; both with their
  weights already on the device."""
  task_id = trained.task_id(task_name)
  spec = trained.model.tasks[task_id]
  length = trained.config.max_length
  k = spec.num_labels if spec.type == base.MULTIPLE_CHOICE else 1
  shape = (batch_size, k, length) if k > 1 else (batch_size, length)
  rng = np.random.default_rng(0)
  inputs = {"input_ids": rng.integers(1000, 2000, shape).astype(np.int32),
            "token_type_ids": np.zeros(shape, np.int32), "attention_mask": np.ones(shape, np.int32)}
  if spec.type == base.SPAN:
    inputs["context_mask"] = np.ones((batch_size, length), np.int32)
  out = Path(out_dir)
  exported = jax.export.deserialize(bytearray((out / ARTIFACT).read_bytes()))
  weights = jax.device_put(traverse_util.unflatten_dict(dict(np.load(out / WEIGHTS)), sep="/"))
  params = jax.device_put(trained.params)
  args = [inputs[name] for name in INPUTS[spec.type]]
  # The multi-task model as its evaluation runs it (camtl.choice_layout): no padding choice rows.
  k_eval, head_types = camtl_lib.choice_layout(trained.specs, spec.type)
  batch = {key: v[:, :k_eval] if key in camtl_lib.CHOICE_KEYS else v
           for key, v in multitask_batch(trained, task_id, inputs).items()}
  multi = _time(lambda: trained.apply(params, batch, head_types=head_types), repeats) / batch_size
  single = _time(lambda: exported.call(weights, *args), repeats) / batch_size
  return {"multitask_s_per_example": multi, "export_s_per_example": single,
          "batch_size": batch_size, "length": length}
