"""Load on camtl-serve, against what else would serve the same tasks (`camtl-bench-serve`).

  camtl-bench-serve --model WORKDIR [--clients 1,8,32,128] [--seconds 20]
                    [--servers camtl,one_at_a_time,per_task,hf] [--out docs/results/serve_load]

N concurrent clients on loopback each send one request at a time (one input of a task drawn at
random from the workdir's tasks, text from their demo dev sets) for a bounded time; we report
requests/s, p50/p95/p99 latency and the server process's peak resident memory. The servers, each
its own process behind the same HTTP API (serve.make_app: the same checks, encoding and
decoding), differ only in what runs the forward:
  camtl          camtl-serve: the mixed-task program, requests of every task micro-batched together
  one_at_a_time  the same program, one request's input per forward (no batching)
  per_task       T per-task folded programs (camtl-export --task, serialized and deserialized) in
                 one process, micro-batched per task
  hf             T HF transformers PyTorch models of the same checkpoint (BertModel + the task's
                 head, random head weights: only the work matters), one per task, micro-batched
                 per task, no-grad
Results: OUT.json and OUT.md with the command and the git commit.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

SERVERS = ("camtl", "one_at_a_time", "hf", "per_task")
BATCHED = dict(max_rows=64, row_buckets=(1, 4, 16, 64), max_wait_s=0.005)
# One request's input per forward: 1 row (2 for a choice, a few span windows; a longer input runs
# in pieces of 8 rows).
ONE_AT_A_TIME = dict(max_rows=8, row_buckets=(1, 2, 4, 8), batching=False)


# ------------------------------------------------------------------------------------------------
# The servers (run in their own process: `python -m camtl_jax.cli.bench_serve --server ...`)


def _one_task_inputs(inputs: Mapping[str, np.ndarray], multiple_choice: bool
                     ) -> dict[str, np.ndarray]:
  """Mixed-task inputs of one task's examples -> a one-task program's ([b, l] or [b, K, l])."""
  index = np.clip(inputs["choice_rows"], 0, inputs["input_ids"].shape[0] - 1)
  has = (inputs["choice_rows"] >= 0)[..., None]
  rows = {k: np.where(has, inputs[k][index], 0) for k in ("input_ids", "token_type_ids",
                                                           "attention_mask")}
  out = {k: v if multiple_choice else v[:, 0] for k, v in rows.items()}
  out["context_mask"] = inputs["context_mask"]
  return out


def _served_without_params(path: str):
  """serve.ServedModel of a workdir's tasks, tokenizer and settings, without its parameters
  (run() is set by the caller)."""
  # pylint: disable=import-outside-toplevel
  from camtl_jax import convert, experiment, input_pipeline, serve, workdir
  from camtl_jax.models import camtl as camtl_lib
  wd = workdir.check_workdir(path)
  config = workdir.load_config(wd)
  tasks, stats = workdir.load_task_records(wd)
  return serve.ServedModel(
      tasks, stats, convert.load_tokenizer(experiment.resolve_model_path(config.model_path)),
      int(config.max_length),
      int(config.doc_stride), camtl_lib.num_choices(experiment.task_specs(tasks)),
      input_pipeline.default_buckets(config.max_length, config.bucket_step), None, str(wd))


def _per_task_model(path: str):
  """serve.ServedModel whose run() calls the batch's task's own folded program."""
  import jax  # pylint: disable=import-outside-toplevel
  from camtl_jax import export, workdir  # pylint: disable=import-outside-toplevel
  trained = workdir.load(path)
  programs = []
  for task_id, task in enumerate(trained.tasks):
    folded = export.fold(trained, task_id)
    exported = jax.export.deserialize(
        export.export_forward(trained, task_id, folded).serialize())
    programs.append((task.type, jax.jit(exported.call), jax.device_put(folded)))
  del trained  # only the folded programs stay in memory
  model = _served_without_params(path)

  def run(inputs):
    kind, call, weights = programs[int(inputs["task_id"][0])]
    args = _one_task_inputs(inputs, kind == "multiple_choice")
    out = call(weights, *[args[k] for k in export.INPUTS[kind]])
    return {key: np.asarray(out[name]) for name, key in export.OUTPUT_KEYS[kind].items()}
  model.run = run
  model.source = f"{len(programs)} per-task folded programs of {path}"
  return model


def _hf_model(path: str):
  """serve.ServedModel whose run() calls the batch's task's own PyTorch BertModel + head."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from camtl_jax import experiment  # pylint: disable=import-outside-toplevel
  model = _served_without_params(path)
  checkpoint = experiment.resolve_model_path("minilm")
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  widths = {"classification": lambda t: len(t.labels), "regression": lambda t: 2,
            "multiple_choice": lambda t: 1, "span": lambda t: 2,
            "tagging": lambda t: len(t.labels)}
  nets = []
  for task in model.tasks:
    bert = transformers.BertModel.from_pretrained(checkpoint).eval()
    head = torch.nn.Linear(bert.config.hidden_size, widths[task.type](task)).eval()
    nets.append((task.type, bert, head))

  def run(inputs):
    kind, bert, head = nets[int(inputs["task_id"][0])]
    args = _one_task_inputs(inputs, kind == "multiple_choice")
    ids = torch.from_numpy(args["input_ids"]).long()
    shape = ids.shape
    flat = lambda x: torch.from_numpy(x).long().reshape(-1, shape[-1])  # noqa: E731
    with torch.inference_mode():
      out = bert(input_ids=flat(args["input_ids"]), token_type_ids=flat(args["token_type_ids"]),
                 attention_mask=flat(args["attention_mask"]))
      pooled = head(out.pooler_output).reshape(*shape[:-1], -1).numpy()
      tokens = head(out.last_hidden_state).numpy()
    return {"classification": lambda: {"cls_logits": pooled},
            "regression": lambda: {"regression": pooled[:, 0],
                                   "regression_log_var": pooled[:, 1]},
            "multiple_choice": lambda: {"choice_logits": pooled[..., 0]},
            "span": lambda: {"start_logits": tokens[..., 0], "end_logits": tokens[..., 1]},
            "tagging": lambda: {"tag_logits": tokens}}[kind]()
  model.run = run
  model.source = f"{len(nets)} HF PyTorch BertModels of {checkpoint}"
  return model


