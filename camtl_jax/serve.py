"""An HTTP JSON server for every task of one CA-MTL model (the library behind `camtl-serve`).

  camtl-serve --model WORKDIR_OR_ARTIFACT [--host 127.0.0.1] [--port 8000]

  POST /v1/predict  {"inputs": [{"task": T, <camtl-predict's fields>}, ...]} (or one input object)
                    -> {"outputs": [<camtl-predict's JSON object, with "task">, ...],
                        "warnings": [...]}
  GET  /v1/tasks    names, types, labels, input fields, limits
  GET  /healthz     {"status": "ok"} once every program is compiled
  GET  /            a page to try every task (serve_page.py)

The model is a trained workdir (its selected checkpoint) or a multi-task artifact (camtl-export
--all-tasks); both run multitask_export.forward, the mixed-task forward, so requests of every task
share one batch. A request's inputs are checked (RequestError: 4xx JSON naming the field),
encoded as camtl-predict encodes them (input_pipeline) in a worker thread, then queued; the
batcher thread (Batcher) takes what arrived within max_wait_s, up to max_rows encoder rows,
splits it by length bucket, pads each part to one of a fixed set of shapes (a length bucket x a
row count bucket) and runs it (every task of a length bucket in one forward); the
answers are decoded as camtl-predict decodes them (predict.RECORDS). Every shape is compiled at
start-up, before the server accepts connections.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from camtl_jax import convert, evaluate, input_pipeline, multitask_export, predict
from camtl_jax.tasks import base
from camtl_jax.tasks.base import DataError, Example, Task

log = logging.getLogger(__name__)

# camtl-predict's input fields per task type (predict.RECORD_READERS reads them).
_TEXT = {"name": "text", "type": "string", "required": True}
_PAIR = {"name": "text_pair", "type": "string", "required": False}
FIELDS: dict[str, list[dict]] = {
    base.CLASSIFICATION: [_TEXT, _PAIR],
    base.REGRESSION: [_TEXT, _PAIR],
    base.MULTIPLE_CHOICE: [{"name": "premise", "type": "string", "required": False},
                           {"name": "choices", "type": "list of strings (with premise) or of "
                            "[first, second] pairs", "required": True}],
    base.SPAN: [{"name": "question", "type": "string", "required": True},
                {"name": "context", "type": "string", "required": True}],
    base.TAGGING: [{"name": "words", "type": "list of strings", "required": False},
                   {"name": "text", "type": "string (split on whitespace; when no words)",
                    "required": False}],
}


@dataclasses.dataclass(frozen=True)
class Limits:
  max_inputs: int = 64             # inputs in one request
  max_body_bytes: int = 1 << 20    # request body
  max_rows: int = 64               # encoder rows in one forward (the largest row bucket)
  max_wait_s: float = 0.005        # how long the batcher waits for more work
  batching: bool = True            # False: one request's input per forward (for comparisons)
  row_buckets: tuple[int, ...] = (1, 4, 16, 64)  # row counts a forward is padded to


# ------------------------------------------------------------------------------------------------
# The model being served


@dataclasses.dataclass
class ServedModel:
  """Tasks, tokenizer, encoding settings and run(inputs) -> outputs: the mixed-task forward
  (multitask_export INPUTS -> the model's output keys, numpy)."""
  tasks: list[Task]
  stats: list[tuple[float, float]]
  tokenizer: Any
  max_length: int
  doc_stride: int
  num_choices: int
  length_buckets: tuple[int, ...]
  run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
  source: str
  # Requests are encoded on the server's worker threads, and a fast tokenizer is not safe to
  # share between them: each call sets its truncation and stride on the one Rust tokenizer, so a
  # concurrent call with other settings (a span task's windows beside a sentence task) can
  # encode with the wrong ones. Measured: 1 of 4 runs of the eight-client test answered a span
  # question from other windows (score 0.354 against 0.384 alone) before this lock.
  tokenizer_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

  def task_id(self, name: str) -> int:
    return [t.name for t in self.tasks].index(name)


def load_workdir(path: str | Path, step: int | None = None) -> ServedModel:
  """A trained workdir's selected checkpoint, served by the jitted mixed-task forward."""
  import jax  # pylint: disable=import-outside-toplevel
  from camtl_jax import compile_cache, workdir  # pylint: disable=import-outside-toplevel
  trained = workdir.load(path, step)
  # The run's compilation cache (config.compile_cache_dir): a restarted server loads its
  # programs instead of compiling them again.
  cache = compile_cache.resolve(trained.config.get("compile_cache_dir", ""), trained.workdir)
  if cache is not None:
    compile_cache.enable(cache)
  forward = jax.jit(lambda params, inputs: multitask_export.forward(trained.model, params, inputs))
  config = trained.config
  return ServedModel(
      list(trained.tasks), list(trained.stats), trained.tokenizer, int(config.max_length),
      int(config.doc_stride), trained.num_choices,
      input_pipeline.default_buckets(config.max_length, config.bucket_step),
      lambda inputs: jax.device_get(forward(trained.params, dict(inputs))),
      f"workdir {trained.workdir} (step {trained.step})")


def load_artifact(path: str | Path, bucket_step: int = 16) -> ServedModel:
  """A multi-task artifact (camtl-export --all-tasks), served by its deserialized program."""
  import jax  # pylint: disable=import-outside-toplevel
  from camtl_jax import artifact_loader, workdir  # pylint: disable=import-outside-toplevel
  path = Path(path)
  model = artifact_loader.load(path)
  if not model.multitask:
    raise ValueError(f"{path} is a one-task artifact (camtl-export --task); serve a workdir or "
                     "an artifact written with --all-tasks")
  meta = model.meta
  call = jax.jit(model.exported.call)
  names = multitask_export.INPUTS
  return ServedModel(
      [workdir.task_from_record(r) for r in meta["tasks"]],
      [(float(r["target_mean"]), float(r["target_std"])) for r in meta["tasks"]],
      convert.load_tokenizer(path / "tokenizer"), int(meta["max_length"]),
      int(meta["doc_stride"]), int(meta["num_choices"]),
      input_pipeline.default_buckets(int(meta["max_length"]), bucket_step),
      lambda inputs: jax.device_get(call(model.weights, *[inputs[k] for k in names])),
      f"artifact {path}")


def load(path: str | Path) -> ServedModel:
  """A multi-task artifact (a folder with meta.json) or a trained workdir."""
  meta = Path(path) / "meta.json"
  return load_artifact(path) if meta.is_file() else load_workdir(path)


# ------------------------------------------------------------------------------------------------
# Requests


class RequestError(ValueError):
  """A bad request: HTTP status, the field at fault ("inputs[2].text"), a message."""

  def __init__(self, status: int, field: str | None, message: str):
    super().__init__(message)
    self.status, self.field, self.message = status, field, message

  def body(self) -> dict:
    return {"error": {"field": self.field, "message": self.message}}


@dataclasses.dataclass
class Item:
  """One input of a request, checked and encoded; `future` receives its outputs."""
  index: int
  task_id: int
  example: Example
  split: Any = None          # input_pipeline.EncodedSplit of the one example
  truncated: bool = False
  future: concurrent.futures.Future | None = None

  @property
  def size(self) -> int:     # forward examples: span windows are one each
    return int(self.split.arrays["input_ids"].shape[0])


def parse_body(body: bytes, model: ServedModel, limits: Limits) -> list[Item]:
  """The request's inputs as Items (not yet encoded); RequestError naming the field."""
  try:
    payload = json.loads(body)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RequestError(400, "body", f"malformed JSON: {e}") from None
  if isinstance(payload, dict) and "inputs" not in payload and "task" in payload:
    payload = {"inputs": [payload]}
  if not isinstance(payload, dict) or "inputs" not in payload:
    raise RequestError(422, "inputs", 'expected {"inputs": [{"task": ..., ...}, ...]} or one '
                       'input object with a "task"')
  inputs = payload["inputs"]
  if not isinstance(inputs, list) or not inputs:
    raise RequestError(422, "inputs", "expected a non-empty list of input objects")
  if len(inputs) > limits.max_inputs:
    raise RequestError(413, "inputs", f"{len(inputs)} inputs in one request; the limit is "
                       f"{limits.max_inputs}")
  return [_parse_input(i, record, model) for i, record in enumerate(inputs)]


def _parse_input(index: int, record: Any, model: ServedModel) -> Item:
  where = f"inputs[{index}]"
  if not isinstance(record, dict):
    raise RequestError(422, where, f"expected an object, got {type(record).__name__}")
  name = record.get("task")
  names = [t.name for t in model.tasks]
  if not isinstance(name, str):
    raise RequestError(422, f"{where}.task", f"missing or not a string; one of {names}")
  if name not in names:
    raise RequestError(422, f"{where}.task", f"unknown task {name!r}; this model serves {names}")
  task_id = names.index(name)
  try:
    example = predict.RECORD_READERS[model.tasks[task_id].type](record, where, None)
  except DataError as e:
    field = f"{where}.{e.field}" if e.field else where
    raise RequestError(422, field, str(e).split(": ", 1)[-1]) from None
  return Item(index, task_id, example)


def encode(model: ServedModel, item: Item) -> Item:
  """Tokenises the item as camtl-predict does (span contexts in doc-stride windows)."""
  task = model.tasks[item.task_id]
  stats = model.stats[item.task_id] if task.type == base.REGRESSION else None
  with model.tokenizer_lock:
    try:
      item.split = input_pipeline.encode_split(task, [item.example], model.tokenizer,
                                               model.max_length, None, "serve",
                                               doc_stride=model.doc_stride, target_stats=stats)
    except DataError as e:  # e.g. a multiple-choice input with the wrong number of choices
      where = f"inputs[{item.index}]"
      raise RequestError(422, f"{where}.{e.field}" if e.field else where,
                         str(e).split(": ", 1)[-1]) from None
    if task.type != base.SPAN:
      lengths = input_pipeline.token_lengths(task, [item.example], model.tokenizer)
      item.truncated = bool(lengths[0] > model.max_length)
  return item


def decode(model: ServedModel, item: Item, outputs: Mapping[str, np.ndarray]) -> dict:
  """The item's camtl-predict record from its forward outputs (one entry per split row)."""
  split = item.split
  rows = [np.arange(split.num_rows)]
  outs = [dict(outputs)]
  record = predict.RECORDS[split.task.type](split, rows, outs,
                                            evaluate.predictions(split, rows, outs))[0]
  example_id = item.example.example_id if item.example.example_id is not None else item.index
  return {"task": split.task.name, "id": example_id, **record, "truncated": item.truncated}


# ------------------------------------------------------------------------------------------------
# The batcher


@dataclasses.dataclass
class _Piece:
  """Examples [start, stop) of an item's split (an item larger than a batch runs in pieces)."""
  item: Item
  start: int
  stop: int
  rows: int


class Batcher:
  """A thread that runs queued items in mixed-task batches (module docstring).

  submit(item) -> item.future, resolved with the item's outputs {key: [n, ...]} (n: its split's
  rows) or an exception. Every forward's shape is (length bucket, row bucket): warm() compiles
  them all.
  """

  def __init__(self, model: ServedModel, limits: Limits):
    self.model, self.limits = model, limits
    self.queue: queue.Queue = queue.Queue()
    self.pending: dict[int, list] = {}
    self.stats = {"batches": 0, "examples": 0, "rows": 0}
    self._thread = threading.Thread(target=self._loop, name="camtl-batcher", daemon=True)
    self._stop = threading.Event()
    self._carry: _Piece | None = None

  def start(self) -> None:
    self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    self.queue.put(None)
    self._thread.join(timeout=60)

  def warm(self, task_ids: Sequence[int] = (0,)) -> int:
    """Runs every (length, rows) shape once (for each of task_ids: a model that runs one task
    per program compiles each); returns how many shapes ran."""
    count = 0
    for length in self.model.length_buckets:
      for rows in self.limits.row_buckets:
        for task_id in task_ids:
          inputs = multitask_export.mixed_inputs([], self.model.num_choices, length, rows, rows)
          inputs["task_id"][:] = task_id
          self.model.run(inputs)
          count += 1
    return count

  def submit(self, item: Item) -> concurrent.futures.Future:
    item.future = concurrent.futures.Future()
    per_example = self._rows_per_example(item)
    n = item.size
    step = max(1, self.limits.max_rows // per_example)
    pieces = [_Piece(item, s, min(n, s + step), (min(n, s + step) - s) * per_example)
              for s in range(0, n, step)]
    self.pending[id(item)] = [None] * len(pieces)
    for piece in pieces:
      self.queue.put(piece)
    return item.future

  def _rows_per_example(self, item: Item) -> int:
    ids = item.split.arrays["input_ids"]
    return int(ids.shape[1]) if ids.ndim == 3 else 1

  def _collect(self) -> list[_Piece]:
    """The next batch: the first piece waiting (blocking), then whatever arrives within
    max_wait_s while the rows fit max_rows (a piece that does not fit opens the next batch)."""
    first, self._carry = (self._carry, None) if self._carry else (self.queue.get(), None)
    if first is None:
      return []
    batch, rows = [first], first.rows
    if not self.limits.batching:
      return batch
    deadline = time.monotonic() + self.limits.max_wait_s
    while rows < self.limits.max_rows:
      try:
        piece = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
      except queue.Empty:
        break
      if piece is None or rows + piece.rows > self.limits.max_rows:
        self._carry = piece
        break
      batch.append(piece)
      rows += piece.rows
    return batch

  def _loop(self) -> None:
    while not self._stop.is_set():
      batch = self._collect()
      if not batch:
        continue
      try:
        self._run(batch)
      except Exception as e:  # pylint: disable=broad-except
        log.exception("batch of %d pieces failed", len(batch))
        for piece in batch:
          if not piece.item.future.done():
            piece.item.future.set_exception(e)

  def _run(self, batch: Sequence[_Piece]) -> None:
    """Runs the batch as one forward per length bucket among its pieces (a short text never
    pays for a long one's padding)."""
    by_length: dict[int, list[tuple[_Piece, multitask_export.Part]]] = {}
    for piece in batch:
      part = multitask_export.Part(piece.item.task_id, {
          k: v[piece.start:piece.stop] for k, v in piece.item.split.arrays.items()
          if k in multitask_export.ROW_KEYS or k == "context_mask"})
      length = input_pipeline.bucket_length([multitask_export.used_length([part])],
                                            self.model.length_buckets)
      by_length.setdefault(length, []).append((piece, part))
    for length, group in sorted(by_length.items()):
      self._forward(length, group)

  def _forward(self, length: int, group: Sequence[tuple[_Piece, multitask_export.Part]]) -> None:
    rows = sum(piece.rows for piece, _ in group)
    size = input_pipeline.bucket_length([rows], self.limits.row_buckets)
    inputs = multitask_export.mixed_inputs([part for _, part in group], self.model.num_choices,
                                           length, size, size)
    outputs = self.model.run(inputs)
    self.stats["batches"] += 1
    self.stats["rows"] += rows
    start = 0
    for piece, _ in group:
      n = piece.stop - piece.start
      self._deliver(piece, {k: np.asarray(v[start:start + n]) for k, v in outputs.items()})
      start += n
    self.stats["examples"] += start

  def _deliver(self, piece: _Piece, outputs: dict[str, np.ndarray]) -> None:
    slots = self.pending[id(piece.item)]
    step = max(1, self.limits.max_rows // self._rows_per_example(piece.item))
    slots[piece.start // step] = outputs
    if all(s is not None for s in slots):
      del self.pending[id(piece.item)]
      piece.item.future.set_result(_concat(slots))


TOKEN_KEYS = ("start_logits", "end_logits", "tag_logits")  # outputs with a token axis (axis 1)


def _concat(pieces: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """An item's outputs from its pieces, in order; token axes padded (-1e9, never read: each row
  reads only its own tokens) to the longest piece's length bucket."""
  if len(pieces) == 1:
    return dict(pieces[0])
  out = {}
  for key in pieces[0]:
    arrays = [p[key] for p in pieces]
    if key in TOKEN_KEYS:
      length = max(a.shape[1] for a in arrays)
      arrays = [np.pad(a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2),
                       constant_values=-1e9) for a in arrays]
    out[key] = np.concatenate(arrays)
  return out


# ------------------------------------------------------------------------------------------------
# The app


def tasks_info(model: ServedModel, limits: Limits) -> dict:
  return {"tasks": [{"name": t.name, "type": t.type, "labels": list(t.labels),
                     "num_choices": t.num_choices, "fields": FIELDS[t.type]} for t in model.tasks],
          "limits": {"max_inputs": limits.max_inputs, "max_body_bytes": limits.max_body_bytes,
                     "max_length_tokens": model.max_length},
          "model": model.source}


async def _read_body(request, limit: int) -> bytes:
  declared = request.headers.get("content-length")
  if declared is not None and declared.isdigit() and int(declared) > limit:
    raise RequestError(413, "body", f"{declared} bytes; the limit is {limit}")
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise RequestError(413, "body", f"over {limit} bytes; the limit is {limit}")
    chunks.append(chunk)
  return b"".join(chunks)


def make_app(model: ServedModel, batcher: Batcher, limits: Limits):
  """The Starlette app (module docstring); the batcher must be started."""
  from starlette.applications import Starlette  # pylint: disable=import-outside-toplevel
  from starlette.concurrency import run_in_threadpool  # pylint: disable=import-outside-toplevel
  from starlette import responses  # pylint: disable=import-outside-toplevel
  from starlette.routing import Route  # pylint: disable=import-outside-toplevel
  from camtl_jax import serve_page  # pylint: disable=import-outside-toplevel
  info = tasks_info(model, limits)

  def prepare(body: bytes) -> list[Item]:
    return [encode(model, item) for item in parse_body(body, model, limits)]

  async def predict_endpoint(request):
    try:
      items = await run_in_threadpool(prepare, await _read_body(request, limits.max_body_bytes))
    except RequestError as e:
      return responses.JSONResponse(e.body(), status_code=e.status)
    futures = [asyncio.wrap_future(batcher.submit(item)) for item in items]
    try:
      results = await asyncio.gather(*futures)
    except Exception as e:  # pylint: disable=broad-except
      log.exception("prediction failed")
      return responses.JSONResponse({"error": {"field": None, "message": f"internal error: {e}"}},
                          status_code=500)
    outputs = await run_in_threadpool(
        lambda: [decode(model, item, out) for item, out in zip(items, results)])
    warnings = [f"inputs[{o_index}]: longer than {model.max_length} tokens, truncated"
                for o_index, o in enumerate(outputs) if o["truncated"]]
    return responses.JSONResponse({"outputs": outputs, "warnings": warnings})

  async def tasks_endpoint(request):
    return responses.JSONResponse(info)

  async def health(request):
    return responses.JSONResponse({"status": "ok", **batcher.stats})

  async def page(request):
    return responses.HTMLResponse(serve_page.PAGE)

  return Starlette(routes=[
      Route("/v1/predict", predict_endpoint, methods=["POST"]),
      Route("/v1/tasks", tasks_endpoint, methods=["GET"]),
      Route("/healthz", health, methods=["GET"]),
      Route("/", page, methods=["GET"]),
  ])


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits = Limits(), ready: Callable[[str], None] = print) -> None:
  """Loads the model, compiles every shape, then serves until SIGTERM (returns once uvicorn has
  answered the requests in flight) or Ctrl-C (the same, then KeyboardInterrupt)."""
  import signal  # pylint: disable=import-outside-toplevel
  import uvicorn  # pylint: disable=import-outside-toplevel
  # uvicorn re-raises the signal it stopped on once it has drained; SIGTERM then lands here, so
  # a drained stop is a normal return (exit 0).
  signal.signal(signal.SIGTERM, lambda signum, frame: log.info("stopped by SIGTERM"))
  model = load(model_path)
  batcher = Batcher(model, limits)
  start = time.perf_counter()
  count = batcher.warm()
  log.info("compiled %d programs in %.1f s", count, time.perf_counter() - start)
  batcher.start()
  app = make_app(model, batcher, limits)
  config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
  server = uvicorn.Server(config)

  async def run():
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
      await asyncio.sleep(0.05)
    if server.started:
      ready(f"camtl-serve: {model.source}: {len(model.tasks)} tasks, {count} programs compiled; "
            f"ready on http://{host}:{port}/")
    await task
  try:
    asyncio.run(run())
  finally:
    batcher.stop()
