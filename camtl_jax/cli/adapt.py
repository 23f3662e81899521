"""`camtl-adapt`: add a task to a trained CA-MTL model and fine-tune it on a fraction of its data.

  camtl-adapt --workdir DIR --new-task superglue/cb --data-dir DATA --fraction 0.1 --out NEW_DIR
  camtl-adapt --workdir DIR --new-task superglue/cb --data-dir DATA \\
      --zero-shot-from superglue/rte --label-map entailment=entailment,not_entailment=contradiction
  camtl-adapt --workdir DIR --new-task superglue/cb --data-dir DATA --out CURVE_DIR \\
      --fractions 0.01,0.1,1.0 --seeds 0,1,2
  camtl-adapt --workdir DIR --new-task my/tickets --task-specs examples/my_tasks.yaml --out NEW_DIR

--train new moves only the new task's embedding row and head row (a linear probe of the pooled
[CLS] plus one embedding row; default lr 1e-2); --train all uses the trained model's own
frozen/trainable policy (default lr: the training config's). A single adaptation writes a workdir
that camtl-predict and camtl-export read; a learning curve writes learning_curve.csv/.md/.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from camtl_jax.cli import common

TRAIN_MODES = ("new", "all")  # adapt.TRAIN_MODES


def _floats(text: str) -> list[float]:
  return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x.strip()]


def make_parser():
  """The camtl-adapt command line."""
  p = common.new_parser("camtl-adapt", __doc__)
  p.add_argument("--workdir", required=True, help="a trained workdir")
  p.add_argument("--new-task", required=True,
                 help="the task to add: a registry name, or a task of --task-specs")
  p.add_argument("--task-specs", action="append", default=[], metavar="SPEC",
                 help="a task spec file (YAML / JSON) declaring the new task (repeatable)")
  p.add_argument("--data-dir", help="data root holding the new task's files (a spec task's "
                 "relative paths are looked up beside the spec file first)")
  p.add_argument("--data", dest="data_dir", help=argparse.SUPPRESS)  # the old spelling
  p.add_argument("--fraction", type=float, default=1.0, help="fraction of its train split")
  p.add_argument("--fractions", type=_floats, help="learning curve: comma-separated fractions")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--seeds", type=_ints, help="learning curve: comma-separated seeds")
  p.add_argument("--train", choices=TRAIN_MODES, default="new")
  p.add_argument("--init-from", help="initialise the task embedding from this task's row")
  p.add_argument("--out", help="new workdir (or the learning curve's directory)")
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--batch-size", type=int)
  p.add_argument("--learning-rate", type=float)
  p.add_argument("--max-eval-examples", type=int, default=0)
  p.add_argument("--step", type=int, help="checkpoint of --workdir (default: best, else latest)")
  p.add_argument("--zero-shot-from", help="also evaluate zero-shot through this task's head")
  p.add_argument("--label-map", help="zero-shot: source_label=new_label,...")
  return p


def _baselines(adapter, args) -> dict[str, float]:
  from camtl_jax import adapt  # pylint: disable=import-outside-toplevel
  from camtl_jax.tasks import metrics  # pylint: disable=import-outside-toplevel
  out = {}
  dev = adapter.dev_splits()
  majority = adapt.majority_score(adapter.task, dev[0])
  if majority is not None:
    out["majority class"] = metrics.main_score(adapter.task, majority)
  if args.zero_shot_from:
    label_map = adapt.parse_label_map(args.label_map or "")
    results = adapt.zero_shot(adapter.base, adapter.task, next(iter(adapter.dev_examples.values())),
                        args.zero_shot_from, label_map)
    out[f"zero-shot via {args.zero_shot_from}"] = metrics.main_score(adapter.task, results)
  return out


def run_cli(args) -> dict[str, Any]:
  """Adapts, writes --out and returns the summary (also written to --out/adapt.json)."""
  from camtl_jax import adapt, workdir  # pylint: disable=import-outside-toplevel
  from camtl_jax.tasks import spec  # pylint: disable=import-outside-toplevel
  new_task = spec.resolve_tasks([args.new_task], args.task_specs, args.data_dir)[0]
  if args.data_dir is None and not new_task.spec:
    raise ValueError(f"--data-dir is required for the registry task {new_task.name!r}")
  trained = workdir.load(args.workdir, args.step)
  if args.out is None and not args.zero_shot_from:
    raise ValueError("--out is required (unless only --zero-shot-from is asked for)")
  if args.zero_shot_from and not args.label_map:
    raise ValueError("--zero-shot-from needs --label-map source=target,...")
  adapter = adapt.Adapter(trained, new_task, args.data_dir or "", args.train, args.init_from,
                    args.steps, args.batch_size, args.learning_rate, args.seed,
                    args.max_eval_examples,
                    cache_dir=str(Path(args.out) / "cache") if args.out else None)
  baselines = _baselines(adapter, args)
  for name, value in baselines.items():
    print(f"{new_task.name} {name}: {value:.4f}")
  summary = {"source_workdir": str(trained.workdir), "source_step": trained.step,
             "new_task": new_task.name, "train": args.train, "init_from": args.init_from,
             "steps": args.steps, "batch_size": adapter.batch_size,
             "learning_rate": adapter.learning_rate, "baselines": baselines}
  if args.out is None:
    return summary
  if args.fractions:
    runs = [(f, s) for f in args.fractions for s in (args.seeds or [args.seed])]
    results = []
    for i, (fraction, seed) in enumerate(runs, 1):
      print(f"camtl-adapt: run {i} of {len(runs)}: fraction {fraction:g}, seed {seed}, "
            f"{args.steps} steps ...", file=sys.stderr, flush=True)
      results.append(adapter.run(fraction, seed))
      print(f"camtl-adapt: run {i} of {len(runs)}: dev score {results[-1].score:.4f} "
            f"({results[-1].seconds:.0f} s)", file=sys.stderr, flush=True)
    adapt.write_curve(Path(args.out), new_task, results, baselines)
    summary["curve"] = adapt.curve_table(results)
    print((Path(args.out) / "learning_curve.md").read_text())
    return summary
  result = adapter.run(args.fraction, args.seed)
  summary.update(fraction=result.fraction, seed=result.seed, num_train=result.num_train,
                 results=result.results, score=result.score)
  adapt.save_workdir(adapter, result, args.out, summary)
  print(f"{new_task.name}: fraction {result.fraction:g} ({result.num_train} examples), "
        f"{args.steps} steps, --train {args.train}: {result.results} -> {args.out}")
  return summary


def _adapt(args) -> None:
  run_cli(args)


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-adapt", make_parser(), _adapt, argv)


if __name__ == "__main__":
  sys.exit(main())
