"""The multi-task artifact: every task of a trained workdir in one serialized program, and the
mixed-task forward it serializes (the library behind `camtl-export --all-tasks`; camtl-serve runs
the same forward on a workdir).

  camtl-export --workdir DIR --all-tasks OUT_DIR

CA-MTL's conditional modules read each example's task, so a batch mixing tasks is one forward:
the encoder runs once over every encoder row of the batch (each row under its own task's
conditioning) and every head type present reads its examples' rows (heads.HEAD_OUTPUTS, the
multi-task model's own head math). Nothing is folded: the weights are the multi-task model's.

Inputs (int32; b examples, r encoder rows, l <= max_length tokens; b, r and l are symbolic):
  task_id          [b]     each example's task (meta.json "tasks" order)
  input_ids, token_type_ids, attention_mask
                   [r, l]  encoder rows: one per example, one per choice of a multiple-choice
                           example (a multiple-choice example costs K rows, any other one row)
  choice_rows      [b, K]  each example's rows: column 0 for single-sequence tasks, choice j's row
                           in column j for multiple choice; -1 where none. K: the largest choice
                           count of the tasks (1 without multiple-choice tasks)
  context_mask     [b, l]  span tasks: the context tokens of the example's row (0 elsewhere)
Outputs (float32), the multi-task model's (camtl.CAMTL) for every head type present:
  cls_logits [b, C_max], regression / regression_log_var [b] (standardised units),
  choice_logits [b, K], start_logits / end_logits [b, l], tag_logits [b, l, C_tag_max],
  -1e9 where invalid; each example reads the keys of its own task's type.

The artifact directory holds model.stablehlo, weights.npz (the multi-task parameters, "a/b/c"
keys), meta.json (tasks with labels / choices / regression statistics, inputs, outputs,
max_length, doc_stride, sizes), tokenizer/, load_and_run.py (artifact_loader.py: jax, numpy,
flatbuffers; + tokenizers for --text) and a README.md with its size against T per-task artifacts.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from camtl_jax import artifact_loader, export, workdir
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.models import heads

log = logging.getLogger(__name__)

INPUTS = ("task_id", "input_ids", "token_type_ids", "attention_mask", "choice_rows",
          "context_mask")
ROW_KEYS = camtl_lib.CHOICE_KEYS  # the [r, l] inputs
README_TEXT = """# Every task of a CA-MTL model in one program

Tasks: {tasks}

Needs: pip install {requirements} (and {text_requirements} for --text); nothing of the training
library.

    python load_and_run.py --task {first} --text "a sentence" [--text-pair "a second one"]
    python load_and_run.py --task TASK --text PREMISE --choice A --choice B   # multiple choice
    python load_and_run.py --task TASK --text QUESTION --text-pair CONTEXT      # span
    python load_and_run.py INPUTS.npz OUTPUTS.npz     # arrays named as meta.json "inputs"

One batch may mix every task: each example names its task (input task_id); see meta.json for the
inputs and outputs and load_and_run.py (`Model.predict_texts`) for the text path, which answers
as camtl-predict does (labels with probabilities, values, choices, span text, tags per word).

## Size against one artifact per task (measured at export)

