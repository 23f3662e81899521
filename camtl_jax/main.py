"""Training: `python -m camtl_jax.main --config demo --workdir DIR [--config.field=value ...]`
(also installed as `camtl-train`).

Intentionally short: parse flags, optionally join a multi-host job, call train.train_and_evaluate.
Rerunning the same command resumes from the workdir's last checkpoint.

Exit status: 0 finished; 2 refused or stopped with a one-line `camtl-train: error: ...` (bad
config or data, another run's workdir, too many NaN/Inf steps: the checkpoint is kept); 130 / 143
stopped by Ctrl-C / SIGTERM after saving the step (rerun the same command to resume).
"""
from __future__ import annotations

import logging
import sys
from typing import Sequence

from camtl_jax.cli import common

log = logging.getLogger("camtl_jax.main")


def make_parser():
  """The camtl-train command line."""
  parser = common.new_parser("camtl-train", __doc__)
  common.add_config_argument(parser)
  parser.add_argument("--workdir", required=True,
                      help="checkpoints, caches, summaries and results go here")
  parser.add_argument("--data-dir", "--data_dir", default=None,
                      help="the data folder (glue/<Task>/..., a spec file's relative paths): "
                           "--config.data_dir, the same flag as camtl-data, camtl-predict, "
                           "camtl-adapt and camtl-experiment take")
  parser.add_argument("--jax_distributed", "--jax-distributed", action="store_true",
                      help="call jax.distributed.initialize() (multi-host TPU/GPU pods; the "
                           "coordinator comes from the environment unless given below)")
  # Only needed where JAX cannot detect the cluster (e.g. several CPU processes on one machine);
  # TPU pods, SLURM and Open MPI fill them in automatically.
  parser.add_argument("--coordinator_address", help="host:port of process 0")
  parser.add_argument("--num_processes", type=int, help="number of processes")
  parser.add_argument("--process_id", type=int, help="this process's index")
  return parser


def load_config(args):
  """The run's config: --config with --data-dir and the --config.FIELD overrides (an explicit
  --config.data_dir wins over --data-dir, as a later flag does)."""
  data_dir = [f"data_dir={args.data_dir}"] if args.data_dir else []
  return common.load_config(args.config, data_dir + list(args.overrides))


def _train(args) -> int | None:
  config = load_config(args)
  import jax  # pylint: disable=import-outside-toplevel
  from camtl_jax import compile_cache, experiment, train  # pylint: disable=import-outside-toplevel
  if args.jax_distributed:  # before anything touches a device
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id)
  experiment.check_config(config)  # names, shapes and ranges: fail before any weight is read
  cache_dir = compile_cache.resolve(config.compile_cache_dir, args.workdir)
  if cache_dir is not None:  # before the first compilation: JAX reads the setting once
    compile_cache.enable(cache_dir)
  log.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count(),
           jax.default_backend())
  try:
    train.train_and_evaluate(config, args.workdir)
  except train.Interrupted as stopped:  # saved; not finished: a non-zero status (130 / 143)
    print(f"camtl-train: {stopped}", file=sys.stderr)
    return stopped.exit_status
  except train.TrainingStopped as stopped:  # NaN/Inf steps: the checkpoint is kept
    raise common.UserError(str(stopped)) from None
  return None


def main(argv: Sequence[str] | None = None) -> int:
  """Console script `camtl-train`."""
  return common.run("camtl-train", make_parser(), _train, argv)


if __name__ == "__main__":
  sys.exit(main())
