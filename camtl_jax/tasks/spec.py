"""Task spec files: a user's own tasks, of any head type, declared in YAML or JSON (DESIGN.md 5).

  tasks:                              # (a JSON file holds the same structure)
    - name: my/tickets
      type: classification            # classification | regression | multiple_choice | span |
                                      # tagging
      files: {train: tickets_train.csv, dev: tickets_dev.csv, test: tickets_test.csv}
      format: csv                     # default: from the train file's extension (FORMATS)
      text_fields: [subject, body]    # 1 or 2 columns / keys
      label_field: label              # default "label"; absent or empty on test splits
      labels: [billing, bug, other]   # optional: else the train split's values, sorted
      metrics: [accuracy, macro_f1]   # optional: DEFAULT_METRICS per type

Keys per type (KEYS), all optional unless marked:
  classification / regression  text_fields (required), label_field, labels (classification only)
  multiple_choice              question_field (required; the first segment of every choice pair),
                               context_field (then the pair is (context, question + " " + choice)),
                               choices_field (a jsonl list) or choice_fields (numbered columns),
                               label_field (the 0-based index of the right choice, or one of
                               choice_labels, e.g. [A, B, C, D]), num_choices (else the first
                               train row's count; every row must have that many)
  span                         format json: a SQuAD v1.1 document; format jsonl: one question per
                               line, question_field, context_field, answers_field (defaults
                               question / context / answers; answers as SQuAD's
                               [{text, answer_start}] or as {text: [...], answer_start: [...]})
  tagging                      format conll: token and tag per line (tab- or space-separated; the
                               first and last column; blank lines end a sentence; -DOCSTART- lines
                               are left out and counted), format jsonl: words_field, tags_field
                               (defaults words / tags); labels
  every type                   id_field (the example's id in predictions); csv / tsv: columns (the
                               column names of files without a header row), quoting (default true
                               for csv, false for tsv, as GLUE's tsv files are read)

A relative file path is looked up beside the spec file, then in data_dir. Every declared file must
exist when the spec is read, so a missing split is said before anything is tokenised. Labels that
the spec leaves out are the train split's values, sorted; a trained workdir records them (and the
rest of the entry) in tasks.json, so it needs neither the spec nor the data afterwards.

A spec error is a SpecError, one line naming the spec file and the key; a data error is a
base.DataError naming the file, the line and the field.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import difflib
import functools
import io
import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from camtl_jax.tasks import base, readers
from camtl_jax.tasks.base import DataError, Example, Task

log = logging.getLogger(__name__)

# The readers' row-level helpers, so spec files are read with the same rules (blank lines, bad
# rows, labels, skips) as the benchmark files.
# pylint: disable=protected-access
_is_test, _check_label, _json_label = readers.is_test, readers.check_label, readers.json_label
_jsonl, _emit, _open_binary = readers.jsonl, readers.emit, readers.open_binary
_conll_sentences = readers.conll_sentences
# pylint: enable=protected-access

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
TABULAR = ("csv", "tsv")
FORMATS = {
    base.CLASSIFICATION: ("csv", "tsv", "jsonl"),
    base.REGRESSION: ("csv", "tsv", "jsonl"),
    base.MULTIPLE_CHOICE: ("csv", "tsv", "jsonl"),
    base.SPAN: ("json", "jsonl"),
    base.TAGGING: ("conll", "jsonl"),
}
EXTENSION_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json",
                     ".conll": "conll"}
DEFAULT_METRICS = {
    base.CLASSIFICATION: ("accuracy",),
    base.REGRESSION: ("pearson", "spearman"),
    base.MULTIPLE_CHOICE: ("accuracy",),
    base.SPAN: ("span_f1", "span_em"),
    base.TAGGING: ("entity_f1",),
}
ALLOWED_METRICS = {
    base.CLASSIFICATION: ("accuracy", "f1", "macro_f1", "mcc"),
    base.REGRESSION: ("pearson", "spearman"),
    base.MULTIPLE_CHOICE: ("accuracy", "macro_f1", "mcc"),
    base.SPAN: ("span_f1", "span_em"),
    base.TAGGING: ("entity_f1",),
}
COMMON_KEYS = ("name", "type", "files", "format", "metrics", "id_field", "columns", "quoting")
KEYS = {
    base.CLASSIFICATION: ("text_fields", "label_field", "labels"),
    base.REGRESSION: ("text_fields", "label_field"),
    base.MULTIPLE_CHOICE: ("question_field", "context_field", "choices_field", "choice_fields",
                           "label_field", "choice_labels", "num_choices"),
    base.SPAN: ("question_field", "context_field", "answers_field"),
    base.TAGGING: ("words_field", "tags_field", "labels"),
}
DEV_SPLITS = ("dev", "validation", "val")


class SpecError(ValueError):
  """A bad spec file: one line naming the file and the key."""

  def __init__(self, path: str | Path, key: str | None, message: str):
    super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")
    self.path, self.key = str(path), key


@dataclasses.dataclass(frozen=True)
class SpecTask:
  """One task of a spec file, checked, with its files resolved (absolute paths).

  files: (split, path) pairs. labels: class or tag names (inferred ones included once the
  entry is finalised, inferred_labels then True); () for regression, span and multiple choice.
  num_choices: multiple choice only (0 until inferred). source: the spec file.
  """
  name: str
  type: str
  format: str
  files: tuple[tuple[str, str], ...]
  labels: tuple[str, ...] = ()
  metrics: tuple[str, ...] = ()
  text_fields: tuple[str, ...] = ()
  label_field: str = "label"
  id_field: str | None = None
  columns: tuple[str, ...] = ()
  quoting: bool = True
  question_field: str = "question"
  context_field: str | None = None
  choices_field: str | None = None
  choice_fields: tuple[str, ...] = ()
  choice_labels: tuple[str, ...] = ()
  num_choices: int = 0
  answers_field: str = "answers"
  words_field: str = "words"
  tags_field: str = "tags"
  source: str = ""
  inferred_labels: bool = False  # labels read from the train split (the spec gave none)

  def file(self, split: str) -> str:
    return dict(self.files)[split]


# ------------------------------------------------------------------------------------------------
# Reading the spec file


def is_spec_file(text: str) -> bool:
  """Whether a command-line argument names a spec file (by its suffix)."""
  return Path(text).suffix.lower() in SPEC_SUFFIXES


def _document(path: Path) -> Any:
  if not path.is_file():
    raise SpecError(path, None, "spec file not found")
  text = path.read_text(encoding="utf-8")
  if path.suffix.lower() == ".json":
    try:
      return json.loads(text)
    except json.JSONDecodeError as e:
      raise SpecError(path, f"line {e.lineno}", f"invalid JSON ({e.msg})") from None
  import yaml  # pylint: disable=import-outside-toplevel
  try:
    return yaml.safe_load(text)
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark is not None else None
    raise SpecError(path, where, f"invalid YAML ({getattr(e, 'problem', None) or e})") from None


class _Entry:
  """Typed access to one raw task mapping; every error names the spec file and the key."""

  def __init__(self, raw: Mapping, path: Path, where: str):
    self.raw, self.path, self.where = raw, path, where

  def error(self, key: str, message: str) -> SpecError:
    return SpecError(self.path, f"{self.where}.{key}", message)

  def text(self, key: str, default: str | None = None, required: bool = False) -> str | None:
    if key not in self.raw:
      if required:
        raise self.error(key, "missing (required)")
      return default
    value = self.raw[key]
    if not isinstance(value, str) or not value.strip():
      raise self.error(key, f"expected a non-empty string, got {value!r}")
    return value

  def texts(self, key: str, low: int = 1, high: int = 1 << 30, required: bool = False
            ) -> tuple[str, ...]:
    if key not in self.raw:
      if required:
        raise self.error(key, "missing (required)")
      return ()
    value = self.raw[key]
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
      raise self.error(key, f"expected a list of non-empty strings, got {value!r}")
    if not low <= len(value) <= high:
      span = f"{low}" if low == high else f"{low} to {high}" if high < 1 << 30 else f">= {low}"
      raise self.error(key, f"expected {span} names, got {len(value)}")
    if len(set(value)) != len(value):
      raise self.error(key, f"names repeated: {value}")
    return tuple(value)

  def labels(self, key: str) -> tuple[str, ...]:
    """Label names; YAML scalars (ints, booleans) as the readers spell them."""
    if key not in self.raw:
      return ()
    value = self.raw[key]
    if not isinstance(value, list) or not value:
      raise self.error(key, f"expected a non-empty list of labels, got {value!r}")
    out = []
    for v in value:
      if isinstance(v, bool):
        out.append("true" if v else "false")
      elif isinstance(v, (int, str)) and str(v).strip():
        out.append(str(v))
      else:
        raise self.error(key, f"label {v!r}: expected a string or an integer")
    if len(set(out)) != len(out):
      raise self.error(key, f"labels repeated: {out}")
    return tuple(out)


def _check_keys(entry: _Entry, task_type: str) -> None:
  allowed = COMMON_KEYS + KEYS[task_type]
  for key in entry.raw:
    if key not in allowed:
      close = difflib.get_close_matches(str(key), allowed, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise entry.error(str(key), f"unknown key for a {task_type} task{hint} (keys: "
                        f"{', '.join(allowed)})")


def _resolve_file(entry: _Entry, split: str, value: Any, data_dir: str | None) -> str:
  key = f"files.{split}"
  if not isinstance(value, str) or not value.strip():
    raise entry.error(key, f"expected a file path, got {value!r}")
  path = Path(value).expanduser()
  candidates = [path] if path.is_absolute() else [entry.path.parent / path] + (
      [Path(data_dir) / path] if data_dir else [])
  for candidate in candidates:
    if candidate.is_file():
      return str(candidate.resolve())
  where = " or ".join(str(c.parent) for c in candidates)
  raise entry.error(key, f"file {value!r} not found (looked in {where}); split '{split}' is "
                    "missing")


def _files(entry: _Entry, data_dir: str | None) -> tuple[tuple[str, str], ...]:
  files = entry.raw.get("files")
  if not isinstance(files, dict) or not files:
    raise entry.error("files", "missing or empty: give split: path pairs, e.g. "
                      "{train: train.csv, dev: dev.csv}")
  for split in files:
    if not isinstance(split, str) or not split.replace("_", "").isalnum():
      raise entry.error("files", f"bad split name {split!r}")
  if "train" not in files:
    raise entry.error("files.train", "missing: a task needs its train split")
  if not any(s in files for s in DEV_SPLITS):
    raise entry.error("files.dev", f"missing: a task needs a dev split (one of {DEV_SPLITS})")
  return tuple((split, _resolve_file(entry, split, path, data_dir))
               for split, path in files.items())


def _format(entry: _Entry, task_type: str, files: tuple[tuple[str, str], ...]) -> str:
  allowed = FORMATS[task_type]
  fmt = entry.text("format")
  if fmt is None:
    fmt = EXTENSION_FORMATS.get(Path(dict(files)["train"]).suffix.lower())
    if fmt not in allowed:
      raise entry.error("format", f"missing, and the train file's extension does not say; one "
                        f"of {allowed} for a {task_type} task")
  if fmt not in allowed:
    raise entry.error("format", f"{fmt!r} is not a {task_type} format; one of {allowed}")
  return fmt


def _type_fields(entry: _Entry, task_type: str, fmt: str) -> dict[str, Any]:
  """The type's own keys (KEYS) as SpecTask fields."""
  t = entry.text
  if task_type in (base.CLASSIFICATION, base.REGRESSION):
    return dict(text_fields=entry.texts("text_fields", 1, 2, required=True),
                label_field=t("label_field", "label"), labels=entry.labels("labels"))
  if task_type == base.MULTIPLE_CHOICE:
    return _choice_fields(entry, fmt)
  if task_type == base.SPAN:
    if fmt == "json" and any(k in entry.raw for k in KEYS[base.SPAN]):
      raise entry.error(next(k for k in KEYS[base.SPAN] if k in entry.raw),
                        "a SQuAD json file has fixed field names; field keys are for jsonl")
    return dict(question_field=t("question_field", "question"),
                context_field=t("context_field", "context"),
                answers_field=t("answers_field", "answers"))
  if fmt == "conll" and any(k in entry.raw for k in ("words_field", "tags_field")):
    raise entry.error("words_field" if "words_field" in entry.raw else "tags_field",
                      "CoNLL files have no field names; field keys are for jsonl")
  return dict(words_field=t("words_field", "words"), tags_field=t("tags_field", "tags"),
              labels=entry.labels("labels"))


