"""Readers for each dataset's original distribution format.

Every reader has the signature `read_x(path, split, skips=None, *, <format options>)` and yields
base.Example records. The registry binds the format options with functools.partial, so a Task's
reader is called as `task.reader(path, split, skips)`.

Bad input raises base.DataError naming the file, the line (1-based, header included) and the field.
Nothing disappears silently: a row is left out only
  * when the caller asked for it (`SkipLog(skip_invalid=True)`, i.e. load_split(skip_invalid=True)):
    invalid rows are then counted under "invalid" and each one is logged; or
  * by a documented task policy bound into the task definition, e.g. SNLI's rows whose gold_label is
    "-" (no annotator consensus), which the SNLI convention drops: counted under "no_gold_label" and
    summarised in the log. The reader's default for such rows is to raise.
File-level problems (missing file, empty file, missing header column) always raise.
Every text a reader yields (sentence, question, passage, choice, answer, token, ...) passes through
check_text: an empty or whitespace-only one, or one holding a NUL byte, is an invalid row (e.g.
"glue/RTE/train.tsv, line 17, field 'sentence1': empty text"), refused like any other, never
trained on or dropped silently.

Conversions to a model-ready form (documented here once, used by the file and the TFDS readers):
  * COPA: multiple choice; choice k = (premise + " " + question prompt, choice k), with the prompts
    "What was the cause of this?" / "What happened as a result?" (the SuperGLUE baselines' wording).
  * WiC: texts = (sentence1, sentence2), the target word marked in each as *word* (by the character
    offsets of the jsonl, or the token indices of the original format).
  * WSC: texts = (text,), span1 (the candidate referent) marked as *span1* and span2 (the pronoun)
    as #span2#, by their word indices (the span texts often differ from the text in case or
    punctuation).
  * MultiRC: one binary example per answer option, texts = (paragraph, question + " " + answer),
    example_id = (paragraph idx, question idx, answer idx).
  * ReCoRD: a span task: question = the query (with its "@placeholder"), context = the passage,
    answers = the gold entity spans; the candidate entity list is not used (a span head may predict
    any passage span).
  * BoolQ: texts = (question, passage).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import gzip
import itertools
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import logging

from camtl_jax.tasks.base import DataError, Example

log = logging.getLogger(__name__)

COPA_PROMPTS = {"cause": "What was the cause of this?", "effect": "What happened as a result?"}
MARK = "*"  # WiC target word, WSC span1
PRONOUN_MARK = "#"  # WSC span2


# ----------------------------------------------------------------------------------------------
# Skips and the row loop.


class SkipLog:
  """Counts, by reason, every row a reader leaves out, and logs it.

  invalid(err) raises err unless skip_invalid; policy(reason, where) counts a documented task
  policy skip (e.g. SNLI gold_label "-").
  """

  def __init__(self, skip_invalid: bool = False):
    self.skip_invalid = skip_invalid
    self.counts: collections.Counter[str] = collections.Counter()

  def invalid(self, err: DataError) -> None:
    if not self.skip_invalid:
      raise err
    self.counts["invalid"] += 1
    log.warning("skip_invalid: leaving out %s", err)

  def policy(self, reason: str, where: str) -> None:
    self.counts[reason] += 1
    log.debug("leaving out %s (%s)", where, reason)

  @property
  def total(self) -> int:
    return sum(self.counts.values())


def emit(path: str, records: Iterable[tuple[int, Any]],
          parse: Callable[[int, Any], list[Example]], skips: SkipLog) -> Iterator[Example]:
  """Parses each (line, record); a DataError on one record goes to skips.invalid."""
  before = skips.total
  for line, record in records:
    try:
      examples = parse(line, record)
    except DataError as err:
      skips.invalid(err)
      continue
    yield from examples
  if skips.total > before:
    log.info("%s: left out %d row(s): %s", path, skips.total - before, dict(skips.counts))


def is_test(split: str) -> bool:
  """GLUE/SuperGLUE test splits carry no labels; a missing label elsewhere is an error."""
  return split.startswith("test")


# ----------------------------------------------------------------------------------------------
# Files and lines.


def open_binary(path: str):
  p = Path(path)
  if not p.is_file():
    raise DataError(path, None, None, "file not found")
  return gzip.open(p, "rb") if p.name.endswith(".gz") else open(p, "rb")


def _decode(path: str, line: int, raw: bytes) -> str:
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    bad = raw[e.start:e.start + 4]
    raise DataError(path, line, None, f"invalid UTF-8 at byte {e.start} of the line ({bad!r}); "
                    "the file must be UTF-8 encoded") from None
  # The UTF-8 byte-order mark (MRPC files start with one) is not part of the first field.
  return text.removeprefix("\ufeff") if line == 1 else text


def _raw_lines(path: str, skips: SkipLog) -> Iterator[tuple[int, str]]:
  """(1-based line number, decoded line without its newline); undecodable lines go to skips."""
  i = 0
  with open_binary(path) as f:
    try:
      for i, raw in enumerate(f, 1):
        try:
          text = _decode(path, i, raw)
        except DataError as err:
          if i == 1:  # A file whose first line (often the header) is unreadable is unusable.
            raise
          skips.invalid(err)
          continue
        yield i, text.rstrip("\r\n")
    except (OSError, EOFError) as e:  # A corrupt or truncated .gz file.
      raise DataError(path, i + 1, None, f"cannot read the file: {e}") from None


def _content_lines(path: str, skips: SkipLog) -> Iterator[tuple[int, str]]:
  """Non-blank lines of a line-per-record file (tsv, jsonl).

  Trailing blank lines end the file; a blank line with records after it is an invalid row (a
  record may have been lost there). A file with no record at all is an error.
  """
  blank, seen = None, False
  for i, text in _raw_lines(path, skips):
    if not text.strip():
      blank = blank or i
      continue
    if blank is not None:
      skips.invalid(DataError(path, blank, None, "blank line between records"))
      blank = None
    seen = True
    yield i, text
  if not seen:
    raise DataError(path, None, None, "empty file: no records")


def split_tsv(text: str) -> list[str]:
  """The tab-separated fields of one line. Quoting disabled, as the GLUE tools read these files:
  quote characters are ordinary text (what csv.reader with QUOTE_NONE gives, without its field
  size limit and its error on a lone carriage return, neither of which names the file)."""
  return text.split("\t")


_split_tsv = split_tsv
# Other readers of quoted csv (task spec files) go through the csv module: fields of any length,
# the row then truncated to max_length like any long text, instead of a raw `field larger than
# field limit (131072)` error.
csv.field_size_limit(2**31 - 1)


def jsonl(path: str, skips: SkipLog) -> Iterator[tuple[int, dict]]:
  """(line, JSON object) for each non-blank line; bad JSON is an invalid row."""
  for i, text in _content_lines(path, skips):
    try:
      record = json.loads(text)
    except json.JSONDecodeError as e:
      skips.invalid(DataError(path, i, None, f"invalid JSON ({e.msg} at column {e.colno})"))
      continue
    if not isinstance(record, dict):
      skips.invalid(DataError(path, i, None,
                              f"expected a JSON object, got {type(record).__name__}"))
      continue
    yield i, record


def _get(record: Mapping, key: str, path: str, line: int | str | None, kind: type | tuple = str,
         field: str | None = None) -> Any:
  """record[key] with a DataError naming the key when it is missing or of the wrong type."""
  field = field or key
  if key not in record:
    raise DataError(path, line, field, f"missing key (keys present: {sorted(record)})")
  value = record[key]
  # bool is an int in Python, but an int field holding true/false is still wrong.
  kinds = kind if isinstance(kind, tuple) else (kind,)
  if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
    raise DataError(path, line, field, f"expected {' or '.join(k.__name__ for k in kinds)}, "
                    f"got {type(value).__name__} {value!r}")
  return value


def check_text(value: Any, path: str, line: int | str | None, field: str) -> str:
  """value, checked to be a non-empty text: every text a reader yields goes through here.

  An empty or whitespace-only text (a sentence, question, passage, answer, token, ...) is a
  DataError naming the file, the line (or record) and the field: such a row would otherwise train
  or score silently on nothing. The row is refused, never dropped (skip_invalid counts it).
  """
  if not isinstance(value, str):
    raise DataError(path, line, field, f"expected str, got {type(value).__name__} {value!r}")
  if not value.strip():
    raise DataError(path, line, field,
                    "empty text" if not value else f"empty text (only whitespace: {value!r})")
  if "\0" in value:  # a binary or damaged file: a tokenizer would read it as ordinary text
    raise DataError(path, line, field, f"NUL byte at character {value.index(chr(0))} of the text")
  return value


def _get_text(record: Mapping, key: str, path: str, line: int | str | None,
              field: str | None = None) -> str:
  """record[key] as by _get, checked by check_text."""
  return check_text(_get(record, key, path, line, str, field), path, line, field or key)


def check_label(value: str, labels: Sequence[str], path: str, line: int | str | None,
                 field: str) -> str:
  if value not in labels:
    raise DataError(path, line, field, f"unknown label {value!r}; allowed labels: {list(labels)}")
  return value


def _as_id(value: str) -> int | str:
  return int(value) if value.isdigit() else value


# ----------------------------------------------------------------------------------------------
# TSV (GLUE, SciTail tsv_format).


@dataclasses.dataclass(frozen=True)
class TsvSpec:
  """Which columns of a tsv hold what.

  columns_without_header: split -> column names, for splits whose file has no header row (CoLA
    train/dev; every SciTail tsv file).
  label_column: absent on test splits (label None); required elsewhere.
  id_column: the column with the submission id (GLUE "index", QQP "id"); where the file has none,
    example_id is the 0-based data row number (what TFDS stores as idx).
  label_type: "str" (checked against labels) or "float" (regression, checked against label_range).
  """
  text_columns: tuple[str, ...]
  label_column: str | None
  labels: tuple[str, ...] = ()
  id_column: str | None = None
  columns_without_header: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  label_type: str = "str"
  label_range: tuple[float, float] | None = None


def _tsv_columns(path: str, split: str, spec: TsvSpec, header: list[str]) -> dict[str, int]:
  where = {name: i for i, name in enumerate(header)}
  needed = list(spec.text_columns)
  if spec.label_column and not is_test(split):
    needed.append(spec.label_column)
  for name in needed:
    if name not in where:
      raise DataError(path, 1, name, f"missing column; the header has {header}")
  return where


def _tsv_label(fields: list[str], cols: dict[str, int], spec: TsvSpec, path: str,
               line: int) -> str | float | None:
  if spec.label_column is None or spec.label_column not in cols:
    return None  # A test split.
  value = fields[cols[spec.label_column]]
  if spec.label_type == "float":
    try:
      score = float(value)
    except ValueError:
      raise DataError(path, line, spec.label_column, f"not a number: {value!r}") from None
    lo, hi = spec.label_range or (float("-inf"), float("inf"))
    if not lo <= score <= hi:
      raise DataError(path, line, spec.label_column, f"score {score} outside [{lo}, {hi}]")
    return score
  return check_label(value, spec.labels, path, line, spec.label_column)


def read_tsv(path: str, split: str, skips: SkipLog | None = None, *, spec: TsvSpec
             ) -> Iterator[Example]:
  """Reads a GLUE-style tsv (tab separated, quoting disabled); columns are found by header name."""
  skips = skips or SkipLog()
  lines = _content_lines(path, skips)
  if split in spec.columns_without_header:
    header, first_row_line = list(spec.columns_without_header[split]), 1
  else:
    header, first_row_line = _split_tsv(next(lines)[1]), 2
  cols = _tsv_columns(path, split, spec, header)

  def parse(line: int, text: str) -> list[Example]:
    fields = _split_tsv(text)
    if len(fields) != len(header):
      raise DataError(path, line, None, f"expected {len(header)} tab-separated fields "
                      f"({header}), found {len(fields)}")
    texts = tuple(check_text(fields[cols[c]], path, line, c) for c in spec.text_columns)
    # Blank lines between rows are errors, so the line number gives the data row number.
    row = line - first_row_line
    ex_id = _as_id(fields[cols[spec.id_column]]) if spec.id_column in cols else row
    return [Example(guid=f"{path}:{line}", texts=texts,
                    label=_tsv_label(fields, cols, spec, path, line), example_id=ex_id)]

  empty = True
  for ex in emit(path, lines, parse, skips):
    empty = False
    yield ex
  if empty and skips.total == 0:
    raise DataError(path, None, None, "the file has a header but no rows")


# ----------------------------------------------------------------------------------------------
# JSON-lines classification (SuperGLUE pairs, SNLI, SciTail snli_format).


def json_label(value: Any, path: str, line: int, field: str) -> str:
  """SuperGLUE stores labels as JSON booleans (true/false), ints (0/1) or strings."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, int):
    return str(value)
  if isinstance(value, str):
    return value
  raise DataError(path, line, field, f"label must be a string, boolean or int, got {value!r}")


