"""Reads a task split from a prepared TFDS dataset into the same Examples as the file readers.

The dataset must already be prepared (e.g. `tfds build glue/rte`, or copied to a bucket) under
data_dir, which may be a gs:// path; nothing is downloaded. Prepared files are opened with
builder_from_files, which needs neither the builder's code nor TensorFlow (TFDS's SuperGLUE code
imports TensorFlow); the registered builder is the fallback, as with tfds.data_source.

Records are converted with the same constructors as the file readers (readers.copa_example, ...),
class indices mapped to task.labels (whose order is the TFDS ClassLabel order), -1 to None.
Differences from the local files that TFDS itself introduces:
  * records come in TFDS's (shuffled) order; match them to files by example_id;
  * example_id is TFDS's idx, the row number of the file (equal to the GLUE "index" column of every
    test file, not to QQP's train/dev "id"); SciTail, SNLI, SQuAD and MRQA records carry no row
    number, so SciTail/SNLI ids are the record's position and SQuAD/MRQA keep their question ids;
  * guid is "tfds:<name>/<split>[<record index>]", which errors name as their file;
  * STS-B scores are float32 in TFDS (2.33333333333333 comes back as 2.3333333);
  * ReCoRD keeps only answer strings, so spans are placed at their first occurrence in the passage;
  * TFDS's MRQA strips the context, which shifts character spans when it began with whitespace.
SNLI records with label -1 (gold_label "-") are dropped, counted and logged, as by the file reader.
An empty or whitespace-only text feature (or answer string) is refused as by the file readers
(readers.check_text), the error naming the record, e.g. "tfds:glue/rte/train[17], field
'sentence1': empty text".
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from camtl_jax.tasks import base, readers
from camtl_jax.tasks.base import DataError, Example, Task

# Our split names -> TFDS split names (others are the same).
TFDS_SPLITS = {"dev": "validation", "val": "validation", "dev_matched": "validation_matched",
               "dev_mismatched": "validation_mismatched"}


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("source='tfds' needs tensorflow_datasets: pip install 'camtl_jax[tfds]' "
                      "(TensorFlow is not needed to read prepared datasets)") from e
  return tfds


def _import_glue() -> None:
  pass  # pylint: disable=g-import-not-at-top,unused-import


def _import_super_glue() -> None:
  pass  # pylint: disable=g-import-not-at-top,unused-import


def _import_mrqa() -> None:
  pass  # pylint: disable=g-import-not-at-top,unused-import


# Builders whose code TFDS registers only when TensorFlow is importable.
_BUILDER_CODE = {"glue": _import_glue, "super_glue": _import_super_glue, "mrqa": _import_mrqa}


def data_source(name: str, split: str, data_dir: str | None) -> Any:
  """The random-access TFDS data source of a prepared dataset split."""
  tfds = _tfds()
  where = f"tfds:{name}/{split}"
  try:
    builder = tfds.core.read_only_builder.builder_from_files(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    return _registered_source(tfds, name, split, data_dir)
  if split not in builder.info.splits:
    raise DataError(where, None, None, f"no split {split!r}; the prepared dataset has "
                    f"{list(builder.info.splits)}")
  return builder.as_data_source(split=split)


def _registered_source(tfds: Any, name: str, split: str, data_dir: str | None) -> Any:
  """tfds.data_source through the builder's code (no download), for what files alone lack."""
  _BUILDER_CODE.get(name.split("/")[0], lambda: None)()
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  # What TFDS raises for data that is not there depends on the builder and the file format (and
  # some builders' code needs TensorFlow even to describe the dataset).
  except (tfds.core.DatasetNotFoundError, AssertionError, FileNotFoundError, NotImplementedError,
          ImportError) as e:
    raise DataError(f"tfds:{name}/{split}", None, None, f"no prepared TFDS dataset {name!r} in "
                    f"data_dir {data_dir or '(TFDS default)'}; prepare it (array_record format) "
                    f"with `tfds build {name} --file_format=array_record`. TFDS said: "
                    f"{type(e).__name__}: {str(e).splitlines()[0]}") from e