class PerTask:
  """One serve.Batcher per task (batches hold one task): the Batcher interface make_app uses."""

  def __init__(self, model, limits):
    from camtl_jax import serve  # pylint: disable=import-outside-toplevel
    self.batchers = [serve.Batcher(model, limits) for _ in model.tasks]

  def warm(self) -> int:
    return sum(b.warm((i,)) for i, b in enumerate(self.batchers))

  def start(self) -> None:
    for b in self.batchers:
      b.start()

  def stop(self) -> None:
    for b in self.batchers:
      b.stop()

  def submit(self, item):
    return self.batchers[item.task_id].submit(item)

  @property
  def stats(self) -> dict:
    return {k: sum(b.stats[k] for b in self.batchers) for k in self.batchers[0].stats}


def run_server(kind: str, path: str, port: int) -> None:
  """Serves `kind` (SERVERS) on 127.0.0.1:port until SIGTERM; prints 'ready' when compiled."""
  import uvicorn  # pylint: disable=import-outside-toplevel
  from camtl_jax import serve  # pylint: disable=import-outside-toplevel
  if kind in ("camtl", "one_at_a_time"):
    model = serve.load_workdir(path)
    limits = serve.Limits(**(BATCHED if kind == "camtl" else ONE_AT_A_TIME))
    batcher = serve.Batcher(model, limits)
  else:
    model = (_per_task_model if kind == "per_task" else _hf_model)(path)
    limits = serve.Limits(**BATCHED)
    batcher = PerTask(model, limits)
  start = time.perf_counter()
  programs = batcher.warm()
  batcher.start()
  print(f"ready {kind}: {programs} shapes warmed in {time.perf_counter() - start:.0f} s",
        flush=True)
  uvicorn.run(serve.make_app(model, batcher, limits), host="127.0.0.1", port=port,
              log_level="warning", access_log=False)


# ------------------------------------------------------------------------------------------------
# The clients


def request_bodies(path: str, per_task: int = 50, seed: int = 0) -> list[bytes]:
  """Single-input request bodies over the workdir's tasks (their dev examples, as camtl-predict's
  fields), shuffled: a mixed-task stream."""
  from camtl_jax import experiment, workdir  # pylint: disable=import-outside-toplevel
  from camtl_jax.tasks import registry  # pylint: disable=import-outside-toplevel
  wd = workdir.check_workdir(path)
  tasks, _ = workdir.load_task_records(wd)
  text = lambda ex: {"text": ex.texts[0], **(  # noqa: E731
      {"text_pair": ex.texts[1]} if len(ex.texts) > 1 else {})}
  fields = {
      "classification": text,
      "regression": text,
      "multiple_choice": lambda ex: {"choices": [list(c) for c in ex.choices]},
      "span": lambda ex: {"question": ex.question, "context": ex.context},
      "tagging": lambda ex: {"words": list(ex.words)},
  }
  bodies = []
  for task in tasks:
    examples = registry.load_split(task, experiment.demo_data_dir(wd), "dev")[:per_task]
    bodies += [json.dumps({"task": task.name, **fields[task.type](ex)}).encode()
               for ex in examples]
  random.Random(seed).shuffle(bodies)
  return bodies


