"""`camtl-bench`: time the compiled steps of a config on this machine (plain, CA-MTL, CA-MTL +
MT-U, the scoring forward, plain forwards), with compile time, memory and FLOPs utilisation
against a matmul peak measured in the same run.

  camtl-bench --config bench:minilm --steps 5 [--json OUT] [--variants camtl_mtu,score]
  camtl-bench --config bench:bert-base --steps 3 --json /tmp/bench_base.json
  camtl-bench --config bench:glue5 --steps 6 --json /tmp/bench_glue5.json

Weights are random and candidates synthetic: only shapes matter for speed. bench:glue5 instead
times the CA-MTL + MT-U step on real GLUE candidate sets, packed against padded (bench_real.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from camtl_jax.cli import common

# bench.ORDER and bench.OPTIONAL, written out so that --help imports nothing heavy (a test keeps
# them equal).
VARIANTS = ("plain", "camtl", "camtl_mtu", "score", "forward_plain", "forward_camtl",
            "camtl_all_trainable", "plain_all_trainable")
OPTIONAL = ("hf_forward", "hf_train")


def _variants(text: str) -> tuple[str, ...]:
  names = tuple(v.strip() for v in text.split(",") if v.strip())
  unknown = sorted(set(names) - set(VARIANTS + OPTIONAL))
  if unknown:
    raise common.UserError(f"unknown variant(s) {unknown}; choose from "
                           f"{', '.join(VARIANTS + OPTIONAL)}")
  return names


def make_parser():
  """The camtl-bench command line."""
  parser = common.new_parser("camtl-bench", __doc__)
  common.add_config_argument(parser)
  parser.add_argument("--steps", type=int, default=5,
                      help="timed calls per program (after one warm-up call)")
  parser.add_argument("--json", help="also write the report as JSON to this file")
  parser.add_argument("--matmul_size", "--matmul-size", type=int, default=2048,
                      help="n of the n x n x n matmul that measures the peak")
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help=f"programs to run, comma-separated, from {', '.join(VARIANTS)}; "
                           f"optional: {', '.join(OPTIONAL)} (HF transformers' PyTorch model "
                           "doing forward_plain's and plain_all_trainable's work, in lockstep)")
  parser.add_argument("--profile", metavar="DIR",
                      help="bench:glue5: also trace 3 more packed steps into DIR (jax.profiler; "
                           "open with TensorBoard/Perfetto) and print where the step's time goes")
  return parser


def _bench(args) -> None:
  variants = _variants(args.variants)
  config = common.load_config(args.config, args.overrides)
  if config.bench_real_data:  # bench:glue5: real candidates, packed vs padded
    from camtl_jax.perf import bench_real  # pylint: disable=import-outside-toplevel
    report = bench_real.real_data_benchmark(config, args.steps, args.matmul_size,
                                            log=lambda s: print(s, flush=True),
                                            profile_dir=args.profile)
    print(bench_real.format_table(report))
    if args.json:
      Path(args.json).write_text(json.dumps(report, indent=2))
    return
  if args.profile:
    raise common.UserError("--profile traces the packed step of bench:glue5 (real candidates); "
                           f"config {args.config!r} is a synthetic bench")
  from camtl_jax.perf import bench  # pylint: disable=import-outside-toplevel
  report = bench.benchmark(config, args.steps, args.matmul_size, variants,
                           log=lambda s: print(s, flush=True))
  print(bench.format_table(report))
  if args.json:
    Path(args.json).write_text(json.dumps(report, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-bench", make_parser(), _bench, argv)


if __name__ == "__main__":
  sys.exit(main())
