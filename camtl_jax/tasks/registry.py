"""The task registry (DESIGN.md section 5): name -> Task, and load_split to read a task's split.

Local files live under one data root, laid out as the datasets are distributed:
  glue/<CoLA|SST-2|MRPC|STS-B|QQP|MNLI|QNLI|RTE|WNLI>/<split>.tsv, glue/diagnostic/diagnostic.tsv
    (the layout of GLUE's download_glue_data.py); superglue/<BoolQ|CB|...>/<train|val|test>.jsonl,
    superglue/AX-b/AX-b.jsonl, superglue/AX-g/AX-g.jsonl; wnut17/ (the WNUT-17 repository's files);
    mrqa/<train|dev>/<Dataset>.jsonl.gz (MRQA's release folders); squad/<train|dev>-v1.1.json;
    scitail/SciTailV1.1/tsv_format/ and snli/snli_1.0/ (each zip extracted as is).

Label lists are the strings of the original files (GLUE's "0"/"1" included), in the class order of
the TFDS builders, so a TFDS class index maps to task.labels[index]. SuperGLUE booleans are
"false"/"true" (the submission writer spells them as the leaderboard wants).

SNLI drops rows whose gold_label is "-" (no annotator consensus), as SNLI's README asks for
standard evaluations; the task definition says so explicitly (readers.read_jsonl_pairs
skip_labels) and each such row is counted ("no_gold_label") and logged. Any other label outside
the list is an error.
"""
from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Sequence

import logging

from camtl_jax.tasks import base, demo, readers
from camtl_jax.tasks.base import DataError, Example, Task

log = logging.getLogger(__name__)

TASKS: dict[str, Task] = {}

GLUE_SPLITS = ("train", "dev", "test")
SUPERGLUE_SPLITS = ("train", "val", "test")
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")
BINARY = ("0", "1")
BOOL = ("false", "true")
WNUT17_TAGS = ("O",) + tuple(f"{p}-{e}" for e in ("corporation", "creative-work", "group",
                                                   "location", "person", "product")
                               for p in ("B", "I"))


def register_task(task: Task, overwrite: bool = False) -> Task:
  """Adds a task to TASKS (the built-in tasks and a user's own Task objects); returns it."""
  if task.type not in base.TASK_TYPES:
    raise ValueError(f"task {task.name!r}: unknown type {task.type!r}; known: {base.TASK_TYPES}")
  if task.name in TASKS and not overwrite:
    raise ValueError(f"task {task.name!r} is already registered (pass overwrite=True to replace)")
  TASKS[task.name] = task
  return task


def get_task(name: str) -> Task:
  """The registered task called `name`; a ValueError naming close matches and `camtl-data list`
  otherwise."""
  if name in TASKS:
    return TASKS[name]
  close = difflib.get_close_matches(name, list(TASKS), n=5, cutoff=0.5)
  # Also match on the short name ("mrpc" -> "glue/mrpc").
  close += [n for n in TASKS if n.split("/")[-1] == name.split("/")[-1] and n not in close]
  hint = f"; did you mean {close}?" if close else ""
  # The close matches only: the whole registry would make a line of hundreds of characters.
  raise ValueError(f"unknown task {name!r}{hint}; `camtl-data list` shows all {len(TASKS)} "
                   "registered tasks")


# ----------------------------------------------------------------------------------------------
# Loading.


def split_path(task: Task, data_dir: str | Path, split: str) -> Path:
  """The local file of a split; ValueError for a split the task does not have."""
  if split not in task.splits:
    raise ValueError(f"task {task.name!r} has no split {split!r}; splits: {list(task.splits)}")
  return Path(data_dir) / task.splits[split]


def file_split(task: Task, path: str | Path) -> str:
  """The split whose file `path` is, by its path's end (glue/CoLA/dev.tsv) or else its name
  (dev.tsv), so that a task's own file is read as training reads it (CoLA's train and dev files
  have no header row, its test file has one); 'test' for any other file (unlabelled input in the
  test split's format)."""
  parts = Path(path).parts
  for match in (lambda f: parts[-len(Path(f).parts):] == Path(f).parts,
                lambda f: parts[-1] == Path(f).name):
    found = [split for split, f in task.splits.items() if match(f)]
    if found:
      return found[0]
  return "test"


def _load_local(task: Task, data_dir: str | Path, split: str, skips: readers.SkipLog
                ) -> list[Example]:
  path = split_path(task, data_dir, split)
  if not path.is_file():
    raise DataError(str(path), None, None, f"missing file for {task.name} split '{split}': "
                    f"expected {path.name} in {path.parent}")
  return list(task.reader(str(path), split, skips))


def _load_tfds(task: Task, data_dir: str | Path, split: str, skips: readers.SkipLog
               ) -> list[Example]:
  from camtl_jax.tasks import tfds_source  # Only this source needs tensorflow_datasets.
  return tfds_source.load_examples(task, data_dir, split, skips)


_SOURCES = {"local": _load_local, "tfds": _load_tfds}