def load_examples(task: Task, data_dir: str | None, split: str,
                  skips: readers.SkipLog | None = None) -> list[Example]:
  """Reads split `split` (our name, e.g. "dev") of `task` from TFDS into Examples."""
  if task.tfds_name is None or task.name not in CONVERTERS:
    raise ValueError(f"task {task.name!r} has no TFDS source; use source='local'")
  if split not in task.splits:
    raise ValueError(f"task {task.name!r} has no split {split!r}; splits: {list(task.splits)}")
  skips = skips or readers.SkipLog()
  tfds_split = TFDS_SPLITS.get(split, split)
  source = data_source(task.tfds_name, tfds_split, data_dir)
  where = f"tfds:{task.tfds_name}/{tfds_split}"
  convert = CONVERTERS[task.name]
  examples = []
  for i in range(len(source)):
    try:
      examples.extend(convert(_Record(source[i], where, i), task, split, skips))
    except DataError as err:
      skips.invalid(err)
  return examples


# ----------------------------------------------------------------------------------------------
# Record access.


class _Record:
  """One TFDS record with typed, error-naming getters."""

  def __init__(self, values: dict, where: str, index: int):
    self.values, self.index = values, index
    self.guid = f"{where}[{index}]"  # Also the "file" that errors name.

  def raw(self, key: str) -> Any:
    if key not in self.values:
      raise self.error(key, f"missing feature (features: {sorted(self.values)})")
    return self.values[key]

  def text(self, key: str) -> str:
    """A text feature, refused when empty or whitespace-only (readers.check_text)."""
    return readers.check_text(self.string(key), self.guid, None, key)

  def texts(self, value: Any, field: str) -> list[str]:
    """A list of texts (answer strings), each refused when empty as by text()."""
    return [readers.check_text(t, self.guid, None, f"{field}[{i}]")
            for i, t in enumerate(_texts(value))]

  def string(self, key: str) -> str:
    """A string feature that is not a text (an id, COPA's cause/effect), as it is."""
    return _as_text(self.raw(key))

  def int(self, key: str) -> int:
    return int(np.asarray(self.raw(key)))

  def error(self, field: str, message: str) -> DataError:
    return DataError(self.guid, None, field, message)


