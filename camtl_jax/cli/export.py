"""`camtl-export`: a standalone artifact of one task of a trained workdir.

  camtl-export --workdir DIR --task demo/sentiment OUT_DIR [--benchmark]

The task's conditional modules are folded into plain weights; OUT_DIR gets a serialized StableHLO
forward, its weights, meta.json, the tokenizer, a README and load_and_run.py, which needs only
jax, numpy and flatbuffers (and tokenizers for --text).
"""
from __future__ import annotations

import sys
from typing import Sequence

from camtl_jax.cli import common


def _parser():
  parser = common.new_parser("camtl-export", __doc__)
  parser.add_argument("--workdir", required=True, help="a trained workdir")
  parser.add_argument("--task", required=True, help="one of the workdir's tasks")
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
  from camtl_jax import export, workdir  # pylint: disable=import-outside-toplevel
  trained = workdir.load(args.workdir, args.step)
  trained.task_id(args.task)
  result = export.export_task(trained, args.task, args.out)
  print(f"{result.task} -> {result.out_dir}\n  parameters: {result.parameters:,} "
        f"(multi-task model: {result.multitask_parameters:,})")
  if args.benchmark:
    timing = export.benchmark(trained, args.task, args.out)
    print(f"  latency per example (batch {timing['batch_size']}, {timing['length']} tokens): "
          f"artifact {1e3 * timing['export_s_per_example']:.3f} ms, multi-task model "
          f"{1e3 * timing['multitask_s_per_example']:.3f} ms")


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-export", _parser(), _export, argv)


if __name__ == "__main__":
  sys.exit(main())
