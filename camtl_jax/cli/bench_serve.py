"""`camtl-bench-serve --model WORKDIR [--clients 1,8,32,128] [--seconds 20]`: the serving load
benchmark (camtl_jax/perf/serve_load.py): concurrent clients on loopback against camtl-serve, one
request at a time, per-task artifacts and HF PyTorch models behind the same API."""
from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
  """Console script `camtl-bench-serve`."""
  from camtl_jax.perf import serve_load  # pylint: disable=import-outside-toplevel
  return serve_load.main(argv)


if __name__ == "__main__":
  sys.exit(main())
