"""The recipe a user would otherwise run: HF transformers' PyTorch GLUE fine-tuning of one task.

  python -m camtl_jax.cli.hf_finetune --config glue5_minilm:single_task:glue/rte \
      --workdir DIR [--config.data_dir=PATH] [--config.seed=0] [--config.max_eval_examples=500]

The `hf_single_task` arm of `camtl-experiment --experiment glue5_minilm`. The config gives the
task, the checkpoint (model_path), the data folder, max_length and the dev cap; the recipe is
run_glue.py's defaults with the GLUE hyper-parameters of HF's examples:
BertForSequenceClassification (regression: num_labels=1, MSE on the raw targets), AdamW lr 2e-5,
no weight decay, linear decay without warmup, batch 32, 3 epochs, every batch padded to its
longest row (dynamic padding), truncation at max_length. Dev is scored after each epoch by
camtl_jax.tasks.metrics on the same first max_eval_examples dev examples the JAX arms see; the
epoch with the best task score (metrics.main_score) is reported (the last epoch's metrics are
kept beside it).

FLOPs are counted by torch.utils.flop_counter over every real training batch (forward and
backward; the optimizer's elementwise work is not counted): a step's count depends only on its
batch's shape, so each shape is counted once, in a counter of its own, and reused.

Resumable: every SAVE_EVERY_STEPS optimizer steps and at each epoch's end, WORKDIR/checkpoint.pt
is replaced atomically (model, optimizer, schedule, the torch RNG that draws dropout, the epoch
and batch reached, FLOPs so far, finished epochs' dev scores); a rerun continues from it to the
same result as an unbroken run.
WORKDIR/results.json is written at the end, in camtl-train's results.json form.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from camtl_jax import atomic


log = logging.getLogger("camtl_jax.perf.hf_finetune")

RECIPE = {"epochs": 3, "learning_rate": 2e-5, "batch_size": 32, "weight_decay": 0.0,
          "warmup_steps": 0, "select": "best_epoch"}
# The config fields this recipe reads; other --config overrides do not apply to it (logged).
USED_FIELDS = ("seed", "data_dir", "data_source", "max_eval_examples", "max_length", "model_path",
               "tasks")
# SST-2's epoch is 2,105 steps, likely longer than a sitting on a 2-core machine (RTE's 128-token
# steps took about 6 s there beside another run): a kill loses at most 200 steps, not an epoch.
SAVE_EVERY_STEPS = 200


def _encode(tokenizer, task, examples, max_length: int) -> list[dict[str, Any]]:
  """One dict per example: input_ids, token_type_ids, attention_mask (no padding) and label."""
  from camtl_jax.tasks import base  # pylint: disable=import-outside-toplevel
  texts = [ex.texts for ex in examples]
  first = [t[0] for t in texts]
  second = [t[1] for t in texts] if len(texts[0]) > 1 else None
  encoded = tokenizer(first, second, truncation=True, max_length=max_length)
  rows = []
  for i, ex in enumerate(examples):
    label = (float(ex.label) if task.type == base.REGRESSION
             else task.labels.index(str(ex.label)))
    rows.append({k: encoded[k][i] for k in encoded} | {"labels": label})
  return rows


def _batches(tokenizer, rows, batch_size: int, order: Sequence[int]):
  """Batches padded to their own longest row (transformers' DataCollatorWithPadding)."""
  from transformers import DataCollatorWithPadding  # pylint: disable=import-outside-toplevel
  collate = DataCollatorWithPadding(tokenizer)
  for start in range(0, len(order), batch_size):
    yield collate([rows[i] for i in order[start:start + batch_size]])


def _predict(model, tokenizer, rows, task) -> list:
  """Dev predictions: class indices, or floats for regression."""
  import torch  # pylint: disable=import-outside-toplevel
  from camtl_jax.tasks import base  # pylint: disable=import-outside-toplevel
  model.eval()
  out = []
  with torch.no_grad():
    for batch in _batches(tokenizer, rows, 128, list(range(len(rows)))):
      batch.pop("labels")
      logits = model(**batch).logits
      out += (logits[:, 0].tolist() if task.type == base.REGRESSION
              else logits.argmax(-1).tolist())
  model.train()
  return out


def _save(state: dict, path: Path) -> None:
  """Writes the training state to path whole or not at all (a kill mid-write keeps the last)."""
  import torch  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  torch.save(state, buffer)
  atomic.write_bytes(path, buffer.getvalue())


def _backward(model, batch, step_flops: dict[tuple[int, ...], int]) -> tuple[object, int]:
  """The loss of one batch, its gradients accumulated, and the step's forward and backward
  FLOPs. A FlopCounterMode kept open across steps grows by about 100 MB a step here (21 GB and
  the OOM killer within an RTE epoch), so each new shape is counted in a counter of its own."""
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=import-outside-toplevel
  shape = tuple(batch["input_ids"].shape)
  counter = None if shape in step_flops else FlopCounterMode(display=False)
  with counter or contextlib.nullcontext():
    loss = model(**batch).loss
    loss.backward()
  if counter is not None:
    step_flops[shape] = counter.get_total_flops()
  return loss, step_flops[shape]


def finetune(config, workdir: Path) -> dict:
  """Trains and scores one task with RECIPE; returns (and writes) results.json's dict."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from camtl_jax import experiment  # pylint: disable=import-outside-toplevel
  from camtl_jax.tasks import base, metrics, registry  # pylint: disable=import-outside-toplevel
  if len(config.tasks) != 1:
    raise ValueError(f"hf_finetune trains one task; the config has {list(config.tasks)}")
  task = registry.get_task(config.tasks[0])
  if task.type not in (base.CLASSIFICATION, base.REGRESSION):
    raise ValueError(f"hf_finetune: {task.name} is a {task.type} task; the recipe covers "
                     "classification and regression")
  path = experiment.resolve_model_path(config.model_path)
  torch.manual_seed(config.seed)
  tokenizer = transformers.AutoTokenizer.from_pretrained(path)
  regression = task.type == base.REGRESSION
  model = transformers.BertForSequenceClassification.from_pretrained(
      path, num_labels=1 if regression else len(task.labels),
      problem_type="regression" if regression else "single_label_classification")
  train = registry.load_split(task, config.data_dir, "train", source=config.data_source)
  dev_name = experiment.dev_split_names(task)[0]
  dev = registry.load_split(task, config.data_dir, dev_name, source=config.data_source)
  if config.max_eval_examples:
    dev = dev[:config.max_eval_examples]  # the first ones, as evaluate.capped keeps
  train_rows = _encode(tokenizer, task, train, config.max_length)
  dev_rows = _encode(tokenizer, task, dev, config.max_length)
  steps_per_epoch = -(-len(train_rows) // RECIPE["batch_size"])
  optimizer = torch.optim.AdamW(model.parameters(), lr=RECIPE["learning_rate"],
                                weight_decay=RECIPE["weight_decay"])
  schedule = transformers.get_linear_schedule_with_warmup(
      optimizer, RECIPE["warmup_steps"], steps_per_epoch * RECIPE["epochs"])
  workdir.mkdir(parents=True, exist_ok=True)
  saved = workdir / "checkpoint.pt"
  epochs: list[dict] = []
  flops, start_epoch, start_batch = 0, 0, 0
  step_flops: dict[tuple[int, ...], int] = {}  # batch shape -> one step's FLOPs
  if saved.exists():
    state = torch.load(saved, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"])
    epochs, flops = state["epochs"], state["flops"]
    start_epoch, start_batch = state["epoch"], state["batch"]
    log.info("%s: resumed at epoch %d, step %d/%d", task.name, start_epoch, start_batch,
             steps_per_epoch)

  def save(epoch: int, batch: int, flops_so_far: int) -> None:
    _save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
           "schedule": schedule.state_dict(), "rng": torch.get_rng_state(), "epochs": epochs,
           "flops": flops_so_far, "epoch": epoch, "batch": batch}, saved)

  model.train()
  for epoch in range(start_epoch, RECIPE["epochs"]):
    order = torch.randperm(len(train_rows),
                           generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
    first = start_batch if epoch == start_epoch else 0  # batches this epoch already trained
    for i, batch in enumerate(_batches(tokenizer, train_rows, RECIPE["batch_size"],
                                       order.tolist()[first * RECIPE["batch_size"]:]), first):
      loss, batch_flops = _backward(model, batch, step_flops)
      flops += batch_flops
      optimizer.step()
      schedule.step()
      optimizer.zero_grad()
      if i % 100 == 0:
        log.info("%s epoch %d step %d/%d loss %.4f", task.name, epoch, i, steps_per_epoch,
                 loss.item())
      if (i + 1) % SAVE_EVERY_STEPS == 0 and i + 1 < steps_per_epoch:
        save(epoch, i + 1, flops)
    predictions = _predict(model, tokenizer, dev_rows, task)
    references = [ex.label for ex in dev] if not regression else [float(ex.label) for ex in dev]
    result = metrics.compute_metrics(task, predictions, references)
    epochs.append({"epoch": epoch + 1, "step": steps_per_epoch * (epoch + 1), "results": result,
                   "score": metrics.main_score(task, result)})
    log.info("%s epoch %d dev %s", task.name, epoch + 1, result)
    save(epoch + 1, 0, flops)
  best = max(epochs, key=lambda e: e["score"])
  summary = {
      "step": best["step"], "score": best["score"], "results": {task.name: best["results"]},
      "selected": f"the best dev epoch of {RECIPE['epochs']} (epoch {best['epoch']})",
      "last": {task.name: epochs[-1]["results"]}, "epochs": epochs,
      "data_used": {task.name: 1.0, "overall": 1.0},
      "rows_seen": {task.name: len(train_rows) * RECIPE["epochs"]},
      "train_rows": {task.name: len(train_rows)},
      "flops": float(flops), "parameters": int(sum(p.numel() for p in model.parameters())),
      "recipe": RECIPE, "torch": torch.__version__, "transformers": transformers.__version__,
      "torch_threads": torch.get_num_threads()}
  atomic.write_text(workdir / "results.json", json.dumps(summary, indent=2))
  saved.unlink()  # the results hold everything; the weights are not kept
  return summary