def _record_label(record: Mapping, key: str, labels: Sequence[str], split: str, path: str,
                  line: int, field: str | None = None) -> str | None:
  field = field or key
  if key not in record:
    if is_test(split):
      return None
    raise DataError(path, line, field, "missing label")
  return check_label(json_label(record[key], path, line, field), labels, path, line, field)


def read_jsonl_pairs(path: str, split: str, skips: SkipLog | None = None, *,
                     text_keys: tuple[str, ...], label_key: str, labels: tuple[str, ...],
                     id_key: str | None = "idx", skip_labels: Mapping[str, str] | None = None
                     ) -> Iterator[Example]:
  """One classification example per JSON line (SuperGLUE BoolQ/CB/RTE/AX-b/AX-g, SNLI, SciTail).

  skip_labels: label value -> skip reason, rows the task definition drops by policy (SNLI's "-");
  counted and logged. Without it such a label is an unknown-label error.
  """
  skips = skips or SkipLog()
  skip_labels = skip_labels or {}

  def parse(line: int, record: dict) -> list[Example]:
    raw = record.get(label_key)
    if isinstance(raw, str) and raw in skip_labels:
      skips.policy(skip_labels[raw], f"{path}:{line}")
      return []
    texts = tuple(_get_text(record, k, path, line) for k in text_keys)
    ex_id = _get(record, id_key, path, line, (int, str)) if id_key else line - 1
    return [Example(guid=f"{path}:{line}", texts=texts, example_id=ex_id,
                    label=_record_label(record, label_key, labels, split, path, line))]

  yield from emit(path, jsonl(path, skips), parse, skips)


