"""Tokenisation with a cache, per-task encoded arrays, MT-U candidate sets and eval batches.

The pipeline is plain numpy (no JAX, no TF): the train loop turns the host-local arrays it gets here
into global arrays with jax.make_array_from_process_local_data.

  examples --encode_split--> EncodedSplit (arrays padded to max_length, cached as .npz)
  EncodedSplit x T --CandidateLoader.candidates(step)--> [T, b_local, ...] candidate batch (MT-U)
  EncodedSplit --eval_batches--> [B_local, ...] batches + row indices for post-processing

The batch format is docs/design/batch_format.md. Data order is a pure function of (seed, step)
(DESIGN 4.4): `candidate_indices` computes a step's candidates without replaying earlier steps, so a
resumed run, and every host of a pod, sees exactly the same candidates.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import tempfile
from typing import Any, Callable, Iterator, Mapping, Sequence

import logging
import numpy as np

from camtl_jax.tasks import base
from camtl_jax.tasks.base import DataError, Example, Task

log = logging.getLogger(__name__)

# Bump when the encoders or the stored layout change, so stale caches are not reused.
_CACHE_VERSION = 1
# Span tasks: questions longer than this many tokens are cut (the original BERT SQuAD setting), so
# every window keeps room for context.
MAX_QUERY_LENGTH = 64

Tokenizer = Any  # a transformers fast tokenizer; typed loosely so this module imports without it.


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
  """A hash of the tokenizer's full JSON state (vocab, normaliser, templates) and class name."""
  state = json.loads(tokenizer.backend_tokenizer.to_str())
  # Truncation / padding are per-call settings the backend remembers from the last call.
  state.pop("truncation", None)
  state.pop("padding", None)
  blob = type(tokenizer).__name__ + json.dumps(state, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Encoders, one per task type
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
  """Settings shared by the encoders.

  max_length: padded / truncated sequence length L_max.
  doc_stride: span tasks: tokens between the starts of consecutive context windows (the original
    BERT meaning; consecutive windows overlap by window_size - doc_stride tokens when positive).
  target_stats: regression: (mean, std) to standardise with; None computes them from these
    examples (the train split).
  """
  max_length: int
  doc_stride: int = 128
  target_stats: tuple[float, float] | None = None


@dataclasses.dataclass
class _Encoded:
  arrays: dict[str, np.ndarray]
  truncated: np.ndarray  # bool [num_examples]
  has_labels: bool
  target_mean: float = 0.0
  target_std: float = 1.0


def _data_error(ex: Example, field: str, message: str) -> DataError:
  return DataError.at(ex.guid, field, message)


def _labels_present(examples: Sequence[Example], present: Callable[[Example], bool],
                    field: str) -> bool:
  """True when every example is labelled, False when none is (a test split); mixed is an error."""
  flags = [present(ex) for ex in examples]
  if all(flags):
    return True
  if any(flags):
    raise _data_error(examples[flags.index(False)], field, "missing label in a labelled split")
  return False


def _tokenize(tokenizer: Tokenizer, first: list, second: list | None, max_length: int,
              **kwargs) -> tuple[dict[str, np.ndarray], Any]:
  """One batch call of the fast tokenizer; returns (int32 arrays [n, L], BatchEncoding).

  The tokenizer returns unpadded lists and we pad here: letting it pad and build numpy arrays
  costs about as much again as the tokenisation itself.
  """
  enc = tokenizer(first, second, max_length=max_length, return_token_type_ids=True,
                  return_attention_mask=False, **kwargs)
  lengths = np.fromiter(map(len, enc["input_ids"]), np.int64, len(enc["input_ids"]))
  valid = np.arange(max_length) < lengths[:, None]
  arrays = {"input_ids": _pad(enc["input_ids"], valid, 0),
            "token_type_ids": _pad(enc["token_type_ids"], valid, 0),
            "attention_mask": valid.astype(np.int32)}
  return arrays, enc


def _pad(lists: Sequence[Sequence], valid: np.ndarray, fill: int) -> np.ndarray:
  """Ragged per-row lists -> int32 [n, L] padded with `fill` ([n, L, 2] for lists of pairs).

  valid: bool [n, L], True on the first len(row) positions of each row. None items become fill
  (sequence_ids / word_ids mark special tokens with None).
  """
  items = itertools.chain.from_iterable(lists)
  count = int(valid.sum())
  first = next(itertools.chain.from_iterable(lists), None)
  if isinstance(first, (tuple, list)):  # offsets: (start, end) per token
    flat = np.fromiter(items, np.dtype((np.int32, 2)), count)
  else:
    flat = np.fromiter((fill if x is None else x for x in items), np.int32, count)
  out = np.full(valid.shape + flat.shape[1:], fill, np.int32)
  out[valid] = flat
  return out


def _overflowed(enc: Any) -> np.ndarray:
  """bool [n]: which encodings lost tokens to truncation (the Rust encoding keeps the overflow)."""
  return np.array([len(e.overflowing) > 0 for e in enc.encodings], bool)


def _encode_texts(task: Task, examples: Sequence[Example], tokenizer: Tokenizer,
                  max_length: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """1 or 2 segments per example -> (arrays [N, L_max], truncated [N]); longest-first truncation."""
  num_segments = len(examples[0].texts)
  for ex in examples:
    if len(ex.texts) != num_segments or not 1 <= num_segments <= 2:
      raise _data_error(ex, "texts", f"expected 1 or 2 text segments like the first example of "
                        f"{task.name}, got {len(ex.texts)}")
  first = [ex.texts[0] for ex in examples]
  second = [ex.texts[1] for ex in examples] if num_segments == 2 else None
  arrays, enc = _tokenize(tokenizer, first, second, max_length, truncation="longest_first")
  return arrays, _overflowed(enc)


def _encode_classification(task: Task, examples: Sequence[Example], tokenizer: Tokenizer,
                           opts: EncodeOptions) -> _Encoded:
  """Adds label int32 [N]: the class index of the label string."""
  arrays, truncated = _encode_texts(task, examples, tokenizer, opts.max_length)
  has_labels = _labels_present(examples, lambda ex: ex.label is not None, "label")
  index = {name: i for i, name in enumerate(task.labels)}
  labels = np.zeros(len(examples), np.int32)
  for i, ex in enumerate(examples if has_labels else ()):
    if str(ex.label) not in index:
      raise _data_error(ex, "label", f"unknown label {ex.label!r} for {task.name}; expected one "
                        f"of {list(task.labels)}")
    labels[i] = index[str(ex.label)]
  arrays["label"] = labels
  return _Encoded(arrays, truncated, has_labels)


def _regression_targets(examples: Sequence[Example]) -> np.ndarray:
  """float64 [N] raw targets; a label that is not a finite number is a DataError."""
  out = np.zeros(len(examples), np.float64)
  for i, ex in enumerate(examples):
    try:
      out[i] = float(ex.label)
    except (TypeError, ValueError):
      raise _data_error(ex, "label", f"regression target {ex.label!r} is not a number") from None
    if not np.isfinite(out[i]):
      raise _data_error(ex, "label", f"regression target {ex.label!r} is not finite")
  return out


def _encode_regression(task: Task, examples: Sequence[Example], tokenizer: Tokenizer,
                       opts: EncodeOptions) -> _Encoded:
  """Adds target float32 [N], standardised with the train mean/std (kept on the EncodedSplit)."""
  arrays, truncated = _encode_texts(task, examples, tokenizer, opts.max_length)
  has_labels = _labels_present(examples, lambda ex: ex.label is not None, "label")
  raw = _regression_targets(examples) if has_labels else np.zeros(len(examples))
  if opts.target_stats is not None:
    mean, std = opts.target_stats
  elif has_labels:
    mean, std = float(raw.mean()), float(raw.std())
  else:
    raise ValueError(f"{task.name}: an unlabelled split needs target_stats from the train split")
  std = std if std > 0 else 1.0  # a constant target: keep it finite, the loss is 0 anyway
  arrays["target"] = ((raw - mean) / std).astype(np.float32) if has_labels else raw.astype(
      np.float32)
  return _Encoded(arrays, truncated, has_labels, float(mean), float(std))


def _choice_label(ex: Example, num_choices: int) -> int:
  try:
    label = int(ex.label)
  except (TypeError, ValueError):
    raise _data_error(ex, "label", f"choice label {ex.label!r} is not an integer") from None
  if not 0 <= label < num_choices:
    raise _data_error(ex, "label", f"choice label {label} outside 0..{num_choices - 1}")
  return label


def _encode_multiple_choice(task: Task, examples: Sequence[Example], tokenizer: Tokenizer,
                            opts: EncodeOptions) -> _Encoded:
  """Each choice a (first, second) pair -> arrays [N, C, L_max]; length = longest choice."""
  num_choices = task.num_choices
  for ex in examples:
    if len(ex.choices) != num_choices:
      raise _data_error(ex, "choices", f"{task.name} has {num_choices} choices, got "
                        f"{len(ex.choices)}")
  first = [c[0] for ex in examples for c in ex.choices]
  second = [c[1] for ex in examples for c in ex.choices]
  flat, enc = _tokenize(tokenizer, first, second, opts.max_length, truncation="longest_first")
  n = len(examples)
  arrays = {k: v.reshape(n, num_choices, opts.max_length) for k, v in flat.items()}
  truncated = _overflowed(enc).reshape(n, num_choices).any(axis=1)
  has_labels = _labels_present(examples, lambda ex: ex.label is not None, "label")
  arrays["label"] = np.array([_choice_label(ex, num_choices) if has_labels else 0
                              for ex in examples], np.int32)
  return _Encoded(arrays, truncated, has_labels)


def _cap_questions(questions: list[str], tokenizer: Tokenizer,
                   max_query: int) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Cuts questions longer than max_query tokens at a token boundary.

  Returns (questions, token lengths int [N], cut bool [N]).
  """
  enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
  lengths = np.array([len(ids) for ids in enc["input_ids"]], np.int64)
  cut = lengths > max_query
  if cut.any():
    questions = list(questions)
    for i in np.flatnonzero(cut):
      questions[i] = questions[i][:enc["offset_mapping"][i][max_query - 1][1]]
    enc = tokenizer(questions, add_special_tokens=False)
    lengths = np.array([len(ids) for ids in enc["input_ids"]], np.int64)
  return questions, lengths, cut


def _span_windows(questions: list[str], contexts: list[str], tokenizer: Tokenizer,
                  max_length: int, overlap: int) -> dict[str, np.ndarray]:
  """Windows of (question, context) pairs with `overlap` context tokens shared by neighbours.

  Returns input_ids/token_type_ids/attention_mask [W, L], offsets [W, L, 2] (-1 off-context),
  context bool [W, L], sample int [W] (index into the given lists).
  """
  arrays, enc = _tokenize(tokenizer, questions, contexts, max_length, truncation="only_second",
                          stride=overlap, return_overflowing_tokens=True,
                          return_offsets_mapping=True)
  valid = arrays["attention_mask"] == 1
  seq = _pad([enc.sequence_ids(w) for w in range(len(valid))], valid, -1)
  context = seq == 1
  arrays["offsets"] = np.where(context[..., None], _pad(enc["offset_mapping"], valid, -1), -1)
  arrays["context"] = context
  arrays["sample"] = np.asarray(enc["overflow_to_sample_mapping"], np.int64)
  return arrays


def _answer_tokens(examples: Sequence[Example], example_index: np.ndarray, offsets: np.ndarray,
                   context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Token positions [W] of each window's first gold answer; 0 ([CLS]) if outside the window."""
  has = np.array([bool(examples[i].answers) for i in example_index])
  char_start = np.array([examples[i].answers[0][1] if examples[i].answers else 0
                         for i in example_index], np.int64)
  char_end = char_start + np.array([len(examples[i].answers[0][0]) if examples[i].answers else 0
                                    for i in example_index], np.int64)
  length = context.shape[1]
  first_ctx = np.argmax(context, axis=1)
  last_ctx = length - 1 - np.argmax(context[:, ::-1], axis=1)
  rows = np.arange(len(example_index))
  inside = (has & (char_end > char_start) & (offsets[rows, first_ctx, 0] <= char_start)
            & (offsets[rows, last_ctx, 1] >= char_end))
  # First context token ending after the answer start; last context token starting before its end.
  start = np.argmax(context & (offsets[..., 1] > char_start[:, None]), axis=1)
  ends_before = context & (offsets[..., 0] < char_end[:, None])
  end = length - 1 - np.argmax(ends_before[:, ::-1], axis=1)
  return np.where(inside, start, 0).astype(np.int32), np.where(inside, end, 0).astype(np.int32)


def _encode_span(task: Task, examples: Sequence[Example], tokenizer: Tokenizer,
                 opts: EncodeOptions) -> _Encoded:
  """Question + context windows [W, L_max] with doc stride, offsets and answer token positions.

  The tokenizer's `stride` is the overlap between windows and must be smaller than the context
  room, which depends on the question's length; so examples are grouped by question length and
  each group is one batch call with its own overlap = max(0, room - doc_stride).
  """
  specials = tokenizer.num_special_tokens_to_add(pair=True)
  max_query = min(MAX_QUERY_LENGTH, (opts.max_length - specials) // 2)
  if max_query < 1:
    raise ValueError(f"max_length {opts.max_length} is too short for question/context windows")
  questions, q_lengths, truncated = _cap_questions(
      [ex.question for ex in examples], tokenizer, max_query)
  room = opts.max_length - specials - q_lengths
  overlap = np.maximum(0, room - opts.doc_stride)
  pieces = []
  for value in np.unique(overlap):
    idx = np.flatnonzero(overlap == value)
    piece = _span_windows([questions[i] for i in idx], [examples[i].context for i in idx],
                          tokenizer, opts.max_length, int(value))
    piece["example_index"] = idx[piece.pop("sample")]
    pieces.append(piece)
  merged = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
  # Back to example order; a stable sort keeps each example's windows in context order.
  order = np.argsort(merged["example_index"], kind="stable")
  arrays = {k: v[order] for k, v in merged.items()}
  context = arrays.pop("context")
  # A labelled split may hold unanswerable questions (SQuAD 2.0 / ReCoRD style): they target [CLS].
  has_labels = any(bool(ex.answers) for ex in examples)
  if has_labels:
    start, end = _answer_tokens(examples, arrays["example_index"], arrays["offsets"], context)
  else:
    start = end = np.zeros(len(context), np.int32)
  arrays["start_position"], arrays["end_position"] = start, end
  # Position 0 ([CLS]) is the target when the answer is not in a window, so the loss must see it;
  # decoding reads answers from `offsets`, which are -1 there.
  context[:, 0] = True
  arrays["context_mask"] = context.astype(np.int32)
  arrays["example_index"] = arrays["example_index"].astype(np.int32)
  return _Encoded(arrays, truncated, has_labels)


def _tag_indices(task: Task, examples: Sequence[Example]) -> np.ndarray:
  """int32 [N, max_words]: tag index per word (-1 past the sentence end)."""
  index = {name: i for i, name in enumerate(task.labels)}
  out = np.full((len(examples), max(len(ex.words) for ex in examples)), -1, np.int32)
  for i, ex in enumerate(examples):
    if len(ex.tags) != len(ex.words):
      raise _data_error(ex, "tags", f"{len(ex.words)} words but {len(ex.tags)} tags")
    for j, tag in enumerate(ex.tags):
      if tag not in index:
        raise _data_error(ex, "tags", f"unknown tag {tag!r} for {task.name}; expected one of "
                          f"{list(task.labels)}")
      out[i, j] = index[tag]
  return out


def _encode_tagging(task: Task, examples: Sequence[Example], tokenizer: Tokenizer,
                    opts: EncodeOptions) -> _Encoded:
  """Pre-split words -> arrays [N, L_max]; only the first sub-token of each word is labelled."""
  for ex in examples:
    if not ex.words:
      raise _data_error(ex, "words", "empty sentence")
  arrays, enc = _tokenize(tokenizer, [list(ex.words) for ex in examples], None, opts.max_length,
                          truncation=True, is_split_into_words=True)
  word_ids = _pad([enc.word_ids(i) for i in range(len(examples))],
                  arrays["attention_mask"] == 1, -1)
  previous = np.concatenate([np.full((len(examples), 1), -1, np.int32), word_ids[:, :-1]], 1)
  first = (word_ids >= 0) & (word_ids != previous)
  arrays["word_ids"] = np.where(first, word_ids, -1).astype(np.int32)
  has_labels = _labels_present(examples, lambda ex: bool(ex.tags), "tags")
  if has_labels:
    tags = np.take_along_axis(_tag_indices(task, examples), np.maximum(word_ids, 0), axis=1)
    arrays["token_labels"] = np.where(first, tags, -1).astype(np.int32)
  else:
    arrays["token_labels"] = np.full_like(word_ids, -1)
  return _Encoded(arrays, _overflowed(enc), has_labels)


Encoder = Callable[[Task, Sequence[Example], Tokenizer, EncodeOptions], _Encoded]
ENCODERS: dict[str, Encoder] = {
    base.CLASSIFICATION: _encode_classification,
    base.REGRESSION: _encode_regression,
    base.MULTIPLE_CHOICE: _encode_multiple_choice,
    base.SPAN: _encode_span,
    base.TAGGING: _encode_tagging,
}


def _lengths(tokenizer: Tokenizer, first: list, second: list | None = None, **kwargs) -> np.ndarray:
  enc = tokenizer(first, second, truncation=False, return_attention_mask=False,
                  return_token_type_ids=False, verbose=False, **kwargs)
  return np.array([len(ids) for ids in enc["input_ids"]], np.int64)


def _texts_lengths(examples: Sequence[Example], tokenizer: Tokenizer) -> np.ndarray:
  pair = len(examples[0].texts) == 2
  return _lengths(tokenizer, [ex.texts[0] for ex in examples],
                  [ex.texts[1] for ex in examples] if pair else None)


def _choices_lengths(examples: Sequence[Example], tokenizer: Tokenizer) -> np.ndarray:
  counts = [len(ex.choices) for ex in examples]
  flat = _lengths(tokenizer, [c[0] for ex in examples for c in ex.choices],
                  [c[1] for ex in examples for c in ex.choices])
  return np.maximum.reduceat(flat, np.cumsum([0] + counts[:-1])) if flat.size else flat


# Untruncated token counts per example, with special tokens: what max_length has to hold.
_LENGTH_FNS: dict[str, Callable[[Sequence[Example], Tokenizer], np.ndarray]] = {
    base.CLASSIFICATION: _texts_lengths,
    base.REGRESSION: _texts_lengths,
    base.MULTIPLE_CHOICE: _choices_lengths,
    base.SPAN: lambda exs, tok: _lengths(tok, [ex.question for ex in exs],
                                         [ex.context for ex in exs]),
    base.TAGGING: lambda exs, tok: _lengths(tok, [list(ex.words) for ex in exs],
                                            is_split_into_words=True),
}


def token_lengths(task: Task, examples: Sequence[Example], tokenizer: Tokenizer) -> np.ndarray:
  """int64 [N]: untruncated tokens per example (longest choice; question + whole context)."""
  if not examples:
    return np.zeros(0, np.int64)
  return _LENGTH_FNS[task.type](examples, tokenizer)


# ----------------------------------------------------------------------------------------------
# Encoded splits and their cache
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class EncodedSplit:
  """One task's split, tokenised: the arrays of docs/design/batch_format.md padded to max_length.

  arrays: input_ids / token_type_ids / attention_mask [N, L_max] ([N, C, L_max] for multiple
    choice), length [N], example_index [N], plus the task type's own keys (label, target,
    start_position/end_position/context_mask/offsets, token_labels/word_ids). N counts rows
    (windows for span tasks), num_examples counts source examples.
  num_truncated: source examples that lost tokens to max_length (span: questions cut).
  target_mean / target_std: regression standardisation (prediction = output * std + mean).
  examples: the source examples, for evaluation post-processing.
  """
  task: Task
  split: str
  arrays: dict[str, np.ndarray]
  num_truncated: int
  num_examples: int
  has_labels: bool = True
  target_mean: float = 0.0
  target_std: float = 1.0
  max_length: int = 0
  examples: Sequence[Example] | None = None

  @property
  def num_rows(self) -> int:
    return len(self.arrays["length"])

  @property
  def lengths(self) -> np.ndarray:
    """int32 [N] tokens per row (longest choice for multiple choice)."""
    return self.arrays["length"]


def _examples_hash(examples: Sequence[Example]) -> str:
  h = hashlib.sha256()
  for ex in examples:
    h.update(repr(ex).encode())
  return h.hexdigest()[:16]


def _cache_path(cache_dir: str, task: Task, split: str, key: dict[str, Any]) -> str:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
  safe_name = task.name.replace("/", "__")
  return os.path.join(cache_dir, f"{safe_name}.{split}.{digest}.npz")


def _save_cache(path: str, split: EncodedSplit) -> None:
  """Writes arrays + metadata to a temporary file and renames it: readers never see half files."""
  meta = {"num_truncated": split.num_truncated, "num_examples": split.num_examples,
          "has_labels": split.has_labels, "target_mean": split.target_mean,
          "target_std": split.target_std}
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, __meta__=np.array(json.dumps(meta)), **split.arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _load_cache(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
  """(arrays, metadata), or None when the file is missing or unreadable (then re-encode)."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__meta__")))
  except Exception as e:  # pylint: disable=broad-except  (any corruption means: encode again)
    log.warning("Ignoring unreadable token cache %s (%s); re-encoding.", path, e)
    return None
  return arrays, meta


def encode_split(task: Task, examples: Sequence[Example], tokenizer: Tokenizer, max_length: int,
                 cache_dir: str | os.PathLike | None, split: str, doc_stride: int = 128,
                 target_stats: tuple[float, float] | None = None) -> EncodedSplit:
  """Tokenises one split of a task, or loads it from the cache.

  Args:
    task: the Task; its type picks the encoder.
    examples: the split's Examples (registry.load_split).
    tokenizer: a fast tokenizer (convert.load_tokenizer).
    max_length: L_max; longer inputs are truncated longest-first and counted.
    cache_dir: directory of .npz caches, or None for no cache. The cache key covers the task
      (name, type, labels, choices), split, tokenizer fingerprint, max_length, doc_stride,
      target_stats and a hash of the examples, so any change re-encodes.
    split: split name, for the cache file name and messages.
    doc_stride: span tasks: tokens between consecutive window starts.
    target_stats: regression: (mean, std) of the train split; None computes them from `examples`
      (pass the train EncodedSplit's target_mean/target_std for dev and test).
  Returns:
    EncodedSplit with arrays as in docs/design/batch_format.md.
  """
  if not examples:
    raise ValueError(f"{task.name} {split}: no examples to encode")
  if task.type not in ENCODERS:
    raise ValueError(f"{task.name}: unknown task type {task.type!r}; known: {list(ENCODERS)}")
  if task.type == base.REGRESSION and target_stats is None and split != "train":
    log.warning("%s %s: standardising with this split's own mean/std; pass the train split's "
                    "target_stats so outputs share the train scale", task.name, split)
  opts = EncodeOptions(max_length, doc_stride, target_stats)
  path = None
  if cache_dir is not None:
    key = {"version": _CACHE_VERSION, "task": task.name, "type": task.type,
           "labels": list(task.labels), "num_choices": task.num_choices, "split": split,
           "tokenizer": tokenizer_fingerprint(tokenizer), "max_length": max_length,
           # Only the settings a task type uses, so e.g. a new doc_stride keeps GLUE caches.
           "doc_stride": doc_stride if task.type == base.SPAN else None,
           "target_stats": target_stats if task.type == base.REGRESSION else None,
           "examples": _examples_hash(examples)}
    path = _cache_path(os.fspath(cache_dir), task, split, key)
    cached = _load_cache(path)
    if cached is not None:
      arrays, meta = cached
      log.info("%s %s: loaded %d rows from token cache %s (%d of %d examples truncated to "
                   "%d tokens)", task.name, split, len(arrays["length"]), path,
                   meta["num_truncated"], meta["num_examples"], max_length)
      return EncodedSplit(task, split, arrays, max_length=max_length, examples=examples, **meta)
  result = _encode(task, examples, tokenizer, opts, split)
  if path is not None and _deferred is not None:
    _deferred.append((path, result))
  elif path is not None:
    _save_cache(path, result)
  return result


# The cache files encode_split would write, kept while deferred_cache_writes is active.
_deferred: list[tuple[str, EncodedSplit]] | None = None


@contextlib.contextmanager
def deferred_cache_writes() -> Iterator[list[tuple[str, EncodedSplit]]]:
  """Within it, encode_split keeps the cache files it would write in the yielded list of
  (path, split) instead of writing them; write_caches(list) writes them. For a caller that checks
  the encoded data before writing anything (train: a run refused for other row counts, e.g. a
  new doc_stride, writes nothing into the workdir)."""
  global _deferred  # pylint: disable=global-statement
  previous, _deferred = _deferred, []
  try:
    yield _deferred
  finally:
    _deferred = previous


def write_caches(pending: Sequence[tuple[str, EncodedSplit]]) -> None:
  """Writes the cache files deferred_cache_writes kept."""
  for path, split in pending:
    _save_cache(path, split)


def _encode(task: Task, examples: Sequence[Example], tokenizer: Tokenizer, opts: EncodeOptions,
            split: str) -> EncodedSplit:
  encoded = ENCODERS[task.type](task, examples, tokenizer, opts)
  arrays = encoded.arrays
  mask = arrays["attention_mask"]
  lengths = mask.sum(-1)
  arrays["length"] = (lengths.max(-1) if mask.ndim == 3 else lengths).astype(np.int32)
  arrays.setdefault("example_index", np.arange(len(examples), dtype=np.int32))
  num_truncated = int(encoded.truncated.sum())
  # A server encodes every request: "0 of 1 truncated" per request is noise (debug level there).
  quiet = logging.DEBUG if split == "serve" else logging.INFO
  log.log(logging.WARNING if num_truncated else quiet,
          "%s %s: %d of %d examples truncated to %d tokens (%d rows)", task.name, split,
          num_truncated, len(examples), opts.max_length, len(lengths))
  return EncodedSplit(task, split, arrays, num_truncated, len(examples), encoded.has_labels,
                      encoded.target_mean, encoded.target_std, opts.max_length, examples)


# ----------------------------------------------------------------------------------------------
# Candidate order: a pure function of (seed, step)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _permutation(seed: int, task: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order of task `task` in epoch `epoch`; memoised (read-only) so a step costs O(b)."""
  perm = np.random.default_rng([seed, task, epoch]).permutation(num_examples).astype(np.int32)
  perm.setflags(write=False)
  return perm


def candidate_indices(seed: int, step: int, num_examples: Sequence[int],
                      per_task_batch: int) -> np.ndarray:
  """Row indices of step `step`'s candidates, int64 [T, b].

  For task t, slot j of step s is global position p = s * b + j of the task's stream; epoch
  e = p // N_t; row = permutation(seed, t, e)[p % N_t] with a PCG64 generator seeded from
  (seed, t, e). Depends only on its arguments, never on earlier steps.
  """
  if seed < 0 or step < 0 or per_task_batch < 1:
    raise ValueError(f"need seed >= 0, step >= 0, per_task_batch >= 1; got {seed}, {step}, "
                     f"{per_task_batch}")
  positions = step * per_task_batch + np.arange(per_task_batch)
  out = np.empty((len(num_examples), per_task_batch), np.int64)
  for t, n in enumerate(num_examples):
    if n < 1:
      raise ValueError(f"task {t} has no examples")
    epochs = positions // n
    for epoch in np.unique(epochs):
      sel = epochs == epoch
      out[t, sel] = _permutation(seed, t, int(epoch), int(n))[positions[sel] % n]
  return out


def task_epochs(step: int, num_examples: Sequence[int], per_task_batch: int) -> np.ndarray:
  """float64 [T]: passes over each task's rows that the candidates of steps [0, step) made."""
  return step * per_task_batch / np.asarray(num_examples, np.float64)


# ----------------------------------------------------------------------------------------------
# Buckets and batch assembly
# ----------------------------------------------------------------------------------------------


def default_buckets(max_length: int, multiple: int = 32) -> tuple[int, ...]:
  """(32, 64, ..., max_length): multiples of `multiple` below max_length, then max_length."""
  return tuple(range(multiple, max_length, multiple)) + (max_length,)


def bucket_length(lengths: np.ndarray | Sequence[int], buckets: Sequence[int]) -> int:
  """The smallest bucket >= max(lengths) (the smallest bucket for no lengths)."""
  longest = int(np.max(lengths)) if len(lengths) else 0
  for bucket in sorted(buckets):
    if bucket >= longest:
      return int(bucket)
  raise ValueError(f"a row of {longest} tokens exceeds the largest bucket {max(buckets)}")


# Batch keys beyond the sequence arrays: (kind, dtype, fill for tasks that do not set them).
# kind: "seq" [B, K, L], "token" [B, L], "row" [B].
_BATCH_KEYS: dict[str, tuple[str, type, float]] = {
    "input_ids": ("seq", np.int32, 0),
    "token_type_ids": ("seq", np.int32, 0),
    "attention_mask": ("seq", np.int32, 0),
    "label": ("row", np.int32, 0),
    "target": ("row", np.float32, 0.0),
    "start_position": ("row", np.int32, 0),
    "end_position": ("row", np.int32, 0),
    "context_mask": ("token", np.int32, 0),
    "token_labels": ("token", np.int32, -1),
}


def _empty_batch(n: int, num_choices: int, length: int) -> dict[str, np.ndarray]:
  shapes = {"seq": (n, num_choices, length), "token": (n, length), "row": (n,)}
  return {key: np.full(shapes[kind], fill, dtype)
          for key, (kind, dtype, fill) in _BATCH_KEYS.items()}


def _fill_rows(out: dict[str, np.ndarray], sel: np.ndarray, arrays: Mapping[str, np.ndarray],
               rows: np.ndarray, length: int) -> None:
  """Copies rows of one task's arrays into batch slots `sel`, cropped/padded to `length`."""
  for key, (kind, _, _) in _BATCH_KEYS.items():
    if key not in arrays:
      continue
    src = arrays[key]
    width = min(length, src.shape[-1]) if kind != "row" else 0
    if kind == "row":
      out[key][sel] = src[rows]
    elif kind == "token":
      out[key][sel, :width] = src[rows, :width]
    elif src.ndim == 2:  # one sequence per example goes to choice row 0
      out[key][sel, 0, :width] = src[rows, :width]
    else:
      out[key][sel, :src.shape[1], :width] = src[rows, :, :width]


def assemble_batch(splits: Sequence[EncodedSplit] | Mapping[int, EncodedSplit],
                   task_ids: np.ndarray, rows: np.ndarray, num_choices: int, length: int,
                   uid_offsets: Sequence[int] | Mapping[int, int]) -> dict[str, np.ndarray]:
  """Gathers rows of several tasks into one batch of docs/design/batch_format.md.

  Args:
    splits: EncodedSplit per task id (a list, or a dict task id -> split).
    task_ids: int [n] task of each slot.
    rows: int [n] row of each slot in its task's split.
    num_choices: K; multiple-choice rows fill choices 0..C-1, other tasks choice 0.
    length: L, the batch's bucket length; every slot's row must fit.
    uid_offsets: per task id, the run-global id of its row 0.
  Returns:
    dict of numpy arrays: task_id/label/... [n], input_ids/... [n, K, L], context_mask and
    token_labels [n, L], weight float32 [n] (ones), uid int32 [n].
  """
  task_ids = np.asarray(task_ids)
  rows = np.asarray(rows)
  out = _empty_batch(len(task_ids), num_choices, length)
  out["task_id"] = task_ids.astype(np.int32)
  out["weight"] = np.ones(len(task_ids), np.float32)
  out["uid"] = np.zeros(len(task_ids), np.int32)
  for t in np.unique(task_ids):
    sel = np.flatnonzero(task_ids == t)
    split = splits[int(t)]
    choices = split.arrays["input_ids"].shape[1] if split.arrays["input_ids"].ndim == 3 else 1
    if choices > num_choices:
      raise ValueError(f"{split.task.name} has {choices} choices but the batch holds {num_choices}")
    longest = int(split.lengths[rows[sel]].max())
    if longest > length:
      raise ValueError(f"{split.task.name}: a row of {longest} tokens does not fit length {length}")
    _fill_rows(out, sel, split.arrays, rows[sel], length)
    out["uid"][sel] = uid_offsets[int(t)] + rows[sel]
  return out


# ----------------------------------------------------------------------------------------------
# MT-U candidate sets, one host's slice
# ----------------------------------------------------------------------------------------------


def _host_slice(batch: int, process_index: int, process_count: int) -> slice:
  """Slots [p * b_local, (p + 1) * b_local) of a global batch of `batch` slots."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside 0..{process_count - 1}")
  if batch % process_count:
    raise ValueError(f"batch size {batch} is not divisible by the {process_count} processes; "
                     "each host must hold the same number of slots")
  local = batch // process_count
  return slice(process_index * local, (process_index + 1) * local)


class CandidateLoader:
  """Per-step MT-U candidate sets: b rows of every task, this host's slice.

  candidates(step) gives arrays shaped [T, b_local, ...] (b_local = b // process_count) holding
  slots j in [process_index * b_local, (process_index + 1) * b_local) of each task's b global
  candidates. The bucket length comes from the global candidates' lengths, which every host
  computes identically (indices are a pure function of (seed, step)), so shapes agree across hosts.
  """

  def __init__(self, splits: Sequence[EncodedSplit], per_task_batch: int, seed: int,
               num_choices: int | None = None, buckets: Sequence[int] | None = None,
               process_index: int = 0, process_count: int = 1):
    if not splits:
      raise ValueError("CandidateLoader needs at least one task")
    self.splits = list(splits)
    self.per_task_batch = per_task_batch
    self.seed = seed
    self.num_choices = num_choices or max(s.task.num_choices for s in self.splits)
    max_length = max(s.arrays["input_ids"].shape[-1] for s in self.splits)
    self.buckets = tuple(sorted(buckets)) if buckets else default_buckets(max_length)
    self.host_slots = _host_slice(per_task_batch, process_index, process_count)
    self.num_examples = [s.num_rows for s in self.splits]
    self.uid_offsets = np.concatenate([[0], np.cumsum(self.num_examples)[:-1]]).astype(np.int64)
    self.total_examples = int(sum(self.num_examples))
    if self.total_examples >= 2**31:
      raise ValueError("more than 2**31 rows in all: uid would overflow int32")

  @property
  def local_batch(self) -> int:
    return self.host_slots.stop - self.host_slots.start

  def indices(self, step: int) -> np.ndarray:
    """int64 [T, b]: the global candidate rows of `step`."""
    return candidate_indices(self.seed, step, self.num_examples, self.per_task_batch)

  def epochs(self, step: int) -> np.ndarray:
    """float64 [T]: passes over each task's data made before `step`."""
    return task_epochs(step, self.num_examples, self.per_task_batch)

  def candidates(self, step: int) -> dict[str, np.ndarray]:
    """This host's arrays for `step`: task_id [T, b_local], input_ids [T, b_local, K, L], ..."""
    idx = self.indices(step)
    global_lengths = np.concatenate([s.lengths[i] for s, i in zip(self.splits, idx)])
    length = bucket_length(global_lengths, self.buckets)
    local = idx[:, self.host_slots]
    num_tasks, b_local = local.shape
    task_ids = np.repeat(np.arange(num_tasks), b_local)
    flat = assemble_batch(self.splits, task_ids, local.reshape(-1), self.num_choices, length,
                          self.uid_offsets)
    return {k: v.reshape((num_tasks, b_local) + v.shape[1:]) for k, v in flat.items()}


# ----------------------------------------------------------------------------------------------
# Evaluation batches
# ----------------------------------------------------------------------------------------------


def eval_batches(split: EncodedSplit, task_id: int, batch_size: int,
                 num_choices: int | None = None, buckets: Sequence[int] | None = None,
                 process_index: int = 0, process_count: int = 1, sort_by_length: bool = True
                 ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
  """Yields (batch, rows) over every row of `split` exactly once, this host's slice.

  Each global batch holds `batch_size` slots; the last one is padded with copies of row 0 with
  weight 0 and uid -1. Every batch is cropped to its own bucket length, computed from the global
  batch so hosts agree. With sort_by_length rows are visited shortest first (less padding);
  the order is the same on every host.

  Yields:
    batch: dict of the batch format, leading dim batch_size // process_count.
    rows: int64 [batch_size // process_count] row index in `split` per slot, -1 for padding.
  """
  host = _host_slice(batch_size, process_index, process_count)
  num_choices = num_choices or split.task.num_choices
  buckets = tuple(buckets) if buckets else default_buckets(split.arrays["input_ids"].shape[-1])
  order = (np.argsort(split.lengths, kind="stable") if sort_by_length
           else np.arange(split.num_rows))
  for start in range(0, split.num_rows, batch_size):
    global_rows = np.full(batch_size, -1, np.int64)
    chunk = order[start:start + batch_size]
    global_rows[:len(chunk)] = chunk
    length = bucket_length(split.lengths[chunk], buckets)
    rows = global_rows[host]
    valid = rows >= 0
    batch = assemble_batch({task_id: split}, np.full(len(rows), task_id), np.maximum(rows, 0),
                           num_choices, length, {task_id: 0})
    batch["weight"] = valid.astype(np.float32)
    batch["uid"] = np.where(valid, batch["uid"], -1).astype(np.int32)
    yield batch, rows