{size_table}
"""


class RowEncoder(camtl_lib.CAMTL):
  """The CA-MTL encoder on rows that each carry their own task: the model's own conditional
  modules (CAMTL._hooks) and encoder, under the model's parameter names (params['heads'] is not
  read). __call__(input_ids, token_type_ids, attention_mask [R, L], row_task [R]) ->
  (hidden [R, L, d], pooled [R, d])."""

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask,  # pylint: disable=arguments-differ
               row_task):
    hooks = self._hooks(row_task, input_ids.shape[1])
    return camtl_lib.ConditionalEncoder(self.encoder, name="encoder")(
        input_ids, token_type_ids, attention_mask, hooks, True)


def row_tasks(task_id: jax.Array, choice_rows: jax.Array, num_rows) -> jax.Array:
  """Each row's task [r] from the examples' tasks [b] and rows [b, K] (rows no example names:
  task 0, their outputs are never read)."""
  target = jnp.where(choice_rows >= 0, choice_rows, num_rows)  # out of range: dropped
  tasks = jnp.broadcast_to(task_id[:, None], choice_rows.shape)
  return jnp.zeros((num_rows,), jnp.int32).at[target].set(tasks, mode="drop")


def forward(model: camtl_lib.CAMTL, params: Any, inputs: Mapping[str, jax.Array]
            ) -> dict[str, jax.Array]:
  """The mixed-task forward (module docstring): inputs INPUTS -> the multi-task model's outputs
  for every head type present, per example."""
  task_id, choice_rows = inputs["task_id"], inputs["choice_rows"]
  num_rows = inputs["input_ids"].shape[0]
  encoder = RowEncoder(model.encoder, model.config, model.tasks)
  hidden, pooled = encoder.apply({"params": params}, *[inputs[k] for k in ROW_KEYS],
                                 row_tasks(task_id, choice_rows, num_rows))
  has_row = choice_rows >= 0
  index = jnp.clip(choice_rows, 0, num_rows - 1)  # [b, K]
  features = heads.Features(pooled=jnp.where(has_row[..., None], pooled[index], 0.0),
                            hidden=hidden[index[:, 0]])
  batch = {"attention_mask": jnp.where(has_row[..., None], inputs["attention_mask"][index], 0),
           "context_mask": inputs["context_mask"]}
  layout = heads.HeadLayout.from_tasks(model.tasks)
  outputs = {}
  for head_type in layout.types:
    x = heads.HEAD_INPUT[head_type](features).astype(jnp.float32)
    outputs.update(heads.HEAD_OUTPUTS[head_type](params["heads"][head_type], x, batch,
                                                 layout.rows(head_type, task_id)))
  return outputs


# ------------------------------------------------------------------------------------------------
# Mixed batches from encoded examples


@dataclasses.dataclass(frozen=True)
class Part:
  """Some encoded examples of one task: arrays as input_pipeline encodes them (input_ids etc.
  [n, L_max], [n, C, L_max] for multiple choice; context_mask [n, L_max] for span)."""
  task_id: int
  arrays: Mapping[str, np.ndarray]

  @property
  def size(self) -> int:
    return int(self.arrays["input_ids"].shape[0])

  @property
  def rows(self) -> int:
    ids = self.arrays["input_ids"]
    return int(ids.shape[0] * (ids.shape[1] if ids.ndim == 3 else 1))


def used_length(parts: Sequence[Part]) -> int:
  """The longest row of the parts, in tokens."""
  return max(int(np.max(np.sum(p.arrays["attention_mask"] > 0, axis=-1), initial=1))
             for p in parts)


def mixed_inputs(parts: Sequence[Part], num_choices: int, length: int, num_examples: int = 0,
                 num_rows: int = 0) -> dict[str, np.ndarray]:
  """The forward's inputs (INPUTS) for the parts' examples in order, cut or padded to `length`
  tokens (no row may be longer) and padded to num_examples / num_rows (padding examples have
  no row; padding rows no token)."""
  b = max(num_examples, sum(p.size for p in parts))
  r = max(num_rows, sum(p.rows for p in parts))
  out = {k: np.zeros((r, length), np.int32) for k in ROW_KEYS}
  out.update(task_id=np.zeros((b,), np.int32), choice_rows=np.full((b, num_choices), -1, np.int32),
             context_mask=np.zeros((b, length), np.int32))
  example, row = 0, 0
  for part in parts:
    ids = part.arrays["input_ids"]
    k = ids.shape[1] if ids.ndim == 3 else 1
    n = part.size
    for key in ROW_KEYS:
      x = part.arrays[key].reshape(n * k, -1)
      if np.any(x[:, length:] != 0) and key == "attention_mask":
        raise ValueError(f"a row of task {part.task_id} is longer than {length} tokens")
      out[key][row:row + n * k, :min(length, x.shape[1])] = x[:, :length]
    out["task_id"][example:example + n] = part.task_id
    out["choice_rows"][example:example + n, :k] = row + np.arange(n * k).reshape(n, k)
    if "context_mask" in part.arrays:
      cm = part.arrays["context_mask"]
      out["context_mask"][example:example + n, :min(length, cm.shape[1])] = cm[:, :length]
    example, row = example + n, row + n * k
  return out


# ------------------------------------------------------------------------------------------------
# The artifact


def input_specs(num_choices: int, max_length: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Symbolic shapes of INPUTS: b examples, r rows, l tokens (l <= max_length)."""
  b, r, l = jax.export.symbolic_shape("b, r, l", constraints=(f"l <= {max_length}",))
  shapes = {"task_id": (b,), "choice_rows": (b, num_choices), "context_mask": (b, l)}
  shapes.update({k: (r, l) for k in ROW_KEYS})
  return {k: jax.ShapeDtypeStruct(shapes[k], jnp.int32) for k in INPUTS}


def export_program(trained: workdir.TrainedModel) -> jax.export.Exported:
  """jax.export of forward(params, *INPUTS) with symbolic b, r and l."""
  model = trained.model

  def fn(params, *args):
    return forward(model, params, dict(zip(INPUTS, args)))
  specs = input_specs(trained.num_choices, trained.config.max_length)
  weight_specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.float32),
                              trained.params)
  return jax.export.export(jax.jit(fn))(weight_specs, *[specs[k] for k in INPUTS])