def _choice_fields(entry: _Entry, fmt: str) -> dict[str, Any]:
  choices_field = entry.text("choices_field")
  choice_fields = entry.texts("choice_fields", 2)
  if bool(choices_field) == bool(choice_fields):
    raise entry.error("choices_field", "give either choices_field (a list per row, jsonl) or "
                      "choice_fields (one column / key per choice)")
  if choices_field and fmt in TABULAR:
    raise entry.error("choices_field", f"a {fmt} cell holds no list: name the choice columns "
                      "with choice_fields")
  num = entry.raw.get("num_choices", len(choice_fields))
  if type(num) is not int or ("num_choices" in entry.raw and num < 2) or (
      choice_fields and num != len(choice_fields)):
    raise entry.error("num_choices", f"expected an integer >= 2 (and the number of choice_fields "
                      f"when given), got {num!r}")
  choice_labels = entry.labels("choice_labels")
  if choice_labels and num and len(choice_labels) != num:
    raise entry.error("choice_labels", f"{len(choice_labels)} labels for {num} choices")
  return dict(question_field=entry.text("question_field", required=True),
              context_field=entry.text("context_field"), choices_field=choices_field,
              choice_fields=choice_fields, label_field=entry.text("label_field", "label"),
              choice_labels=choice_labels, num_choices=num or len(choice_labels))