# ----------------------------------------------------------------------------------------------
# SuperGLUE tasks with structure (COPA, WiC, WSC, MultiRC, ReCoRD).


def copa_example(guid: str, premise: str, choice1: str, choice2: str, question: str,
                 label: int | None, idx: int, path: str = "", line: Any = None) -> Example:
  """COPA as multiple choice; the question (cause/effect) is folded into the first segment."""
  if question not in COPA_PROMPTS:
    raise DataError(path, line, "question", f"unknown COPA question {question!r}; allowed: "
                    f"{sorted(COPA_PROMPTS)}")
  first = f"{premise} {COPA_PROMPTS[question]}"
  return Example(guid=guid, choices=((first, choice1), (first, choice2)), label=label,
                 example_id=idx)


def _copa(path: str, split: str, line: int, record: dict, labels: tuple[str, ...]
          ) -> list[Example]:
  label = _record_label(record, "label", labels, split, path, line)  # "0" / "1"
  g = functools.partial(_get, record, path=path, line=line)
  t = functools.partial(_get_text, record, path=path, line=line)
  return [copa_example(f"{path}:{line}", t("premise"), t("choice1"), t("choice2"), g("question"),
                       None if label is None else int(label), g("idx", kind=int), path, line)]


def mark_span(text: str, start: int, end: int, mark: str = MARK) -> str:
  """text with text[start:end] wrapped in `mark`."""
  return f"{text[:start]}{mark}{text[start:end]}{mark}{text[end:]}"


