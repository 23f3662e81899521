"""`camtl-bench-serve --model WORKDIR [--clients 1,8,32,128] [--seconds 20]`: the serving load
benchmark (camtl_jax/perf/serve_load.py): concurrent clients on loopback against camtl-serve, one
request at a time, per-task artifacts and HF PyTorch models behind the same API."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from camtl_jax.cli import common
from camtl_jax.perf.serve_load import SERVERS  # numpy and the standard library: a quick import


def make_parser() -> argparse.ArgumentParser:
  """The camtl-bench-serve command line."""
  parser = common.new_parser("camtl-bench-serve", __doc__)
  parser.add_argument("--model", required=True, help="a trained demo workdir")
  parser.add_argument("--clients", default="1,8,32,128", help="client counts, comma-separated")
  parser.add_argument("--seconds", type=float, default=20.0, help="load time per client count")
  parser.add_argument("--servers", default=",".join(SERVERS), help="which servers to load")
  parser.add_argument("--out", help="write OUT.json and OUT.md")
  parser.add_argument("--forward-check", action="store_true",
                      help="also time the served forward against HF's on the same batch")
  parser.add_argument("--server", choices=SERVERS, help=argparse.SUPPRESS)  # a server process
  parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
  return parser


def _run(args: argparse.Namespace) -> None:
  from camtl_jax.perf import serve_load  # pylint: disable=import-outside-toplevel
  serve_load.run(args)


def main(argv: Sequence[str] | None = None) -> int:
  """Console script `camtl-bench-serve`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = make_parser()
  parser.set_defaults(argv=argv)  # the command as typed, written beside the results
  return common.run("camtl-bench-serve", parser, _run, argv)


if __name__ == "__main__":
  sys.exit(main())