def load_split_with_report(task: Task | str, data_dir: str | Path | None, split: str,
                           source: str = "local", skip_invalid: bool = False
                           ) -> tuple[list[Example], dict[str, int]]:
  """Like load_split, also returning how many rows were left out, by reason."""
  task = get_task(task) if isinstance(task, str) else task
  if source not in _SOURCES:
    raise ValueError(f"unknown source {source!r}; known: {sorted(_SOURCES)}")
  skips = readers.SkipLog(skip_invalid=skip_invalid)
  examples = _SOURCES[source](task, data_dir, split, skips)
  if skips.total:
    # Invalid rows the caller chose to skip deserve a warning; policy skips (SNLI "-") are routine.
    level = logging.WARNING if skips.counts["invalid"] else logging.INFO
    log.log(level, "%s %s: %d examples read, %d rows left out %s", task.name, split,
                len(examples), skips.total, dict(skips.counts))
  if not examples:
    raise DataError(str(data_dir), None, None, f"{task.name} split '{split}' has no examples "
                    f"({skips.total} rows left out: {dict(skips.counts)})")
  return examples, dict(skips.counts)


def load_split(task: Task | str, data_dir: str | Path | None, split: str, source: str = "local",
               skip_invalid: bool = False) -> list[Example]:
  """Reads one split of a task into Examples.

  Args:
    task: a Task (or its registered name).
    data_dir: local source: the data root (see the module docstring); tfds source: the TFDS data
      dir (may be gs://; None for TFDS's default).
    split: one of task.splits ("train", "dev", "dev_matched", "val", "test", ...).
    source: "local" (original files) or "tfds" (a prepared TFDS dataset).
    skip_invalid: leave out (count and log) invalid rows instead of raising DataError.
  """
  return load_split_with_report(task, data_dir, split, source, skip_invalid)[0]


# ----------------------------------------------------------------------------------------------
# Task definitions.


def _glue(name: str, folder: str, text_columns: tuple[str, ...], label_column: str | None,
          labels: tuple[str, ...], metrics: tuple[str, ...], *, splits: Sequence[str] = GLUE_SPLITS,
          id_column: str = "index", headerless: tuple[str, ...] = (),
          task_type: str = base.CLASSIFICATION, files: dict[str, str] | None = None) -> Task:
  spec = readers.TsvSpec(
      text_columns=text_columns, label_column=label_column, labels=labels, id_column=id_column,
      columns_without_header={s: ("source", "label", "mark", "sentence") for s in headerless},
      label_type="float" if task_type == base.REGRESSION else "str",
      label_range=(0.0, 5.0) if task_type == base.REGRESSION else None)
  files = files or {s: f"glue/{folder}/{s}.tsv" for s in splits}
  return Task(name=f"glue/{name}", type=task_type, labels=labels, metrics=metrics, splits=files,
              reader=functools.partial(readers.read_tsv, spec=spec), tfds_name=f"glue/{name}",
              benchmark="glue")


def _glue_tasks() -> list[Task]:
  pair = ("sentence1", "sentence2")
  mnli_splits = ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
  return [
      # CoLA train/dev have no header: source, label, mark, sentence.
      _glue("cola", "CoLA", ("sentence",), "label", BINARY, ("mcc",), headerless=("train", "dev")),
      _glue("sst2", "SST-2", ("sentence",), "label", BINARY, ("accuracy",)),
      _glue("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", BINARY, ("f1", "accuracy")),
      _glue("stsb", "STS-B", pair, "score", (), ("pearson", "spearman"),
            task_type=base.REGRESSION),
      _glue("qqp", "QQP", ("question1", "question2"), "is_duplicate", BINARY, ("f1", "accuracy"),
            id_column="id"),
      _glue("mnli", "MNLI", pair, "gold_label", NLI3, ("accuracy",), splits=mnli_splits),
      _glue("qnli", "QNLI", ("question", "sentence"), "label", NLI2, ("accuracy",)),
      _glue("rte", "RTE", pair, "label", NLI2, ("accuracy",)),
      _glue("wnli", "WNLI", pair, "label", BINARY, ("accuracy",)),
      # The diagnostic set: test only, no labels; scored by the GLUE server (R3 = Matthews corr.).
      _glue("ax", "diagnostic", pair, "label", NLI3, ("mcc",), splits=("test",),
            files={"test": "glue/diagnostic/diagnostic.tsv"}),
  ]


def _superglue_files(folder: str, splits: Sequence[str] = SUPERGLUE_SPLITS) -> dict[str, str]:
  return {s: f"superglue/{folder}/{s}.jsonl" for s in splits}


def _sg_pairs(name: str, folder: str, text_keys: tuple[str, ...], labels: tuple[str, ...],
              metrics: tuple[str, ...], files: dict[str, str] | None = None,
              tfds: str | None = None) -> Task:
  reader = functools.partial(readers.read_jsonl_pairs, text_keys=text_keys, label_key="label",
                             labels=labels, id_key="idx")
  return Task(name=f"superglue/{name}", type=base.CLASSIFICATION, labels=labels, metrics=metrics,
              splits=files or _superglue_files(folder), reader=reader,
              tfds_name=f"super_glue/{tfds or name}", benchmark="superglue")