def mark_words(words: list[str], start: int, count: int, mark: str) -> list[str]:
  """Wraps words[start:start+count] in `mark` (in a copy)."""
  words = list(words)
  words[start] = mark + words[start]
  words[start + count - 1] = words[start + count - 1] + mark
  return words


def wic_example(guid: str, sentence1: str, sentence2: str, offsets: tuple[int, int, int, int],
                label: str | None, idx: int | str, path: str = "", line: Any = None) -> Example:
  """WiC with the target word marked in both sentences by character offsets (s1, e1, s2, e2)."""
  s1, e1, s2, e2 = offsets
  for name, text, s, e in (("start1/end1", sentence1, s1, e1), ("start2/end2", sentence2, s2, e2)):
    if not 0 <= s < e <= len(text):
      raise DataError(path, line, name, f"offsets [{s}, {e}) outside the sentence "
                      f"(length {len(text)})")
  return Example(guid=guid, texts=(mark_span(sentence1, s1, e1), mark_span(sentence2, s2, e2)),
                 label=label, example_id=idx)


def _wic(path: str, split: str, line: int, record: dict, labels: tuple[str, ...]) -> list[Example]:
  g = functools.partial(_get, record, path=path, line=line)
  t = functools.partial(_get_text, record, path=path, line=line)
  offsets = (g("start1", kind=int), g("end1", kind=int), g("start2", kind=int), g("end2", kind=int))
  t("word")  # The target word: not used (the offsets mark it), but an empty one is a broken row.
  return [wic_example(f"{path}:{line}", t("sentence1"), t("sentence2"), offsets,
                      _record_label(record, "label", labels, split, path, line),
                      g("idx", kind=(int, str)), path, line)]


