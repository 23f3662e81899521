"""`camtl-compile`: compile the real train step for a TPU topology or NVIDIA GPUs on a CPU host.

  camtl-compile --config glue_base --target v5e:4x4 [--json OUT] [--config.x=y]
  camtl-compile --config glue_base --target h100:8 --config.dtype=bfloat16 [--json OUT]
  camtl-compile --config glue_base --target a100:1 --target-config my_a100_40gb.txtpb

Reports per chip (per GPU) the memory XLA plans against the HBM, and XLA's flops, bytes and step
time, so a run is checked for out-of-memory before any accelerator is rented. TPU targets need
libtpu (the `tpu` extra; camtl-compile-tpu is the same command), GPU targets the CUDA plugin (the
`cuda` extra), each best in an environment of its own. Exit status 1 when the step does not fit.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from camtl_jax.cli import common

NOMINAL_ROWS_PER_TASK = 100_000  # aot.NOMINAL_ROWS_PER_TASK
# Target prefixes by platform (aot.CHIPS and aot_gpu.GPUS, written out so that --help imports
# nothing heavy; a test keeps them equal).
TPU_CHIPS = ("v4", "v5e", "v5p", "v6e")
GPU_CARDS = ("a100", "h100")


def make_parser():
  """The camtl-compile command line."""
  parser = common.new_parser("camtl-compile", __doc__)
  common.add_config_argument(parser)
  parser.add_argument("--target", required=True,
                      help="TPU topology CHIP:AxB[xC] (v5e:4x4, v4:4x4x8) or GPUs CARD:N / "
                           "CARD:HOSTSxN (h100:1, h100:8, a100:2x8)")
  parser.add_argument("--target_config", "--target-config", metavar="FILE",
                      help="GPU targets: an XLA GpuTargetConfigProto (text format) describing "
                           "another card, instead of the built-in description of CARD")
  parser.add_argument("--json", help="also write the report as JSON to this file")
  parser.add_argument("--rows_per_task", "--rows-per-task", type=int,
                      default=NOMINAL_ROWS_PER_TASK,
                      help="training rows per task assumed for the data-usage mask")
  return parser


def _tpu(config, args) -> tuple[dict[str, Any], str]:
  if args.target_config:
    raise common.UserError("--target-config describes a GPU; TPU topologies come from libtpu")
  from camtl_jax.perf import aot  # pylint: disable=import-outside-toplevel
  report = aot.compile_for_topology(config, args.target, args.rows_per_task)
  return report, aot.format_report(report)


def _gpu(config, args) -> tuple[dict[str, Any], str]:
  text = None
  if args.target_config:
    path = Path(args.target_config)
    if not path.is_file():
      raise common.UserError(f"--target-config {path}: no such file")
    text = path.read_text()
  from camtl_jax.perf import aot_gpu  # pylint: disable=import-outside-toplevel
  report = aot_gpu.compile_for_gpu(config, args.target, args.rows_per_task, text)
  return report, aot_gpu.format_gpu_report(report)


PLATFORMS: dict[str, Callable] = {**{chip: _tpu for chip in TPU_CHIPS},
                                  **{card: _gpu for card in GPU_CARDS}}


def _compile(args) -> int:
  prefix = args.target.partition(":")[0]
  if prefix not in PLATFORMS:
    raise common.UserError(f"--target {args.target!r}: unknown chip or card {prefix!r}; TPU "
                           f"chips {', '.join(TPU_CHIPS)}, GPUs {', '.join(GPU_CARDS)}")
  config = common.load_config(args.config, args.overrides)
  # This host only compiles: keep JAX's own backend on the CPU (never probe for a local device).
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  report, text = PLATFORMS[prefix](config, args)
  print(text)
  if args.json:
    Path(args.json).write_text(json.dumps(report, indent=2))
  return 0 if report["fits"] else 1  # launch/tpu_pod.sh --check-compile stops here


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-compile", make_parser(), _compile, argv)


if __name__ == "__main__":
  sys.exit(main())