def _sg_structured(name: str, folder: str, task_type: str, labels: tuple[str, ...],
                   metrics: tuple[str, ...], num_choices: int = 1) -> Task:
  reader = functools.partial(readers.read_superglue, kind=name, labels=labels)
  return Task(name=f"superglue/{name}", type=task_type, labels=labels, metrics=metrics,
              splits=_superglue_files(folder), reader=reader, tfds_name=f"super_glue/{name}",
              num_choices=num_choices, benchmark="superglue")


def _superglue_tasks() -> list[Task]:
  premise = ("premise", "hypothesis")
  return [
      _sg_pairs("boolq", "BoolQ", ("question", "passage"), BOOL, ("accuracy",)),
      _sg_pairs("cb", "CB", premise, ("entailment", "contradiction", "neutral"),
                ("macro_f1", "accuracy")),
      _sg_structured("copa", "COPA", base.MULTIPLE_CHOICE, BINARY, ("accuracy",), num_choices=2),
      _sg_structured("multirc", "MultiRC", base.CLASSIFICATION, BINARY, ("f1a", "question_em")),
      _sg_structured("record", "ReCoRD", base.SPAN, (), ("span_f1", "span_em")),
      _sg_pairs("rte", "RTE", premise, NLI2, ("accuracy",)),
      _sg_structured("wic", "WiC", base.CLASSIFICATION, BOOL, ("accuracy",)),
      _sg_structured("wsc", "WSC", base.CLASSIFICATION, BOOL, ("accuracy",)),
      # Diagnostics: test only, with labels. AX-b is scored with Matthews corr.; AX-g's gender
      # parity needs pair ids that Example does not carry, so only accuracy is computed here.
      _sg_pairs("axb", "AX-b", ("sentence1", "sentence2"), NLI2, ("mcc",),
                files={"test": "superglue/AX-b/AX-b.jsonl"}),
      _sg_pairs("axg", "AX-g", premise, NLI2, ("accuracy",),
                files={"test": "superglue/AX-g/AX-g.jsonl"}),
  ]


_MRQA = {  # registry name -> (MRQA file stem, TFDS config)
    "squad": ("SQuAD", "squad"),
    "newsqa": ("NewsQA", "news_qa"),
    "triviaqa": ("TriviaQA-web", "trivia_qa"),
    "searchqa": ("SearchQA", "search_qa"),
    "hotpotqa": ("HotpotQA", "hotpot_qa"),
    "naturalquestions": ("NaturalQuestionsShort", "natural_questions"),
}


def _other_tasks() -> list[Task]:
  snli_files = {s: f"snli/snli_1.0/snli_1.0_{s}.jsonl" for s in ("train", "dev", "test")}
  scitail_files = {s: f"scitail/SciTailV1.1/tsv_format/scitail_1.0_{s}.tsv"
                   for s in ("train", "dev", "test")}
  scitail_labels = ("entails", "neutral")
  scitail_columns = ("premise", "hypothesis", "label")
  tasks = [
      Task(name="snli", type=base.CLASSIFICATION, labels=NLI3, metrics=("accuracy",),
           splits=snli_files, tfds_name="snli",
           reader=functools.partial(readers.read_jsonl_pairs, text_keys=("sentence1", "sentence2"),
                                    label_key="gold_label", labels=NLI3, id_key="pairID",
                                    skip_labels={"-": "no_gold_label"})),
      Task(name="scitail", type=base.CLASSIFICATION, labels=scitail_labels, metrics=("accuracy",),
           splits=scitail_files, tfds_name="sci_tail",
           reader=functools.partial(readers.read_tsv, spec=readers.TsvSpec(
               text_columns=("premise", "hypothesis"), label_column="label",
               labels=scitail_labels, id_column=None,
               columns_without_header={s: scitail_columns for s in ("train", "dev", "test")}))),
      Task(name="wnut17", type=base.TAGGING, labels=WNUT17_TAGS, metrics=("entity_f1",),
           splits={"train": "wnut17/wnut17train.conll", "dev": "wnut17/emerging.dev.conll",
                   "test": "wnut17/emerging.test.annotated"},
           reader=functools.partial(readers.read_conll, labels=WNUT17_TAGS)),
      Task(name="squad_v1", type=base.SPAN, labels=(), metrics=("span_f1", "span_em"),
           splits={"train": "squad/train-v1.1.json", "dev": "squad/dev-v1.1.json"},
           reader=readers.read_squad, tfds_name="squad/v1.1"),
  ]
  for name, (stem, tfds_config) in _MRQA.items():
    tasks.append(Task(name=f"mrqa/{name}", type=base.SPAN, labels=(),
                      metrics=("span_f1", "span_em"), reader=readers.read_mrqa,
                      splits={s: f"mrqa/{s}/{stem}.jsonl.gz" for s in ("train", "dev")},
                      tfds_name=f"mrqa/{tfds_config}"))
  return tasks


# The offline demo suite is registered like any benchmark (its data is generated on demand).
for _task in _glue_tasks() + _superglue_tasks() + _other_tasks() + demo.demo_tasks():
  register_task(_task)