def wsc_example(guid: str, text: str, span1: tuple[int, str], span2: tuple[int, str],
                label: str | None, idx: int | str, path: str = "", line: Any = None) -> Example:
  """WSC with span1 marked *...* and span2 #...#, located by word index (span = (index, text)).

  span1's text must be the words at its index, up to case, punctuation and a possessive 's
  ("Emma" at "Emma's"): a DataError otherwise (training would learn whatever word is there). On
  unlabelled (test) rows a mismatch is a warning naming the row, as the official test split holds
  three and its leaderboard file needs every row. (span2, the pronoun, is placed by its index:
  the official validation split has a row whose span2 text is not at its index.)
  """
  words = text.split()
  for name, (index, span_text), mark in (("span1_index", span1, MARK),
                                         ("span2_index", span2, PRONOUN_MARK)):
    count = max(1, len(span_text.split()))
    if not 0 <= index <= len(words) - count:
      raise DataError(path, line, name, f"word index {index} (+{count} words) outside the text "
                      f"({len(words)} words)")
    if name == "span1_index":
      _check_span_words(words[index:index + count], span_text, label is None, path, line)
    words = mark_words(words, index, count, mark)
  return Example(guid=guid, texts=(" ".join(words),), label=label, example_id=idx)


def _span_word(word: str) -> str:
  return re.sub(r"\W", "", re.sub(r"['\u2019]s$", "", word.lower()))


def _check_span_words(found: list[str], span_text: str, warn_only: bool, path: str,
                      line: Any) -> None:
  """wsc_example's check of span1's text against the words at its index."""
  if [_span_word(w) for w in found] == [_span_word(w) for w in span_text.split()]:
    return
  error = DataError(path, line, "span1_text", f"{span_text!r} is not the text at span1_index "
                    f"({' '.join(found)!r})")
  if not warn_only:
    raise error
  log.warning("%s; marking the words at the index", error)


def _wsc(path: str, split: str, line: int, record: dict, labels: tuple[str, ...]) -> list[Example]:
  target = _get(record, "target", path, line, dict)
  t = functools.partial(_get, target, path=path, line=line)
  st = functools.partial(_get_text, target, path=path, line=line)
  span1 = (t("span1_index", kind=int, field="target.span1_index"),
           st("span1_text", field="target.span1_text"))
  span2 = (t("span2_index", kind=int, field="target.span2_index"),
           st("span2_text", field="target.span2_text"))
  return [wsc_example(f"{path}:{line}", _get_text(record, "text", path, line), span1, span2,
                      _record_label(record, "label", labels, split, path, line),
                      _get(record, "idx", path, line, (int, str)), path, line)]


def multirc_example(guid: str, paragraph: str, question: str, answer: str, label: str | None,
                    ids: tuple[int, int, int]) -> Example:
  """One MultiRC answer option as a binary pair example; ids = (paragraph, question, answer)."""
  return Example(guid=guid, texts=(paragraph, f"{question} {answer}"), label=label, example_id=ids)


def _multirc(path: str, split: str, line: int, record: dict, labels: tuple[str, ...]
             ) -> list[Example]:
  p_idx = _get(record, "idx", path, line, int)
  passage = _get(record, "passage", path, line, dict)
  text = _get_text(passage, "text", path, line, field="passage.text")
  out = []
  for qi, q in enumerate(_get(passage, "questions", path, line, list, "passage.questions")):
    qf = f"passage.questions[{qi}]"
    q_idx = _get(q, "idx", path, line, int, f"{qf}.idx")
    question = _get_text(q, "question", path, line, field=f"{qf}.question")
    for ai, a in enumerate(_get(q, "answers", path, line, list, f"{qf}.answers")):
      af = f"{qf}.answers[{ai}]"
      a_idx = _get(a, "idx", path, line, int, f"{af}.idx")
      label = _record_label(a, "label", labels, split, path, line, f"{af}.label")
      out.append(multirc_example(f"{path}:{line}:{q_idx}:{a_idx}", text, question,
                                 _get_text(a, "text", path, line, field=f"{af}.text"), label,
                                 (p_idx, q_idx, a_idx)))
  return out


