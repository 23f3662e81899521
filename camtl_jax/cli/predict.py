"""`camtl-predict`: predictions of a trained workdir's task on new text.

  camtl-predict --workdir DIR --task demo/sentiment --text "what a great movie !"
  camtl-predict --workdir DIR --task glue/rte --input pairs.jsonl --output predictions.jsonl
  camtl-predict --workdir DIR --task demo/span --input dev.json --format task
  camtl-predict --workdir DIR --submission OUT_DIR --data-dir ../shared/data  # GLUE/SuperGLUE

Inputs: one example per jsonl object or tsv row with a header (classification / regression: text,
text_pair; multiple choice: premise + choices, or choices as pairs; span: question, context;
tagging: words or text), or --format task for the task's own distribution format (a file that is
not .jsonl / .tsv, or lacks those fields, is read in the task's own format when it can). Outputs:
one JSON object per example (label and probabilities, value and std, choice, answer, tags), with
"id" and "truncated". The checkpoint is the one with the best dev score, else the latest.
--submission predicts the test split of every GLUE / SuperGLUE task of the model and writes the
leaderboard files (GLUE <Task>.tsv, SuperGLUE <Task>.jsonl) into OUT_DIR.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from camtl_jax.cli import common

FORMATS = ("jsonl", "tsv", "task")   # predict.FORMATS (kept here so --help imports nothing)
ON_LONG = ("truncate", "error")      # predict.ON_LONG


def make_parser():
  """The camtl-predict command line."""
  parser = common.new_parser("camtl-predict", __doc__)
  parser.add_argument("--workdir", required=True, help="a trained workdir")
  parser.add_argument("--task", help="one of the workdir's tasks (not with --submission)")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--input", help="jsonl or tsv file (or the task's own format, --format task)")
  source.add_argument("--text", help="one example: text / premise / question / sentence")
  source.add_argument("--submission", metavar="OUT_DIR",
                      help="write GLUE/SuperGLUE test-set files of all benchmark tasks "
                           "(needs --data-dir)")
  parser.add_argument("--data-dir", help="data root holding the test splits (with --submission)")
  parser.add_argument("--data", dest="data_dir", help=argparse.SUPPRESS)  # the old spelling
  parser.add_argument("--max-examples", type=int, default=0,
                      help="with --submission: only the first N test examples (a quick check)")
  parser.add_argument("--text-pair", help="second segment (pairs), or the context (span tasks)")
  parser.add_argument("--choice", action="append", default=[],
                      help="multiple choice: one choice (repeat); pairs with --text")
  parser.add_argument("--format", choices=FORMATS, help="input format (default: file extension)")
  parser.add_argument("--output", help="jsonl file (default: stdout)")
  parser.add_argument("--step", type=int, help="checkpoint step (default: best dev score, else "
                      "latest)")
  parser.add_argument("--batch-size", type=int)
  parser.add_argument("--on-long", choices=ON_LONG, default="truncate",
                      help="texts longer than max_length: truncate and report (default), or fail")
  return parser


def _check_task(workdir: str, name: str) -> None:
  """An unknown task fails in a second (tasks.json), before the model loads."""
  from camtl_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  tasks, _ = workdir_lib.load_task_records(workdir_lib.check_workdir(workdir))
  names = [t.name for t in tasks]
  if name not in names:
    raise common.UserError(f"unknown task {name!r}: the model in {workdir} was trained on {names}")


def _submission(args) -> None:
  if not args.data_dir:
    raise common.UserError("--submission needs --data-dir DIR (the root of the test files)")
  from camtl_jax import predict, workdir  # pylint: disable=import-outside-toplevel
  trained = workdir.load(args.workdir, args.step)
  for path in predict.write_submissions(trained, args.data_dir, args.submission,
                                        args.max_examples):
    print(path)


def _predict(args) -> None:
  if args.submission:
    return _submission(args)
  if not args.task:
    raise common.UserError("--task is required with --input / --text")
  _check_task(args.workdir, args.task)
  from camtl_jax import predict, workdir  # pylint: disable=import-outside-toplevel
  trained = workdir.load(args.workdir, args.step)
  task = trained.tasks[trained.task_id(args.task)]
  examples = (predict.read_inputs(task, args.input, args.format) if args.input else
              [predict.text_example(task, args.text, args.text_pair, args.choice)])
  records = predict.predict(trained, args.task, examples, args.on_long, args.batch_size)
  lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
  if args.output:
    Path(args.output).write_text(lines, encoding="utf-8")
  else:
    sys.stdout.write(lines)
  n_trunc = sum(r["truncated"] for r in records)
  print(f"camtl-predict: {len(records)} predictions for {args.task} (step {trained.step}); "
        f"{n_trunc} truncated to {trained.config.max_length} tokens", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-predict", make_parser(), _predict, argv)


if __name__ == "__main__":
  sys.exit(main())