def _metrics(entry: _Entry, task_type: str) -> tuple[str, ...]:
  metrics = entry.texts("metrics") or DEFAULT_METRICS[task_type]
  for name in metrics:
    if name not in ALLOWED_METRICS[task_type]:
      raise entry.error("metrics", f"{name!r} is not a {task_type} metric; one of "
                        f"{ALLOWED_METRICS[task_type]}")
  return metrics


def _tabular_options(entry: _Entry, fmt: str) -> dict[str, Any]:
  for key in ("columns", "quoting"):
    if key in entry.raw and fmt not in TABULAR:
      raise entry.error(key, f"only for csv / tsv files, not {fmt}")
  quoting = entry.raw.get("quoting", fmt == "csv")
  if not isinstance(quoting, bool):
    raise entry.error("quoting", f"expected true or false, got {quoting!r}")
  return dict(columns=entry.texts("columns"), quoting=quoting)


def parse_entry(raw: Any, path: Path, index: int, data_dir: str | None) -> SpecTask:
  """One task mapping of a spec file, checked (labels not yet inferred)."""
  where = f"tasks[{index}]"
  if not isinstance(raw, dict):
    raise SpecError(path, where, f"expected a mapping of keys, got {type(raw).__name__}")
  entry = _Entry(raw, path, where)
  name = entry.text("name", required=True)
  if any(c.isspace() for c in name):
    raise entry.error("name", f"{name!r}: no spaces in a task name")
  entry.where = f"{where} ({name})"
  task_type = entry.text("type", required=True)
  if task_type not in base.TASK_TYPES:
    close = difflib.get_close_matches(task_type, base.TASK_TYPES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise entry.error("type", f"unknown type {task_type!r}{hint} (one of {base.TASK_TYPES})")
  _check_keys(entry, task_type)
  files = _files(entry, data_dir)
  fmt = _format(entry, task_type, files)
  return SpecTask(name=name, type=task_type, format=fmt, files=files,
                  metrics=_metrics(entry, task_type), id_field=entry.text("id_field"),
                  source=str(path), **_tabular_options(entry, fmt),
                  **_type_fields(entry, task_type, fmt))


def parse_spec(path: str | Path, data_dir: str | None = None) -> list[SpecTask]:
  """The checked entries of a spec file (labels not yet inferred); SpecError on a bad spec."""
  path = Path(path).expanduser().resolve()
  if path.suffix.lower() not in SPEC_SUFFIXES:
    raise SpecError(path, None, f"a spec file is YAML or JSON ({', '.join(SPEC_SUFFIXES)})")
  document = _document(path)
  raw_tasks = document.get("tasks") if isinstance(document, dict) else document
  if isinstance(document, dict) and set(document) - {"tasks"}:
    raise SpecError(path, sorted(map(str, set(document) - {"tasks"}))[0],
                    "unknown top-level key (the file holds `tasks: [...]`)")
  if not isinstance(raw_tasks, list) or not raw_tasks:
    raise SpecError(path, "tasks", "expected a non-empty list of tasks")
  entries, seen = [], {}
  for i, raw in enumerate(raw_tasks):
    entry = parse_entry(raw, path, i, data_dir)
    if entry.name in seen:
      raise SpecError(path, f"tasks[{i}].name", f"task {entry.name!r} is declared twice (also "
                      f"tasks[{seen[entry.name]}])")
    seen[entry.name] = i
    entries.append(entry)
  return entries


# ------------------------------------------------------------------------------------------------
# Reading the data files


def _decode_file(path: str) -> str:
  """The whole file as text (a wrong encoding names its line)."""
  with _open_binary(path) as f:
    raw = f.read()
  try:
    return raw.decode("utf-8").removeprefix("\ufeff")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise DataError(path, line, None, f"invalid UTF-8 ({raw[e.start:e.start + 4]!r}); the file "
                    "must be UTF-8 encoded") from None


def _required_columns(spec: SpecTask, split: str) -> list[str]:
  """The columns a csv / tsv header must name."""
  columns = list(spec.text_fields) + list(spec.choice_fields)
  if spec.type == base.MULTIPLE_CHOICE:
    columns += [spec.question_field] + ([spec.context_field] if spec.context_field else [])
  if spec.id_field:
    columns.append(spec.id_field)
  if not _is_test(split):
    columns.append(spec.label_field)
  return columns


def _tabular_records(spec: SpecTask, path: str, split: str, skips: readers.SkipLog
                     ) -> Iterator[tuple[int, dict[str, str]]]:
  """(first line of the row, {column: value}) per row of a csv / tsv file (quoted fields may hold
  newlines and delimiters when spec.quoting)."""
  reader = csv.reader(io.StringIO(_decode_file(path), newline=""),
                      delimiter="," if spec.format == "csv" else "\t", strict=True,
                      quoting=csv.QUOTE_MINIMAL if spec.quoting else csv.QUOTE_NONE)
  header, blank, rows = (list(spec.columns) or None), None, 0
  while True:
    start = reader.line_num + 1
    try:
      row = next(reader)
    except StopIteration:
      break
    except csv.Error as e:
      raise DataError(path, reader.line_num, None, f"malformed {spec.format} ({e})") from None
    if not row or (len(row) == 1 and not row[0].strip()):
      blank = blank or start
      continue
    if header is None:
      header = row
      _check_header(spec, path, split, header, start)
      continue
    if blank is not None:
      skips.invalid(DataError(path, blank, None, "blank line between records"))
      blank = None
    if len(row) != len(header):
      skips.invalid(DataError(path, start, None, f"expected {len(header)} fields ({header}), "
                              f"found {len(row)}"))
      continue
    rows += 1
    yield start, dict(zip(header, row))
  if header is None:
    raise DataError(path, None, None, "empty file: no header row")
  if spec.columns:
    _check_header(spec, path, split, header, None)
  if not rows and not skips.total:
    raise DataError(path, None, None, "the file has no rows")


def _check_header(spec: SpecTask, path: str, split: str, header: list[str], line: int | None
                  ) -> None:
  if len(set(header)) != len(header):
    raise DataError(path, line, None, f"column names repeated in the header {header}")
  for name in _required_columns(spec, split):
    if name not in header:
      raise DataError(path, line, name, f"missing column; the header has {header}")


def _field(record: Mapping, key: str, path: str, line: int) -> Any:
  if key not in record:
    raise DataError(path, line, key, f"missing field (fields present: {sorted(record)})")
  return record[key]


def _text(record: Mapping, key: str, path: str, line: int) -> str:
  return readers.check_text(_field(record, key, path, line), path, line, key)


def _raw_label(spec: SpecTask, record: Mapping, split: str, path: str, line: int) -> Any:
  """The label value, None on a test split without one; a DataError when a labelled split
  lacks it."""
  value = record.get(spec.label_field)
  if value is None or (isinstance(value, str) and not value.strip()):
    if _is_test(split):
      return None
    raise DataError(path, line, spec.label_field,
                    "missing label" if value is None else "empty label")
  return value


def _class_label(spec, record, split, path, line, labels) -> str | None:
  value = _raw_label(spec, record, split, path, line)
  if value is None:
    return None
  label = _json_label(value, path, line, spec.label_field)
  return label if labels is None else _check_label(
      label, labels, path, line, spec.label_field)


def _score(spec, record, split, path, line, labels) -> float | None:
  del labels
  value = _raw_label(spec, record, split, path, line)
  if value is None:
    return None
  try:
    score = float(value) if not isinstance(value, bool) else math.nan
  except (TypeError, ValueError):
    raise DataError(path, line, spec.label_field, f"not a number: {value!r}") from None
  if not math.isfinite(score):
    raise DataError(path, line, spec.label_field, f"not a finite number: {value!r}")
  return score


def _example_id(spec: SpecTask, record: Mapping, path: str, line: int) -> Any:
  if not spec.id_field:
    return None
  value = _field(record, spec.id_field, path, line)
  if not isinstance(value, (str, int)) or isinstance(value, bool):
    raise DataError(path, line, spec.id_field, f"expected a string or integer id, got {value!r}")
  return value


def _texts_example(spec, record, split, path, line, labels) -> Example:
  label_fn = _score if spec.type == base.REGRESSION else _class_label
  return Example(guid=f"{path}:{line}",
                 texts=tuple(_text(record, f, path, line) for f in spec.text_fields),
                 label=label_fn(spec, record, split, path, line, labels),
                 example_id=_example_id(spec, record, path, line))


def _choices(spec: SpecTask, record: Mapping, path: str, line: int) -> list[str]:
  if spec.choice_fields:
    return [_text(record, f, path, line) for f in spec.choice_fields]
  value = _field(record, spec.choices_field, path, line)
  if not isinstance(value, list):
    raise DataError(path, line, spec.choices_field, f"expected a list of choices, got {value!r}")
  if spec.num_choices and len(value) != spec.num_choices:
    raise DataError(path, line, spec.choices_field, f"{len(value)} choices; every row of "
                    f"{spec.name} has {spec.num_choices}")
  return [readers.check_text(v, path, line, f"{spec.choices_field}[{i}]")
          for i, v in enumerate(value)]


def _choice_index(spec: SpecTask, value: Any, count: int, path: str, line: int) -> int:
  if spec.choice_labels:
    label = _json_label(value, path, line, spec.label_field)
    _check_label(label, spec.choice_labels, path, line, spec.label_field)
    return spec.choice_labels.index(label)
  text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
  if not text.isdigit() or int(text) >= count:
    raise DataError(path, line, spec.label_field, f"label {value!r}: expected the index of the "
                    f"right choice, 0 to {count - 1} (or declare choice_labels)")
  return int(text)


def _choice_example(spec, record, split, path, line, labels) -> Example:
  del labels
  question = _text(record, spec.question_field, path, line)
  choices = _choices(spec, record, path, line)
  if spec.context_field:
    context = _text(record, spec.context_field, path, line)
    pairs = tuple((context, f"{question} {c}") for c in choices)
  else:
    pairs = tuple((question, c) for c in choices)
  value = _raw_label(spec, record, split, path, line)
  label = None if value is None else _choice_index(spec, value, len(choices), path, line)
  return Example(guid=f"{path}:{line}", choices=pairs, label=label,
                 example_id=_example_id(spec, record, path, line))


def _answer_list(spec: SpecTask, value: Any, path: str, line: int) -> list[tuple[Any, Any, str]]:
  """(text, answer_start, field) per answer: SQuAD's list of objects, or HF's two lists."""
  field = spec.answers_field
  if isinstance(value, dict) and isinstance(value.get("text"), list):
    starts = value.get("answer_start")
    if not isinstance(starts, list) or len(starts) != len(value["text"]):
      raise DataError(path, line, f"{field}.answer_start", "expected a list as long as "
                      f"{field}.text")
    return [(t, s, f"{field}[{i}]") for i, (t, s) in enumerate(zip(value["text"], starts))]
  if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
    raise DataError(path, line, field, "expected [{text, answer_start}, ...] or {text: [...], "
                    f"answer_start: [...]}}, got {value!r}")
  return [(a.get("text"), a.get("answer_start"), f"{field}[{i}]") for i, a in enumerate(value)]


def _span_example(spec, record, split, path, line, labels) -> Example:
  del labels
  question = _text(record, spec.question_field, path, line)
  context = _text(record, spec.context_field, path, line)
  spans = []
  if spec.answers_field in record:
    for text, start, field in _answer_list(spec, record[spec.answers_field], path, line):
      text = readers.check_text(text, path, line, f"{field}.text")
      if type(start) is not int:
        raise DataError(path, line, f"{field}.answer_start", f"expected an integer, got {start!r}")
      spans.append(readers.checked_span(context, text, start, start + len(text), path, line,
                                        field))
  if not spans and not _is_test(split):
    raise DataError(path, line, spec.answers_field, "missing answers")
  return Example(guid=f"{path}:{line}", question=question, context=context,
                 answers=tuple(dict.fromkeys(spans)), answer_texts=tuple(t for t, _ in spans),
                 example_id=_example_id(spec, record, path, line))


def _tags(spec: SpecTask, tags: Sequence[Any], path: str, line: Any, labels) -> list[str]:
  out = []
  for i, tag in enumerate(tags):
    field = f"{spec.tags_field}[{i}]" if spec.format == "jsonl" else "tag"
    tag = readers.check_text(tag, path, line, field).strip()
    out.append(tag if labels is None else _check_label(
        tag, labels, path, line, field))
  return out


def _tagging_example(spec, record, split, path, line, labels) -> Example:
  words = _field(record, spec.words_field, path, line)
  if not isinstance(words, list) or not words:
    raise DataError(path, line, spec.words_field, f"expected a non-empty list of words, got "
                    f"{words!r}")
  words = [readers.check_text(w, path, line, f"{spec.words_field}[{i}]")
           for i, w in enumerate(words)]
  tags = record.get(spec.tags_field)
  if tags is None and not _is_test(split):
    raise DataError(path, line, spec.tags_field, "missing tags")
  if tags is not None and (not isinstance(tags, list) or len(tags) != len(words)):
    raise DataError(path, line, spec.tags_field, f"expected a list of {len(words)} tags (one per "
                    f"word), got {tags!r}")
  return Example(guid=f"{path}:{line}", words=tuple(words),
                 tags=tuple(_tags(spec, tags or [], path, line, labels)),
                 example_id=_example_id(spec, record, path, line))


# Task type -> f(spec, record, split, path, line, labels or None) -> Example (None: any label).
EXAMPLE_BUILDERS: dict[str, Callable[..., Example]] = {
    base.CLASSIFICATION: _texts_example,
    base.REGRESSION: _texts_example,
    base.MULTIPLE_CHOICE: _choice_example,
    base.SPAN: _span_example,
    base.TAGGING: _tagging_example,
}


def _read_records(spec, path, split, skips, labels) -> Iterator[Example]:
  records = (_tabular_records(spec, path, split, skips) if spec.format in TABULAR
             else _jsonl(path, skips))
  build = EXAMPLE_BUILDERS[spec.type]
  yield from _emit(
      path, records, lambda line, record: [build(spec, record, split, path, line, labels)], skips)


def _read_squad(spec, path, split, skips, labels) -> Iterator[Example]:
  del spec, labels
  yield from readers.read_squad(path, split, skips)


def _conll_line(text: str) -> list[str]:
  return text.split("\t") if "\t" in text else text.split()


def _read_conll(spec, path, split, skips, labels) -> Iterator[Example]:
  """token ... tag lines (the first and the last column), blank lines between sentences."""
  numbers = itertools.count()

  def parse(first: int, lines: list[tuple[int, str]]) -> list[Example]:
    number = next(numbers)
    kept = [(i, _conll_line(t)) for i, t in lines if not t.startswith("-DOCSTART-")]
    if not kept:
      skips.policy("docstart", f"{path}:{first}")
      return []
    tagged = {len(fields) >= 2 for _, fields in kept}
    if tagged != {True} and not (tagged == {False} and _is_test(split)):
      i = next(i for i, fields in kept if len(fields) < 2)
      raise DataError(path, i, None, "expected a token and its tag (tab- or space-separated)")
    words = [readers.check_text(fields[0], path, i, "token") for i, fields in kept]
    tags = [_tags(spec, [fields[-1]], path, i, labels)[0] for i, fields in kept
            if len(fields) >= 2]
    return [Example(guid=f"{path}:{first}", words=tuple(words), tags=tuple(tags),
                    example_id=number)]

  yield from _emit(
      path, _conll_sentences(path, skips), parse, skips)


_FORMAT_READERS = {"csv": _read_records, "tsv": _read_records, "jsonl": _read_records,
                   "json": _read_squad, "conll": _read_conll}


def read_split(path: str, split: str, skips: readers.SkipLog | None = None, *, spec: SpecTask
               ) -> Iterator[Example]:
  """A spec task's reader (Task.reader): the split's file in the spec's format and fields."""
  labels = spec.labels if spec.type in (base.CLASSIFICATION, base.TAGGING) else None
  yield from _FORMAT_READERS[spec.format](spec, path, split, skips or readers.SkipLog(), labels)


# ------------------------------------------------------------------------------------------------
# Labels and choice counts from the train split


@functools.lru_cache(maxsize=64)
def _train_values(spec: SpecTask, stamp: tuple[int, int]) -> tuple[tuple[str, ...], int]:
  """(sorted label / tag values, choice count) of the train file; stamp = (mtime_ns, size)."""
  del stamp  # part of the cache key only
  path = spec.file("train")
  examples = list(_FORMAT_READERS[spec.format](spec, path, "train", readers.SkipLog(), None))
  if not examples:
    raise DataError(path, None, None, "no examples in the train split")
  values = {str(ex.label) for ex in examples if ex.label is not None} | {
      t for ex in examples for t in ex.tags}
  counts = [len(ex.choices) for ex in examples]
  for ex, n in zip(examples, counts):
    if n != counts[0]:
      raise DataError(*ex.guid.rsplit(":", 1), spec.choices_field,
                      f"{n} choices, but the first row has {counts[0]}: every row needs the "
                      "same number")
  if spec.type in (base.CLASSIFICATION, base.TAGGING) and not spec.labels:
    log.info("%s: labels from the train split: %s", spec.name, sorted(values))  # once (cached)
  return tuple(sorted(values)), counts[0]


def finalise(spec: SpecTask) -> SpecTask:
  """The entry with labels (classification, tagging) and num_choices (multiple choice) read from
  the train split where the spec leaves them out."""
  infer_labels = spec.type in (base.CLASSIFICATION, base.TAGGING) and not spec.labels
  infer_choices = spec.type == base.MULTIPLE_CHOICE and not spec.num_choices
  if not (infer_labels or infer_choices):
    return _check_counts(spec)
  stat = Path(spec.file("train")).stat()
  values, count = _train_values(spec, (stat.st_mtime_ns, stat.st_size))
  if infer_labels:
    spec = dataclasses.replace(spec, labels=values, inferred_labels=True)
  if infer_choices:
    spec = dataclasses.replace(spec, num_choices=count)
  return _check_counts(spec)


def _check_counts(spec: SpecTask) -> SpecTask:
  key = f"{spec.source}: task {spec.name!r}"
  if spec.type == base.CLASSIFICATION and len(spec.labels) < 2:
    raise SpecError(key, "labels", f"a classification task needs >= 2 labels, got "
                    f"{list(spec.labels)}")
  if spec.type == base.MULTIPLE_CHOICE and spec.num_choices < 2:
    raise SpecError(key, "num_choices", f"a multiple-choice task needs >= 2 choices, got "
                    f"{spec.num_choices}")
  if "f1" in spec.metrics and len(spec.labels) != 2:
    raise SpecError(key, "metrics", "'f1' is binary F1 (of the second label): for "
                    f"{len(spec.labels)} labels use macro_f1")
  return spec


# ------------------------------------------------------------------------------------------------
# Tasks


def build_task(spec: SpecTask) -> Task:
  """The Task of a finalised entry; Task.spec keeps the entry (workdir tasks.json)."""
  labels = (tuple(str(i) for i in range(spec.num_choices))
            if spec.type == base.MULTIPLE_CHOICE else spec.labels)
  return Task(name=spec.name, type=spec.type, labels=labels, metrics=spec.metrics,
              splits=dict(spec.files), reader=functools.partial(read_split, spec=spec),
              num_choices=max(spec.num_choices, 1), spec=entry_record(spec))


def entry_record(spec: SpecTask) -> dict[str, Any]:
  """The entry as JSON-ready data (tasks.json)."""
  return json.loads(json.dumps(dataclasses.asdict(spec)))


def task_from_record(record: Mapping[str, Any]) -> Task:
  """The Task of a recorded entry (tasks.json), reader included; its files need not exist."""
  fields = {f.name: f for f in dataclasses.fields(SpecTask)}
  values = {}
  for key, value in record.items():
    if key not in fields:
      raise ValueError(f"tasks.json: unknown spec key {key!r} in task {record.get('name')!r}")
    values[key] = (tuple(tuple(v) if isinstance(v, list) else v for v in value)
                   if isinstance(value, list) else value)
  return build_task(SpecTask(**values))


def load_spec(path: str | Path, data_dir: str | None = None) -> list[Task]:
  """The Tasks of one spec file, in file order (labels inferred where left out)."""
  from camtl_jax.tasks import registry  # pylint: disable=import-outside-toplevel
  tasks = []
  for i, spec in enumerate(parse_spec(path, data_dir)):
    if spec.name in registry.TASKS:
      raise SpecError(spec.source, f"tasks[{i}].name", f"{spec.name!r} is a registered task: "
                      f"choose another name (e.g. 'my/{spec.name.split('/')[-1]}')")
    tasks.append(build_task(finalise(spec)))
  return tasks


def load_specs(paths: Sequence[str | Path], data_dir: str | None = None) -> dict[str, Task]:
  """name -> Task of every task of the spec files; a name declared twice is refused."""
  tasks: dict[str, Task] = {}
  for path in paths:
    for i, task in enumerate(load_spec(path, data_dir)):
      if task.name in tasks:
        raise SpecError(task.spec["source"], f"tasks[{i}].name", f"task {task.name!r} is "
                        f"also declared in {tasks[task.name].spec['source']}")
      tasks[task.name] = task
  return tasks


def resolve_tasks(names: Sequence[str], spec_paths: Sequence[str | Path] = (),
                  data_dir: str | None = None) -> list[Task]:
  """The Tasks named, in order: the spec files' tasks, else the registry's."""
  from camtl_jax.tasks import registry  # pylint: disable=import-outside-toplevel
  repeated = [n for n, count in collections.Counter(names).items() if count > 1]
  if repeated:
    raise ValueError(f"task {repeated[0]!r} is named twice in the task list {list(names)}")
  specs = load_specs(spec_paths, data_dir)
  tasks = []
  for name in names:
    if name in specs:
      tasks.append(specs[name])
      continue
    try:
      tasks.append(registry.get_task(name))
    except ValueError as e:
      where = (f"not in the spec files ({', '.join(map(str, spec_paths))}: {sorted(specs)})"
               if spec_paths else "declare your own tasks in a spec file (config.task_specs)")
      raise ValueError(f"{str(e).split(' (registered')[0]}; {where}") from None
  return tasks

