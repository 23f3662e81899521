"""`camtl-compile-tpu`: compile the real train step for a TPU topology on a CPU host.

  camtl-compile-tpu --config glue_base --topology v5e:4x4 [--json OUT] [--config.x=y]

Reports per-chip memory against HBM and XLA's cost-model step time, so a pod run is checked for
out-of-memory before any TPU is rented. Needs libtpu (pip install -e ".[tpu]", ideally in its own
environment or a --target directory on PYTHONPATH). Exit status 1 when the step does not fit.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

from camtl_jax.cli import common

NOMINAL_ROWS_PER_TASK = 100_000  # aot.NOMINAL_ROWS_PER_TASK


def make_parser():
  """The camtl-compile-tpu command line."""
  parser = common.new_parser("camtl-compile-tpu", __doc__)
  common.add_config_argument(parser)
  parser.add_argument("--topology", required=True,
                      help="TPU topology, e.g. v5e:4x4, v5e:16x16, v4:4x4x8, v5p:2x2x1")
  parser.add_argument("--json", help="also write the report as JSON to this file")
  parser.add_argument("--rows_per_task", "--rows-per-task", type=int,
                      default=NOMINAL_ROWS_PER_TASK,
                      help="training rows per task assumed for the data-usage mask")
  return parser


def _compile(args) -> int:
  config = common.load_config(args.config, args.overrides)
  # This host only compiles: keep JAX's own backend on the CPU (never probe for a local TPU).
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from camtl_jax.perf import aot  # pylint: disable=import-outside-toplevel
  report = aot.compile_for_topology(config, args.topology, args.rows_per_task)
  print(aot.format_report(report))
  if args.json:
    Path(args.json).write_text(json.dumps(report, indent=2))
  return 0 if report["fits"] else 1  # launch/tpu_pod.sh --check-compile stops here


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-compile-tpu", make_parser(), _compile, argv)


if __name__ == "__main__":
  sys.exit(main())
