"""Entry point: `python -m camtl_jax.main --config configs/demo.py --workdir DIR [--config.x=y]`.

Intentionally short: parse flags, optionally join a multi-host job, call train_and_evaluate.
"""
import logging

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from camtl_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a get_config(arg) file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, caches, summaries and results go here.")
flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize() (multi-host TPU/GPU "
                  "pods; coordinator from the environment unless the flags below are given).")
# Only needed where JAX cannot detect the cluster (e.g. several CPU processes on one machine);
# TPU pods, SLURM and Open MPI fill them in automatically.
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --jax_distributed; "
                    "default: $JAX_COORDINATOR_ADDRESS or auto-detection).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --jax_distributed).")
flags.DEFINE_integer("process_id", None, "This process's index (with --jax_distributed).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if FLAGS.jax_distributed:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  # Our progress at INFO; libraries (Orbax logs every save step by step) at WARNING.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("camtl_jax").setLevel(logging.INFO)
  logging.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
