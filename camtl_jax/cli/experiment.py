"""`camtl-experiment`: run the arms of a comparison one after another and tabulate them.

  camtl-experiment --experiment glue5_minilm --out DIR --data-dir DATA [--seeds 0,1]
      [--total_steps N] [--arms camtl_mtu,mtl] [--committed docs/results/glue5_minilm]
      [--config.max_eval_examples=500 ...]

Each run trains in its own workdir DIR/<arm>/[task/]seed<S> (`camtl-train`, or HF transformers'
recipe for an 'hf:' config); an arm and seed whose runs have all finished gets its record
DIR/records/<arm>/seed<S>.json, and DIR/results.json, results.md and results.png are rewritten
after every run. Rerunning the same command skips the finished runs and resumes a killed one; an
arm and seed with a record in --committed (default: the checkout's docs/results/EXPERIMENT when
it exists) is not run at all. --config.FIELD=VALUE flags go to every arm; --data-dir DATA is
--config.data_dir=DATA. Compute-matched arms need XLA's FLOPs of a train step per config:
measured once (a compile each) and kept in DIR/step_flops.json (a committed step_flops.json is
used first). --collect trains nothing: it copies DIR's new records into --committed, writes
its results.md and the tables of the results document beside it (COMMITTED.md, between its
markers); then commit both.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Callable, Sequence

from camtl_jax.cli import common


def _seeds(text: str) -> tuple[int, ...]:
  try:
    seeds = tuple(int(s) for s in text.split(",") if s.strip())
  except ValueError as e:
    raise common.UserError(f"--seeds {text!r}: give integers separated by commas") from e
  if not seeds:
    raise common.UserError("--seeds: give at least one seed")
  return seeds


def make_parser():
  """The camtl-experiment command line."""
  parser = common.new_parser("camtl-experiment", __doc__)
  parser.add_argument("--experiment", required=True,
                      help="a config module with experiment_arms (e.g. glue5_minilm)")
  parser.add_argument("--out", required=True, help="the experiment folder (one workdir per arm)")
  parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
  parser.add_argument("--total_steps", "--total-steps", type=int, default=None,
                      help="steps of a multi-task arm (single-task arms get their share)")
  parser.add_argument("--arms", default="", help="only these arms, comma-separated")
  parser.add_argument("--data-dir", "--data_dir", default=None,
                      help="the data folder (glue/<Task>/...): --config.data_dir for every arm")
  parser.add_argument("--collect", action="store_true",
                      help="train nothing: copy DIR's new records and step_flops.json into "
                           "--committed and write its results.md from the committed records")
  parser.add_argument("--committed", default=None,
                      help="a folder of committed records (<arm>/seed<S>.json): those arms and "
                           "seeds are skipped (default: the checkout's docs/results/EXPERIMENT)")
  parser.set_defaults(config=None)  # accepts --config.FIELD=VALUE overrides for every arm
  return parser


def default_committed(experiment: str) -> Path | None:
  """docs/results/EXPERIMENT of the checkout this package runs from, when it exists."""
  folder = Path(__file__).resolve().parents[2] / "docs" / "results" / experiment
  return folder if folder.is_dir() else None


def _cached(compute: Callable[[str], float], files: Sequence[Path], name: str
            ) -> Callable[[str], float]:
  """compute(spec), looked up by spec in files[...] (JSON {spec: value}) first; a new value is
  written to the last file."""
  def lookup(spec: str) -> float:
    for path in files:
      known = json.loads(path.read_text()) if path.exists() else {}
      if spec in known:
        return known[spec]
    value = compute(spec)
    known = json.loads(files[-1].read_text()) if files[-1].exists() else {}
    known[spec] = value
    files[-1].parent.mkdir(parents=True, exist_ok=True)
    files[-1].write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    print(f"camtl-experiment: {name} of {spec}: {value:.6g}", file=sys.stderr)
    return value
  return lookup


def measures(out: Path, committed: Path | None, overrides: Sequence[str]):
  """comparison.Measures: XLA's FLOPs of one compiled train step and the parameter count, per
  config spec (with the --config overrides), and the training rows of a task."""
  from camtl_jax import comparison, experiment  # pylint: disable=import-outside-toplevel
  from camtl_jax.tasks import registry  # pylint: disable=import-outside-toplevel
  fields = [o[len("--config."):] for o in overrides]

  def step_flops(spec: str) -> float:
    return train_step_flops(common.load_config(spec, fields))

  def parameters(spec: str) -> int:
    config = common.load_config(spec, fields)
    encoder, tasks = experiment.check_config(config)
    model = experiment.build_model(config, encoder, experiment.task_specs(tasks))
    return experiment.parameter_report(model, config.freeze_embeddings)["total"]

  rows: dict[tuple[str, str], int] = {}

  def train_rows(task, data_dir: str) -> int:  # a registry task or a spec file's (tasks.json)
    if (task.name, data_dir) not in rows:
      rows[task.name, data_dir] = len(registry.load_split(task, data_dir, "train"))
    return rows[task.name, data_dir]

  files = ([committed / "step_flops.json"] if committed else []) + [out / "step_flops.json"]
  return comparison.Measures(step_flops=_cached(step_flops, files, "FLOPs per train step"),
                             parameters=_cached(parameters, [out / "parameters.json"],
                                                "parameters"),
                             train_rows=train_rows)


def train_step_flops(config) -> float:
  """XLA's FLOPs of one train step of config (cost_analysis of the compiled program, per
  device): candidates at max_length, the update, scoring and evaluation chunk loops off (XLA
  counts a loop body once), so every row of the step is counted full. Machine-independent."""
  from camtl_jax import sharding, train  # pylint: disable=import-outside-toplevel
  from camtl_jax.perf import profiling  # pylint: disable=import-outside-toplevel
  setup = train.build_step(config, sharding.make_mesh(config.mesh.model), update_chunk_rows=0,
                           eval_chunk_rows=0, score_chunk_rows=0)
  return profiling.cost_report(train.lower_train_step(setup).compile())["flops"]


def _experiment(args) -> None:
  from camtl_jax import comparison  # pylint: disable=import-outside-toplevel
  arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
  command = "camtl-experiment " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  overrides = [f"--config.{o}" for o in args.overrides]
  if args.data_dir:
    overrides.insert(0, f"--config.data_dir={args.data_dir}")
  out = Path(args.out)
  committed = Path(args.committed) if args.committed else default_committed(args.experiment)
  if args.collect:
    if committed is None:
      raise common.UserError("--collect needs --committed (or the checkout's "
                             f"docs/results/{args.experiment})")
    committed.mkdir(parents=True, exist_ok=True)
    runs = comparison.planned_runs(args.experiment, _seeds(args.seeds), args.total_steps,
                                   measures(out, committed, overrides).step_flops)
    generic = (f"camtl-experiment --experiment {args.experiment} --out OUT --data-dir DATA "
               f"--seeds {args.seeds} (each record holds its runs' commands)")
    for path in comparison.collect(out, runs, committed, args.experiment, generic):
      print(path)
    print((committed / "results.md").read_text())
    return 0
  try:
    summary = comparison.run_experiment(args.experiment, out, _seeds(args.seeds), overrides,
                                        command, arms, args.total_steps,
                                        measures(out, committed, overrides), committed)
  except ModuleNotFoundError as e:
    if not (e.name or "").startswith("camtl_jax.configs"):
      raise
    raise common.UserError(f"--experiment {args.experiment!r}: no such config ({e})") from e
  print((out / "results.md").read_text())
  return 0 if not summary["unfinished"] else 1


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-experiment", make_parser(), _experiment, argv,
                    user_errors=(RuntimeError,))


if __name__ == "__main__":
  sys.exit(main())
