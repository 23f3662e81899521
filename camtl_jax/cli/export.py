"""`camtl-export`: a standalone artifact of one task of a trained workdir, or of all its tasks.

  camtl-export --workdir DIR --task demo/sentiment OUT_DIR [--benchmark]
  camtl-export --workdir DIR --all-tasks OUT_DIR

--all-tasks writes one program whose inputs name each example's task, with every task's head
(a batch may mix tasks), and measures its size against one artifact per task (its README).

The task's conditional modules are folded into plain weights; OUT_DIR gets a serialized StableHLO
forward, its weights, meta.json, the tokenizer, a README and load_and_run.py, which needs only
jax, numpy and flatbuffers (and tokenizers for --text).
"""
from __future__ import annotations

import sys
from typing import Sequence

from camtl_jax.cli import common


def make_parser():
  """The camtl-export command line."""
  parser = common.new_parser("camtl-export", __doc__)
  parser.add_argument("--workdir", required=True, help="a trained workdir")
  which = parser.add_mutually_exclusive_group(required=True)
  which.add_argument("--task", help="one of the workdir's tasks")
  which.add_argument("--all-tasks", action="store_true",
                     help="every task in one artifact (inputs include a task id per example)")
  parser.add_argument("--no-size-comparison", action="store_true",
                      help="with --all-tasks: skip exporting each task alone to measure sizes")
  parser.add_argument("out", help="artifact directory (refused when it exists and is not empty, "
                      "unless --overwrite)")
  parser.add_argument("--overwrite", action="store_true",
                      help="write into an existing, non-empty OUT_DIR, replacing its files")
  parser.add_argument("--step", type=int, help="checkpoint step (default: best, else latest)")
  parser.add_argument("--benchmark", action="store_true",
                      help="also time the artifact against the multi-task model")
  return parser


def _export(args) -> None:
  common.check_output_dir(args.out, args.overwrite)  # before the model loads
  if args.all_tasks and args.benchmark:
    raise common.UserError("--benchmark times one task's artifact: use it with --task")
  from camtl_jax import export, workdir  # pylint: disable=import-outside-toplevel
  trained = workdir.load(args.workdir, args.step)
  if args.all_tasks:
    return _export_all(trained, args)
  trained.task_id(args.task)
  result = export.export_task(trained, args.task, args.out)
  print(f"{result.task} -> {result.out_dir}\n  parameters: {result.parameters:,} "
        f"(multi-task model: {result.multitask_parameters:,})")
  if args.benchmark:
    timing = export.benchmark(trained, args.task, args.out)
    print(f"  latency per example (batch {timing['batch_size']}, {timing['length']} tokens): "
          f"artifact {1e3 * timing['export_s_per_example']:.3f} ms, multi-task model "
          f"{1e3 * timing['multitask_s_per_example']:.3f} ms")


def _export_all(trained, args) -> None:
  from camtl_jax import multitask_export  # pylint: disable=import-outside-toplevel
  result = multitask_export.export_all(trained, args.out, not args.no_size_comparison)
  print(f"{len(result.tasks)} tasks -> {result.out_dir}\n  parameters: {result.parameters:,}; "
        f"{result.artifact_bytes / 2**20:.1f} MiB")
  if result.per_task_bytes:
    total = sum(result.per_task_bytes.values())
    print(f"  {len(result.tasks)} per-task artifacts: {total / 2**20:.1f} MiB together "
          f"({result.artifact_bytes / total:.2f}x)")


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-export", make_parser(), _export, argv)


if __name__ == "__main__":
  sys.exit(main())
