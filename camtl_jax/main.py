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
                  "pods; coordinator from the environment).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if FLAGS.jax_distributed:
    jax.distributed.initialize()
  # Our progress at INFO; libraries (Orbax logs every save step by step) at WARNING.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("camtl_jax").setLevel(logging.INFO)
  logging.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
