"""`python -m camtl_jax.cli.hf_finetune --config glue5_minilm:single_task:glue/rte --workdir DIR`:
HF transformers' PyTorch fine-tuning of one task (camtl_jax/perf/hf_finetune.py's RECIPE), the
hf_single_task arm of camtl-experiment."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from camtl_jax.cli import common

log = logging.getLogger("camtl_jax.cli.hf_finetune")


def make_parser():
  """The camtl-hf-finetune command line."""
  parser = common.new_parser("camtl-hf-finetune", __doc__)
  common.add_config_argument(parser)
  parser.add_argument("--workdir", required=True,
                      help="checkpoint.pt while it runs, then results.json")
  return parser


def _run(args) -> None:
  from camtl_jax.perf import hf_finetune  # pylint: disable=import-outside-toplevel
  config = common.load_config(args.config, args.overrides)
  unused = [o for o in args.overrides if o.split("=")[0].strip() not in hf_finetune.USED_FIELDS]
  if unused:
    log.info("not used by the HF recipe: %s", ", ".join(unused))
  workdir = Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json())
  start = time.time()
  summary = hf_finetune.finetune(config, workdir)
  log.info("%s: %s in %.0f s", config.tasks[0], summary["results"], time.time() - start)


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-hf-finetune", make_parser(), _run, argv)


if __name__ == "__main__":
  sys.exit(main())