def _bytes(path: Path) -> int:
  """Bytes of the artifact's files, its README.md left out (it states these sizes)."""
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != export.README)


@dataclasses.dataclass
class MultitaskExport:
  out_dir: Path
  tasks: list[str]
  parameters: int
  artifact_bytes: int
  per_task_bytes: dict[str, int]   # each task's own artifact (camtl-export --task), measured
  per_task_parameters: dict[str, int]


def size_table(result: MultitaskExport) -> str:
  """Markdown: bytes and parameters of this artifact against the T per-task artifacts."""
  mb = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731
  lines = ["| artifact | files | parameters |", "|---|---:|---:|"]
  for name in result.tasks:
    lines.append(f"| `camtl-export --task {name}` | {mb(result.per_task_bytes[name])} | "
                 f"{result.per_task_parameters[name]:,} |")
  total = sum(result.per_task_bytes.values())
  lines.append(f"| the {len(result.tasks)} per-task artifacts together | {mb(total)} | "
               f"{sum(result.per_task_parameters.values()):,} |")
  lines.append(f"| **this artifact (every task)** | **{mb(result.artifact_bytes)}** | "
               f"**{result.parameters:,}** |")
  lines.append(f"\nThis artifact is {result.artifact_bytes / total:.2f}x the bytes of the "
               f"{len(result.tasks)} per-task artifacts together (tokenizer and loader counted "
               "in each).")
  return "\n".join(lines)


def _per_task_sizes(trained: workdir.TrainedModel) -> tuple[dict[str, int], dict[str, int]]:
  """Bytes and parameters of each task's own artifact, exported into a temporary folder."""
  sizes, params = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for task in trained.tasks:
      out = Path(tmp) / task.name.replace("/", "_")
      result = export.export_task(trained, task.name, out)
      sizes[task.name], params[task.name] = _bytes(out), result.parameters
      shutil.rmtree(out)
  return sizes, params


def task_records(trained: workdir.TrainedModel) -> list[dict]:
  """meta.json "tasks": name, type, labels, num_choices, regression mean / std."""
  return [{"name": t.name, "type": t.type, "labels": list(t.labels), "num_choices": t.num_choices,
           "target_mean": mean, "target_std": std}
          for t, (mean, std) in zip(trained.tasks, trained.stats)]


def export_all(trained: workdir.TrainedModel, out_dir: str | Path, compare_sizes: bool = True
               ) -> MultitaskExport:
  """Writes the multi-task artifact (module docstring) into out_dir; with compare_sizes, exports
  each task's own artifact into a temporary folder to measure the sizes its README states."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / export.ARTIFACT).write_bytes(export_program(trained).serialize())
  flat = traverse_util.flatten_dict(jax.device_get(trained.params), sep="/")
  np.savez(out / export.WEIGHTS, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
  if (out / "tokenizer").exists():
    shutil.rmtree(out / "tokenizer")
  trained.tokenizer.save_pretrained(str(out / "tokenizer"))
  shutil.copyfile(Path(artifact_loader.__file__), out / export.LOADER)
  config = trained.config
  layout = heads.HeadLayout.from_tasks(trained.model.tasks)
  meta = {
      "kind": "multitask", "tasks": task_records(trained),
      "max_length": int(config.max_length), "doc_stride": int(config.doc_stride),
      "num_choices": int(trained.num_choices), "inputs": list(INPUTS),
      "outputs": [key for t in layout.types for key in export.OUTPUT_KEYS[t].values()],
      "parameters": export.count(trained.params),
      "source": {"workdir": str(trained.workdir), "step": trained.step},
  }
  names = [t.name for t in trained.tasks]
  result = MultitaskExport(out, names, meta["parameters"], 0, {}, {})
  if compare_sizes:
    result.per_task_bytes, result.per_task_parameters = _per_task_sizes(trained)
  (out / export.META).write_text(json.dumps(meta, indent=2) + "\n")
  result.artifact_bytes = _bytes(out)
  meta.update(size_bytes=result.artifact_bytes, per_task_bytes=result.per_task_bytes)
  (out / export.META).write_text(json.dumps(meta, indent=2) + "\n")
  result.artifact_bytes = _bytes(out)
  table = size_table(result) if compare_sizes else "(not measured: --no-size-comparison)"
  (out / export.README).write_text(README_TEXT.format(
      tasks=", ".join(names), requirements=" ".join(export.ARTIFACT_REQUIREMENTS),
      text_requirements=" ".join(export.TEXT_REQUIREMENTS), first=names[0], size_table=table))
  log.info("exported %d tasks to %s: %d parameters, %d bytes", len(names), out,
           result.parameters, result.artifact_bytes)
  return result
