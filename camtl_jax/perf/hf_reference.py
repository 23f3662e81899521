"""HF transformers' PyTorch BertForSequenceClassification as camtl-bench's reference programs.

camtl-bench --variants ...,hf_forward,hf_train times, in lockstep with our compiled programs, the
same work done by the PyTorch model users would otherwise pick:

  hf_forward  a no-grad forward of T*b examples of L tokens (our forward_plain's work)
  hf_train    forward, backward and an AdamW step on b examples, everything trainable (our
              plain_all_trainable's work)

This module is that process: the bench starts `python -m camtl_jax.perf.hf_reference` by module
name (bench.ReferenceWorker; nothing imports this module). It builds the model once from a
BertConfig of the bench's encoder shape with random weights (only shapes matter) and runs one
call per request: the bench calls it in turn with its own programs (profiling.time_round_robin),
so a busy moment of a shared machine hits both. It uses as many torch threads as the machine has
cores, as XLA's CPU backend does. Requests and replies are JSON lines; torch and transformers are
imported only in here.
"""
from __future__ import annotations

import json
import os
import sys
import time
from types import SimpleNamespace


def _build(shape: SimpleNamespace):
  """The reference programs {name: call()} for a setup request's shape (bench.ReferenceShape's
  fields)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(shape.threads or os.cpu_count() or 1)
  torch.manual_seed(0)
  config = transformers.BertConfig(
      vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
      num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
      intermediate_size=shape.intermediate_size, max_position_embeddings=max(512, shape.length),
      num_labels=shape.num_labels)
  model = transformers.BertForSequenceClassification(config)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

  def batch(n: int):
    ids = torch.randint(1, shape.vocab_size, (n, shape.length))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids)}
  forward_batch, train_batch = batch(shape.forward_examples), batch(shape.train_examples)
  labels = torch.randint(0, shape.num_labels, (shape.train_examples,))

  def forward():
    model.eval()
    with torch.no_grad():
      model(**forward_batch).logits.sum().item()

  def train():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = model(**train_batch, labels=labels).loss
    loss.backward()
    optimizer.step()
    loss.item()
  return {"hf_forward": forward, "hf_train": train}


def main() -> None:
  """Serves requests on stdin: {"setup": bench.ReferenceShape's fields}, then {"run": name} each
  timed."""
  calls = {}
  for line in sys.stdin:
    message = json.loads(line)
    if "setup" in message:
      calls = _build(SimpleNamespace(**message["setup"]))
      reply = {"ready": True}
    else:
      start, start_cpu = time.perf_counter(), time.process_time()
      calls[message["run"]]()
      reply = {"wall": time.perf_counter() - start, "cpu": time.process_time() - start_cpu}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
  main()
