"""The Task record and the Example record that every reader yields.

These two dataclasses are the contract between the readers (tasks/readers.py, tasks/tfds_source.py),
the tokeniser (input_pipeline.py) and the model heads (models/heads.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

# Head types. The model keeps one stacked head per type; a batch may mix them.
CLASSIFICATION = "classification"
REGRESSION = "regression"
MULTIPLE_CHOICE = "multiple_choice"
SPAN = "span"
TAGGING = "tagging"
TASK_TYPES = (CLASSIFICATION, REGRESSION, MULTIPLE_CHOICE, SPAN, TAGGING)


@dataclasses.dataclass(frozen=True)
class Example:
  """One raw example as read from a file, before tokenisation.

  `guid` is "path:line" (or "path:record" for json), so later errors can name where the example
  came from. Which of the other fields are set depends on the task type:
    classification / regression: texts (1 or 2 segments), label (str class name / float / None
      on test)
    multiple_choice: choices, a tuple of (first, second) text pairs, one per choice; label = index
      (int)
    span: question, context, answers = ((text, char_start), ...) spans found in the context (the
      training targets; empty on test), answer_texts = the gold strings the metric takes the max
      over (may include strings that are not in the context, e.g. MRQA "answers"; when empty the
      texts of `answers` are the gold strings)
    tagging: words, tags (one tag string per word; empty on test)
  """
  guid: str
  texts: tuple[str, ...] = ()
  label: str | float | int | None = None
  choices: tuple[tuple[str, str], ...] = ()
  question: str = ""
  context: str = ""
  answers: tuple[tuple[str, int], ...] = ()
  words: tuple[str, ...] = ()
  tags: tuple[str, ...] = ()
  # The id the benchmark's submission format wants (GLUE "index", SuperGLUE "idx", SQuAD "id");
  # a tuple where the format is nested (MultiRC: (paragraph idx, question idx, answer idx)).
  example_id: str | int | tuple[int, ...] | None = None
  answer_texts: tuple[str, ...] = ()


# A reader is called as reader(path, split, skips) and yields Examples; it raises DataError naming
# file/line/field. skips (a readers.SkipLog, optional) counts the rows it leaves out.
Reader = Callable[..., Iterator[Example]]


@dataclasses.dataclass(frozen=True)
class Task:
  """A task of the registry.

  name: unique registry name, e.g. "glue/mrpc".
  type: one of TASK_TYPES.
  labels: class names (classification), BIO tag names (tagging); () for regression / span;
    for multiple_choice the label strings are the choice indices ("0", "1", ...).
  metrics: metric names computed by tasks/metrics.py for this task, the first is the main one.
  splits: split name -> file path relative to the data root, the folder that holds glue/,
    superglue/, wnut17/, ... as the datasets are distributed (local source).
  reader: the local-file reader for this task's original format.
  tfds_name: the TFDS builder name (e.g. "glue/mrpc"), or None when TFDS has no such dataset.
  num_choices: number of choices for multiple_choice tasks, else 1.
  """
  name: str
  type: str
  labels: tuple[str, ...]
  metrics: tuple[str, ...]
  splits: Mapping[str, str]
  reader: Reader
  tfds_name: str | None = None
  num_choices: int = 1
  benchmark: str | None = None  # "glue" / "superglue" / None, for aggregate scores and submissions
  # A spec-file task's entry (tasks/spec.py, JSON-ready): tasks.json keeps it, so a workdir
  # rebuilds the task, reader included, without the spec file. None for registry tasks.
  spec: Mapping[str, Any] | None = None

  @property
  def num_labels(self) -> int:
    return len(self.labels)


class DataError(ValueError):
  """Bad input data. The message always names the file, the line (or record) and the field."""

  def __init__(self, path: str, line: int | str | None, field: str | None, message: str):
    where = f"{path}"
    if line is not None:
      where += f", line {line}"
    if field is not None:
      where += f", field '{field}'"
    super().__init__(f"{where}: {message}")
    self.path, self.line, self.field = path, line, field

  @classmethod
  def at(cls, guid: str, field: str | None, message: str) -> "DataError":
    """The error of the example whose guid is "path:line" (or a bare name: no line)."""
    path, sep, line = guid.rpartition(":")
    return cls(path, line, field, message) if sep else cls(guid, None, field, message)