async def _client(port: int, bodies: Sequence[bytes], start: int, deadline: float,
                  latencies: list, errors: list) -> None:
  reader, writer = await asyncio.open_connection("127.0.0.1", port)
  i = start
  while time.perf_counter() < deadline:
    body = bodies[i % len(bodies)]
    i += 7
    sent = time.perf_counter()
    writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
      if line.lower().startswith(b"content-length:"):
        length = int(line.split(b":")[1])
    await reader.readexactly(length)
    (latencies if status == 200 else errors).append(time.perf_counter() - sent)
  writer.close()


def load(port: int, bodies: Sequence[bytes], clients: int, seconds: float) -> dict:
  """N clients for `seconds`: requests/s, latency percentiles (s), errors."""
  latencies, errors = [], []

  async def main():
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*[_client(port, bodies, k, deadline, latencies, errors)
                           for k in range(clients)])
  start = time.perf_counter()
  asyncio.run(main())
  elapsed = time.perf_counter() - start
  lat = np.asarray(latencies)
  return {"clients": clients, "requests": len(lat), "errors": len(errors),
          "seconds": round(elapsed, 2), "requests_per_s": round(len(lat) / elapsed, 2),
          **{f"p{q}_s": round(float(np.percentile(lat, q)), 4) if len(lat) else None
             for q in (50, 95, 99)}}


class _RSS:
  """Peak resident memory of a process, sampled every 0.2 s in a thread."""

  def __init__(self, pid: int):
    import psutil  # pylint: disable=import-outside-toplevel
    self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()

  def _sample(self):
    while not self._stop.is_set():
      try:
        self.peak = max(self.peak, self.process.memory_info().rss)
      except Exception:  # pylint: disable=broad-except  (the process ended)
        return
      time.sleep(0.2)

  def stop(self) -> int:
    self._stop.set()
    self._thread.join()
    return self.peak


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def measure(kind: str, path: str, bodies: Sequence[bytes], clients: Sequence[int],
            seconds: float, log: Callable[[str], None] = print) -> dict:
  """Starts the `kind` server, loads it with each client count, stops it (SIGTERM)."""
  port = _free_port()
  proc = subprocess.Popen([sys.executable, "-m", "camtl_jax.cli.bench_serve", "--server", kind,
                           "--model", path, "--port", str(port)], stdout=subprocess.PIPE,
                          text=True)
  try:
    line = proc.stdout.readline()
    if not line.startswith("ready"):
      raise RuntimeError(f"the {kind} server did not start: {line!r}")
    log(line.strip())
    _wait_for_port(port)
    rss = _RSS(proc.pid)
    load(port, bodies, 1, 2.0)  # warm the HTTP path
    runs = []
    for n in clients:
      runs.append(load(port, bodies, n, seconds))
      log(f"  {kind} {n:>3} clients: {runs[-1]['requests_per_s']:7.2f} req/s, p50 "
          f"{runs[-1]['p50_s']} s, p99 {runs[-1]['p99_s']} s, errors {runs[-1]['errors']}")
    peak = rss.stop()
  finally:
    proc.terminate()
    proc.wait(timeout=120)
  return {"server": kind, "peak_rss_mib": round(peak / 2**20, 1), "runs": runs,
          "warmup": line.strip()}


def _wait_for_port(port: int, timeout: float = 60) -> None:
  end = time.time() + timeout
  while time.time() < end:
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        return
    time.sleep(0.1)
  raise RuntimeError(f"nothing listens on port {port}")


