"""`camtl-experiment`: run the arms of a comparison one after another and tabulate them.

  camtl-experiment --experiment glue5_minilm --out DIR [--seeds 0,1] [--total_steps N]
      [--arms camtl_mtu,mtl] [--config.max_eval_examples=500 ...]

Each arm trains in its own workdir DIR/<arm>/[task/]seed<S> with `camtl-train`; DIR/results.json,
results.md and results.png are rewritten after every finished arm. Rerunning the same command skips
the finished arms and resumes a killed one. --config.FIELD=VALUE flags go to every arm.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

from camtl_jax.cli import common


def _seeds(text: str) -> tuple[int, ...]:
  try:
    seeds = tuple(int(s) for s in text.split(",") if s.strip())
  except ValueError as e:
    raise common.UserError(f"--seeds {text!r}: give integers separated by commas") from e
  if not seeds:
    raise common.UserError("--seeds: give at least one seed")
  return seeds


def _parser():
  parser = common.new_parser("camtl-experiment", __doc__)
  parser.add_argument("--experiment", required=True,
                      help="a config module with experiment_arms (e.g. glue5_minilm)")
  parser.add_argument("--out", required=True, help="the experiment folder (one workdir per arm)")
  parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
  parser.add_argument("--total_steps", "--total-steps", type=int, default=None,
                      help="steps of a multi-task arm (single-task arms get their share)")
  parser.add_argument("--arms", default="", help="only these arms, comma-separated")
  parser.set_defaults(config=None)  # accepts --config.FIELD=VALUE overrides for every arm
  return parser


def _experiment(args) -> None:
  from camtl_jax import comparison  # pylint: disable=import-outside-toplevel
  arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
  command = "camtl-experiment " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  try:
    summary = comparison.run_experiment(args.experiment, Path(args.out), _seeds(args.seeds),
                                        [f"--config.{o}" for o in args.overrides], command,
                                        arms, args.total_steps)
  except ModuleNotFoundError as e:
    if not (e.name or "").startswith("camtl_jax.configs"):
      raise
    raise common.UserError(f"--experiment {args.experiment!r}: no such config ({e})") from e
  print((Path(args.out) / "results.md").read_text())
  return 0 if not summary["unfinished"] else 1


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-experiment", _parser(), _experiment, argv, user_errors=(RuntimeError,))


if __name__ == "__main__":
  sys.exit(main())