def _as_text(value: Any) -> str:
  value = value.item() if isinstance(value, np.ndarray) else value
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _texts(value: Any) -> list[str]:
  return [_as_text(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]


def _class_label(record: _Record, task: Task, key: str = "label") -> str | None:
  index = record.int(key)
  if index == -1:  # TFDS's "no label" (test splits).
    return None
  if not 0 <= index < len(task.labels):
    raise record.error(key, f"class index {index} outside 0..{len(task.labels) - 1} "
                       f"({list(task.labels)})")
  return task.labels[index]


# ----------------------------------------------------------------------------------------------
# Converters: (record, task, split, skips) -> [Example].

# TFDS feature names of the text segments, in order.
PAIR_FEATURES = {
    "glue/cola": ("sentence",), "glue/sst2": ("sentence",),
    "glue/mrpc": ("sentence1", "sentence2"), "glue/stsb": ("sentence1", "sentence2"),
    "glue/qqp": ("question1", "question2"), "glue/mnli": ("premise", "hypothesis"),
    "glue/qnli": ("question", "sentence"), "glue/rte": ("sentence1", "sentence2"),
    "glue/wnli": ("sentence1", "sentence2"), "glue/ax": ("premise", "hypothesis"),
    "superglue/boolq": ("question", "passage"), "superglue/cb": ("premise", "hypothesis"),
    "superglue/rte": ("premise", "hypothesis"), "superglue/axb": ("sentence1", "sentence2"),
    "superglue/axg": ("premise", "hypothesis"),
    "snli": ("premise", "hypothesis"), "scitail": ("premise", "hypothesis"),
}


def _pair(record: _Record, task: Task, split: str, skips: readers.SkipLog) -> list[Example]:
  texts = tuple(record.text(k) for k in PAIR_FEATURES[task.name])
  if task.type == base.REGRESSION:
    # TFDS stores float32; its shortest decimal form is the file's value (2.4, not 2.4000000953...).
    score = float(str(np.float32(np.asarray(record.raw("label")))))
    label = None if score == -1 else score
  else:
    label = _class_label(record, task)
  ex_id = record.int("idx") if "idx" in record.values else record.index
  return [Example(guid=record.guid, texts=texts, label=label, example_id=ex_id)]


def _snli(record: _Record, task: Task, split: str, skips: readers.SkipLog) -> list[Example]:
  if record.int("label") == -1:  # gold_label "-": the task's documented policy skip.
    skips.policy("no_gold_label", record.guid)
    return []
  return _pair(record, task, split, skips)


def _copa(record: _Record, task: Task, split: str, skips: readers.SkipLog) -> list[Example]:
  label = _class_label(record, task)  # "choice1"/"choice2" -> "0"/"1"
  return [readers.copa_example(record.guid, record.text("premise"), record.text("choice1"),
                               record.text("choice2"), record.string("question"),
                               None if label is None else int(label), record.int("idx"),
                               record.guid)]


def _wic(record: _Record, task: Task, split: str, skips: readers.SkipLog) -> list[Example]:
  offsets = tuple(record.int(k) for k in ("start1", "end1", "start2", "end2"))
  record.text("word")  # Not used (the offsets mark it), but checked as by the file reader.
  return [readers.wic_example(record.guid, record.text("sentence1"), record.text("sentence2"),
                              offsets, _class_label(record, task), record.int("idx"),
                              record.guid)]


def _wsc(record: _Record, task: Task, split: str, skips: readers.SkipLog) -> list[Example]:
  span1 = (record.int("span1_index"), record.text("span1_text"))
  span2 = (record.int("span2_index"), record.text("span2_text"))
  return [readers.wsc_example(record.guid, record.text("text"), span1, span2,
                              _class_label(record, task), record.int("idx"), record.guid)]


def _multirc(record: _Record, task: Task, split: str, skips: readers.SkipLog) -> list[Example]:
  idx = record.raw("idx")
  ids = tuple(int(np.asarray(idx[k])) for k in ("paragraph", "question", "answer"))
  return [readers.multirc_example(record.guid, record.text("paragraph"), record.text("question"),
                                  record.text("answer"), _class_label(record, task), ids)]


def _record(record: _Record, task: Task, split: str, skips: readers.SkipLog) -> list[Example]:
  passage = record.text("passage")
  answers = record.texts(record.raw("answers"), "answers")
  spans = tuple((a, passage.find(a)) for a in answers if a in passage)
  return [Example(guid=record.guid, question=record.text("query"), context=passage,
                  answers=spans, answer_texts=tuple(answers),
                  example_id=int(np.asarray(record.raw("idx")["query"])))]


def _squad(record: _Record, task: Task, split: str, skips: readers.SkipLog) -> list[Example]:
  context, answers = record.text("context"), record.raw("answers")
  texts = record.texts(answers["text"], "answers.text")
  starts = [int(s) for s in np.asarray(answers["answer_start"])]
  spans = [readers.checked_span(context, t, s, s + len(t), record.guid, None, f"answers[{i}]")
           for i, (t, s) in enumerate(zip(texts, starts))]
  return [Example(guid=record.guid, question=record.text("question"), context=context,
                  answers=tuple(dict.fromkeys(spans)), answer_texts=tuple(texts),
                  example_id=record.string("id"))]


def _mrqa(record: _Record, task: Task, split: str, skips: readers.SkipLog) -> list[Example]:
  context = record.text("context")
  char_spans = record.raw("detected_answers")["char_spans"]
  spans = []
  for starts, ends in zip(char_spans["start"], char_spans["end"]):
    for s, e in zip(np.asarray(starts).tolist(), np.asarray(ends).tolist()):
      if not 0 <= s <= e < len(context):
        raise record.error("detected_answers.char_spans", f"span [{s}, {e}] outside the context "
                           f"(length {len(context)})")
      spans.append((context[s:e + 1], s))
  return [Example(guid=record.guid, question=record.text("question"), context=context,
                  answers=tuple(dict.fromkeys(spans)),
                  answer_texts=tuple(record.texts(record.raw("answers"), "answers")),
                  example_id=record.string("qid"))]


CONVERTERS: dict[str, Callable[[_Record, Task, str, readers.SkipLog], list[Example]]] = {
    **{name: _pair for name in PAIR_FEATURES},
    "snli": _snli,
    "superglue/copa": _copa,
    "superglue/wic": _wic,
    "superglue/wsc": _wsc,
    "superglue/multirc": _multirc,
    "superglue/record": _record,
    "squad_v1": _squad,
    **{f"mrqa/{n}": _mrqa for n in ("squad", "newsqa", "triviaqa", "searchqa", "hotpotqa",
                                   "naturalquestions")},
}