def forward_lockstep(path: str, rows: int = 64, length: int = 48, repeats: int = 10) -> dict:
  """Seconds per call of the served forward (the mixed-task program, rows of every task) and of
  one HF PyTorch BertModel (no-grad) on the same rows x length tokens, called in turn (lockstep:
  a busy moment of the shared machine hits both); medians."""
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from camtl_jax import experiment, multitask_export, serve  # pylint: disable=C0415
  model = serve.load_workdir(path)
  rng = np.random.default_rng(0)
  ids = rng.integers(1000, 5000, (rows, length)).astype(np.int32)
  ids[:, 0] = 101
  part = multitask_export.Part(0, {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
                                   "attention_mask": np.ones_like(ids)})
  inputs = multitask_export.mixed_inputs([part], model.num_choices, length)
  inputs["task_id"][:] = np.arange(rows) % len(model.tasks)  # every task in the batch
  bert = transformers.BertModel.from_pretrained(experiment.resolve_model_path("minilm")).eval()
  torch.set_num_threads(os.cpu_count() or 1)
  tensors = {k: torch.from_numpy(inputs[k]).long() for k in ("input_ids", "token_type_ids",
                                                              "attention_mask")}

  def hf():
    with torch.inference_mode():
      return bert(**tensors).last_hidden_state
  calls = {"camtl_mixed_forward": lambda: model.run(inputs), "hf_bertmodel_forward": hf}
  times = {name: [] for name in calls}
  for name, call in calls.items():
    call()  # compile / warm
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(call())
      times[name].append(time.perf_counter() - start)
  median = {name: float(np.median(t)) for name, t in times.items()}
  return {"rows": rows, "length": length, "repeats": repeats,
          **{f"{name}_s": round(t, 4) for name, t in median.items()},
          "camtl_speed_vs_hf": round(median["hf_bertmodel_forward"]
                                     / median["camtl_mixed_forward"], 3)}


def _commit() -> str:
  repo = Path(__file__).resolve().parents[2]
  head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                        text=True).stdout.strip()
  dirty = subprocess.run(["git", "status", "--porcelain", "--", "camtl_jax"], cwd=repo,
                         capture_output=True, text=True).stdout.strip()
  return head + (" (camtl_jax/ has uncommitted changes)" if dirty else "")


def markdown(result: Mapping[str, Any]) -> str:
  """The results as a markdown table per server, then the targets checked."""
  lines = [f"# camtl-serve under load\n\nCommand: `{result['command']}`  \nCommit: "
           f"{result['commit']}  \nMachine: {result['machine']}\n",
           "| server | clients | req/s | p50 (s) | p95 (s) | p99 (s) | errors | peak RSS (MiB) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for server in result["servers"]:
    for run in server["runs"]:
      lines.append(f"| {server['server']} | {run['clients']} | {run['requests_per_s']} | "
                   f"{run['p50_s']} | {run['p95_s']} | {run['p99_s']} | {run['errors']} | "
                   f"{server['peak_rss_mib']} |")
  if "forward_lockstep" in result:
    f = result["forward_lockstep"]
    lines.append(f"\nForward alone, lockstep, {f['rows']} rows x {f['length']} tokens (medians of "
                 f"{f['repeats']}): the served mixed-task forward {f['camtl_mixed_forward_s']} s, "
                 f"HF BertModel no-grad {f['hf_bertmodel_forward_s']} s: "
                 f"{f['camtl_speed_vs_hf']}x HF's speed.")
  return "\n".join(lines) + "\n"


def run(args) -> None:
  """The benchmark (or, with args.server, one server process) for cli/bench_serve.py's flags."""
  if args.server:
    run_server(args.server, args.model, args.port)
    return
  servers = [s for s in args.servers.split(",") if s]
  unknown = [s for s in servers if s not in SERVERS]
  if unknown:
    raise ValueError(f"--servers: unknown {unknown}; known: {list(SERVERS)}")
  clients = [int(c) for c in args.clients.split(",")]
  bodies = request_bodies(args.model)
  given = list(args.argv)
  # The workdir as WORKDIR: results name no machine's paths.
  command = " ".join("WORKDIR" if a == args.model else a for a in given)
  result = {"command": f"camtl-bench-serve {command}",
            "commit": _commit(), "machine": f"{os.cpu_count()} CPU cores (shared)",
            "requests": f"{len(bodies)} single-input requests, tasks mixed at random",
            "servers": []}
  if args.forward_check:
    result["forward_lockstep"] = forward_lockstep(args.model)
    print("forward (lockstep):", result["forward_lockstep"], flush=True)
  for kind in servers:
    try:
      result["servers"].append(measure(kind, args.model, bodies, clients, args.seconds))
    except Exception as e:  # pylint: disable=broad-except  (keep the other servers' numbers)
      print(f"{kind}: failed: {e!r}", flush=True)
      result.setdefault("failed", {})[kind] = repr(e)
    if args.out:  # after each server, so a partial run leaves its numbers
      Path(args.out).parent.mkdir(parents=True, exist_ok=True)
      Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
      Path(args.out + ".md").write_text(markdown(result))
  print(markdown(result))