def _record(path: str, split: str, line: int, record: dict, labels: tuple[str, ...]
            ) -> list[Example]:
  del labels  # A span task.
  passage = _get(record, "passage", path, line, dict)
  context = _get_text(passage, "text", path, line, field="passage.text")
  out = []
  for qi, qa in enumerate(_get(record, "qas", path, line, list)):
    field = f"qas[{qi}]"
    spans = []
    answers = _get(qa, "answers", path, line, list, f"{field}.answers") if "answers" in qa else []
    for ai, a in enumerate(answers):
      af = f"{field}.answers[{ai}]"
      start = _get(a, "start", path, line, int, f"{af}.start")
      end = _get(a, "end", path, line, int, f"{af}.end")  # inclusive
      spans.append(checked_span(context, _get_text(a, "text", path, line, field=f"{af}.text"),
                                start, end + 1, path, line, af))
    if not spans and not is_test(split):
      raise DataError(path, line, f"{field}.answers", "missing answers")
    texts = tuple(dict.fromkeys(t for t, _ in spans))
    out.append(Example(guid=f"{path}:{line}:{qi}", question=_get_text(qa, "query", path, line,
                                                                       field=f"{field}.query"),
                       context=context, answers=tuple(spans), answer_texts=texts,
                       example_id=_get(qa, "idx", path, line, (int, str), f"{field}.idx")))
  return out


def checked_span(context: str, text: str, start: int, end: int, path: str, line: Any,
                 field: str) -> tuple[str, int]:
  """(text, start) after checking that context[start:end] is the answer text."""
  if not 0 <= start < end <= len(context):
    raise DataError(path, line, field, f"span [{start}, {end}) outside the context "
                    f"(length {len(context)})")
  if context[start:end] != text:
    raise DataError(path, line, field, f"answer text {text!r} differs from the context at its "
                    f"offset ({context[start:end]!r})")
  return text, start


_SUPERGLUE_PARSERS: dict[str, Callable[..., list[Example]]] = {
    "copa": _copa,
    "wic": _wic,
    "wsc": _wsc,
    "multirc": _multirc,
    "record": _record,
}


def read_superglue(path: str, split: str, skips: SkipLog | None = None, *, kind: str,
                   labels: tuple[str, ...] = ()) -> Iterator[Example]:
  """SuperGLUE jsonl of a structured task; kind in copa / wic / wsc / multirc / record."""
  skips = skips or SkipLog()
  parse = _SUPERGLUE_PARSERS[kind]
  yield from emit(path, jsonl(path, skips),
                   lambda line, record: parse(path, split, line, record, labels), skips)


# ----------------------------------------------------------------------------------------------
# WiC original text format: <split>.data.txt (word, PoS, "i-j", sentence1, sentence2) + .gold.txt.


def _wic_gold(path: str, split: str, n_data: int, skips: SkipLog) -> list[str | None]:
  gold_path = path.replace(".data.txt", ".gold.txt")
  if gold_path == path or not Path(gold_path).is_file():
    if is_test(split):
      return [None] * n_data
    raise DataError(gold_path, None, None, f"missing gold file (expected {Path(gold_path).name} "
                    f"beside {Path(path).name})")
  gold = list(_raw_lines(gold_path, skips))
  while gold and not gold[-1][1].strip():
    gold.pop()
  if len(gold) != n_data:
    raise DataError(gold_path, len(gold), None, f"{len(gold)} gold lines for {n_data} data lines")
  out = []
  for i, g in gold:
    value = {"T": "true", "F": "false"}.get(g.strip())
    if value is None:
      raise DataError(gold_path, i, "gold", f"unknown label {g.strip()!r}; allowed labels: "
                      "['T', 'F']")
    out.append(value)
  return out


