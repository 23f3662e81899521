"""Single-task fine-tuning (one task, no task conditioning, whole batch from that task).

  python -m camtl_jax.main --config single_task:glue/rte --workdir /tmp/rte \
      --config.model_path=/data/ckpt/bert-base-uncased --config.data_dir=/data/benchmarks
"""
from camtl_jax.configs import common


def get_config(arg="glue/rte"):
  c = common.base()
  c.model_path = "bert-base-uncased"
  c.tasks = (arg or "glue/rte",)
  c.model.conditioning = "none"
  c.sampler = "uniform"          # one task: every step is a batch of it
  c.frozen_layers = (0, 0)       # classic fine-tuning: everything trains
  c.freeze_embeddings = False
  c.total_steps = 3000
  c.learning_rate = 2e-5
  return c
