"""HF transformers' PyTorch BertForSequenceClassification as camtl-bench's reference programs.

camtl-bench --variants ...,hf_forward,hf_train times, in lockstep with our compiled programs, the
same work done by the PyTorch model users would otherwise pick:

  hf_forward  a no-grad forward of T*b examples of L tokens (our forward_plain's work)
  hf_train    forward, backward and an AdamW step on b examples, everything trainable (our
              plain_all_trainable's work)

The PyTorch model lives in its own resident process (`python -m camtl_jax.perf.hf_reference`), built
once from a BertConfig of the bench's encoder shape with random weights (only shapes matter), and
runs one call per request: the bench calls it in turn with its own programs (bench.
time_round_robin), so a busy moment of a shared machine hits both. The worker uses as many torch
threads as the machine has cores, as XLA's CPU backend does. Requests and replies are JSON lines.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

VARIANTS = ("hf_forward", "hf_train")


@dataclasses.dataclass
class ReferenceShape:
  """What the PyTorch model and its inputs look like (the bench's encoder and batch)."""
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


class HFProgram:
  """One reference program in the worker, called like bench.Program (call, step_s, cpu_s)."""

  def __init__(self, name: str, examples: int, worker: "Worker"):
    self.name, self.examples, self.worker = name, examples, worker
    self.step_s: list[float] = []
    self.cpu_s: list[float] = []

  def call(self) -> tuple[float, float]:
    """One call in the worker: (its wall seconds, its process CPU seconds)."""
    reply = self.worker.request({"run": self.name})
    return reply["wall"], reply["cpu"]


class Worker:
  """The resident PyTorch process. Its stderr goes to a file, quoted when it fails."""

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


def programs(shape: ReferenceShape, names: tuple[str, ...]) -> tuple[Worker, list[HFProgram]]:
  """The worker and the requested reference programs (each warmed up once)."""
  if importlib.util.find_spec("torch") is None:
    raise ValueError(f"{', '.join(names)} need PyTorch: pip install torch==2.13.0 (the CPU "
                     "build), or leave them out of --variants")
  worker = Worker(shape)
  made = [HFProgram(n, shape.forward_examples if n == "hf_forward" else shape.train_examples,
                    worker) for n in names]
  for program in made:
    program.call()
  return worker, made


# ------------------------------------------------------------------------------------------------
# The worker (imports torch and transformers only here)


def _build(shape: ReferenceShape):
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
  """Serves requests on stdin: {"setup": ReferenceShape fields}, then {"run": name} each timed."""
  calls = {}
  for line in sys.stdin:
    message = json.loads(line)
    if "setup" in message:
      calls = _build(ReferenceShape(**message["setup"]))
      reply = {"ready": True}
    else:
      start, start_cpu = time.perf_counter(), time.process_time()
      calls[message["run"]]()
      reply = {"wall": time.perf_counter() - start, "cpu": time.process_time() - start_cpu}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
  main()
