"""`camtl-serve`: every task of a trained workdir (or of a multi-task artifact) over HTTP.

  camtl-serve --model /tmp/camtl_demo                  # then open http://127.0.0.1:8000/
  camtl-serve --model ARTIFACT_DIR --port 9000         # camtl-export --all-tasks ARTIFACT_DIR

POST /v1/predict {"inputs": [{"task": "demo/sentiment", "text": "..."}, ...]} answers with
camtl-predict's JSON per input; GET /v1/tasks lists the tasks and their fields; GET /healthz; the
page at / tries every task. Requests from concurrent clients share batches (all tasks in one
forward). Binds 127.0.0.1 unless --host says otherwise; SIGTERM finishes the requests in flight,
then exits 0 (Ctrl-C: the same, exit 130). Needs the `serve` extra (pip install 'camtl_jax[serve]').
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from camtl_jax.cli import common


def make_parser():
  """The camtl-serve command line."""
  parser = common.new_parser("camtl-serve", __doc__)
  parser.add_argument("--model", required=True,
                      help="a trained workdir, or a multi-task artifact (camtl-export --all-tasks)")
  parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
  parser.add_argument("--port", type=int, default=8000)
  parser.add_argument("--max-inputs", type=int, default=64, help="inputs per request")
  parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body limit")
  parser.add_argument("--max-wait-ms", type=float, default=5.0,
                      help="how long a batch waits for more requests")
  parser.add_argument("--row-buckets", default="1,4,16,64",
                      help="encoder rows a forward is padded to (the last is the batch limit)")
  return parser


def _serve(args) -> None:
  if not Path(args.model).is_dir():
    raise common.UserError(f"--model {args.model}: no such folder (a workdir or an artifact)")
  try:
    buckets = tuple(sorted(int(x) for x in args.row_buckets.split(",")))
  except ValueError:
    raise common.UserError(f"--row-buckets {args.row_buckets!r}: expected integers like "
                           "1,4,16,64") from None
  if not buckets or buckets[0] < 1:
    raise common.UserError(f"--row-buckets {args.row_buckets!r}: expected positive integers")
  try:
    import starlette  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    import uvicorn  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise common.UserError(f"{e.name} is not installed: pip install 'camtl_jax[serve]'") from None
  from camtl_jax import serve  # pylint: disable=import-outside-toplevel
  limits = serve.Limits(max_inputs=args.max_inputs, max_body_bytes=args.max_body_bytes,
                        max_rows=buckets[-1], max_wait_s=args.max_wait_ms / 1e3,
                        row_buckets=buckets)
  serve.serve(args.model, args.host, args.port, limits,
              ready=lambda line: print(line, flush=True))


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-serve", make_parser(), _serve, argv)


if __name__ == "__main__":
  sys.exit(main())