def _wic_original_example(path: str, line: int, text: str, label: str | None, row: int
                          ) -> Example:
  fields = text.split("\t")
  if len(fields) != 5:
    raise DataError(path, line, None, "expected 5 tab-separated fields (word, PoS, index1-index2, "
                    f"sentence1, sentence2), found {len(fields)}")
  check_text(fields[0], path, line, "word")  # Not used (the index marks it), but must be there.
  indices = fields[2].split("-")
  if len(indices) != 2 or not all(i.isdigit() for i in indices):
    raise DataError(path, line, "index1-index2", f"expected two word indices, got {fields[2]!r}")
  sentences = []
  for name, sentence, index in zip(("sentence1", "sentence2"), fields[3:], map(int, indices)):
    words = check_text(sentence, path, line, name).split(" ")
    if index >= len(words):
      raise DataError(path, line, "index1-index2", f"word index {index} outside the sentence "
                      f"({len(words)} words)")
    if not words[index].strip():  # Two spaces in a row make an empty token.
      raise DataError(path, line, "index1-index2", f"word index {index} of {name} is an empty "
                      "token (two spaces in a row?)")
    sentences.append(" ".join(mark_words(words, index, 1, MARK)))
  return Example(guid=f"{path}:{line}", texts=tuple(sentences), label=label, example_id=row)


def read_wic_original(path: str, split: str, skips: SkipLog | None = None) -> Iterator[Example]:
  """WiC as its authors distribute it: path is <split>.data.txt; labels from <split>.gold.txt.

  The sentences are tokenised; the target word is marked as in the jsonl reader (*word*), located
  by its token index. example_id is the 0-based line number.
  """
  skips = skips or SkipLog()
  data = list(_content_lines(path, skips))
  gold = _wic_gold(path, split, len(data), skips)
  records = [(line, (text, label, row))
             for row, ((line, text), label) in enumerate(zip(data, gold))]
  yield from emit(path, records,
                   lambda line, r: [_wic_original_example(path, line, r[0], r[1], r[2])], skips)


# ----------------------------------------------------------------------------------------------
# CoNLL (WNUT-17).


def conll_sentences(path: str, skips: SkipLog) -> Iterator[tuple[int, list[tuple[int, str]]]]:
  """(first line, [(line, text), ...]) per sentence; blank or whitespace-only lines separate."""
  sentence: list[tuple[int, str]] = []
  seen = False
  for i, text in _raw_lines(path, skips):
    if text.strip():
      sentence.append((i, text))
      seen = True
    elif sentence:
      yield sentence[0][0], sentence
      sentence = []
  if sentence:
    yield sentence[0][0], sentence
  if not seen:
    raise DataError(path, None, None, "empty file: no sentences")


def read_conll(path: str, split: str, skips: SkipLog | None = None, *, labels: tuple[str, ...]
               ) -> Iterator[Example]:
  """CoNLL token<TAB>tag lines, one sentence per block (WNUT-17). example_id = sentence number."""
  del split
  skips = skips or SkipLog()
  numbers = itertools.count()

  def parse(first: int, lines: list[tuple[int, str]]) -> list[Example]:
    number = next(numbers)  # Counts sentences that are left out too.
    words, tags = [], []
    for i, text in lines:
      fields = text.split("\t")
      if len(fields) != 2 or not fields[1].strip():
        raise DataError(path, i, None, f"expected 'token<TAB>tag', found {len(fields)} "
                        f"tab-separated field(s): {text!r}")
      # An empty token ("\tO") or a whitespace-only one (" \tO": not a separator line, as it
      # holds a tag) would be a word of no text.
      words.append(check_text(fields[0], path, i, "token"))
      tags.append(check_label(fields[1].strip(), labels, path, i, "tag"))
    return [Example(guid=f"{path}:{first}", words=tuple(words), tags=tuple(tags),
                    example_id=number)]

  yield from emit(path, conll_sentences(path, skips), parse, skips)


# ----------------------------------------------------------------------------------------------
# Extractive QA: MRQA jsonl(.gz), SQuAD v1.1 json.


def _mrqa_qa(path: str, line: int, context: str, qa: Mapping, field: str) -> Example:
  spans = []
  for ai, det in enumerate(_get(qa, "detected_answers", path, line, list,
                                f"{field}.detected_answers")):
    df = f"{field}.detected_answers[{ai}].char_spans"
    for si, span in enumerate(_get(det, "char_spans", path, line, list, df)):
      if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)):
        raise DataError(path, line, f"{df}[{si}]", f"expected [start, end], got {span!r}")
      start, end = span  # inclusive end
      if not 0 <= start <= end < len(context):
        raise DataError(path, line, f"{df}[{si}]", f"span {span} outside the context "
                        f"(length {len(context)})")
      # The detected text may differ in case from the context; the span is what the model learns.
      spans.append((context[start:end + 1], start))
  answers = [check_text(a, path, line, f"{field}.answers[{ai}]")
             for ai, a in enumerate(_get(qa, "answers", path, line, list, f"{field}.answers"))]
  qid = _get(qa, "qid", path, line, field=f"{field}.qid")
  return Example(guid=f"{path}:{line}:{qid}",
                 question=_get_text(qa, "question", path, line, field=f"{field}.question"),
                 context=context, answers=tuple(dict.fromkeys(spans)),
                 answer_texts=tuple(answers), example_id=qid)


def read_mrqa(path: str, split: str, skips: SkipLog | None = None) -> Iterator[Example]:
  """MRQA shared-task jsonl(.gz): a {"header": ...} line, then one context with its qas per line.

  answers: the detected character spans (context[start:end+1], inclusive end as in MRQA);
  answer_texts: the qa's "answers" strings, what the official evaluation scores against.
  """
  del split
  skips = skips or SkipLog()
  records = jsonl(path, skips)
  line, header = next(records)
  if "header" not in header:
    raise DataError(path, line, "header", 'expected the MRQA header line ({"header": ...}) first')

  def parse(line: int, record: dict) -> list[Example]:
    context = _get_text(record, "context", path, line)
    return [_mrqa_qa(path, line, context, qa, f"qas[{i}]")
            for i, qa in enumerate(_get(record, "qas", path, line, list))]

  yield from emit(path, records, parse, skips)


def _load_json_document(path: str) -> Any:
  with open_binary(path) as f:
    raw = f.read()
  if not raw.strip():
    raise DataError(path, None, None, "empty file")
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise DataError(path, line, None, "invalid UTF-8; the file must be UTF-8 encoded") from None
  try:
    return json.loads(text.removeprefix("\ufeff"))
  except json.JSONDecodeError as e:
    raise DataError(path, e.lineno, None, f"invalid JSON ({e.msg} at column {e.colno})") from None


def _squad_qas(path: str, document: Any) -> Iterator[tuple[str, tuple[str, str, Mapping]]]:
  """(field path, (context field path, context, qa)) for every question of a SQuAD document."""
  for ai, article in enumerate(_get(document, "data", path, None, list)):
    for pi, paragraph in enumerate(_get(article, "paragraphs", path, None, list,
                                        f"data[{ai}].paragraphs")):
      field = f"data[{ai}].paragraphs[{pi}]"
      context = _get(paragraph, "context", path, None, field=f"{field}.context")
      for qi, qa in enumerate(_get(paragraph, "qas", path, None, list, f"{field}.qas")):
        yield f"{field}.qas[{qi}]", (f"{field}.context", context, qa)


def _squad_example(path: str, field: str, context_field: str, context: str, qa: Mapping
                   ) -> Example:
  # Checked here, per question, so that skip_invalid refuses (and counts) each of its questions.
  check_text(context, path, None, context_field)
  qid = _get(qa, "id", path, None, field=f"{field}.id")
  spans = []
  for i, a in enumerate(_get(qa, "answers", path, None, list, f"{field}.answers")):
    af = f"{field}.answers[{i}]"
    text = _get_text(a, "text", path, None, field=f"{af}.text")
    start = _get(a, "answer_start", path, None, int, f"{af}.answer_start")
    spans.append(checked_span(context, text, start, start + len(text), path, None, af))
  return Example(guid=f"{path}:{qid}", question=_get_text(qa, "question", path, None,
                                                          field=f"{field}.question"),
                 context=context, answers=tuple(dict.fromkeys(spans)),
                 answer_texts=tuple(t for t, _ in spans), example_id=qid)


def read_squad(path: str, split: str, skips: SkipLog | None = None) -> Iterator[Example]:
  """SQuAD v1.1 json (data -> paragraphs -> qas -> answers[{text, answer_start}]).

  Errors name the record by its JSON path (e.g. data[3].paragraphs[0].qas[2].answers[0]) since the
  whole file is one JSON document. answer_texts keeps every gold answer (duplicates included, as
  the official script takes the max over them).
  """
  del split
  skips = skips or SkipLog()
  document = _load_json_document(path)
  if not isinstance(document, dict):
    raise DataError(path, 1, None, "expected a JSON object with a 'data' list")

  yield from emit(path, _squad_qas(path, document),
                   lambda field, record: [_squad_example(path, field, *record)], skips)
