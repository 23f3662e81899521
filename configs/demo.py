"""The built-in offline demo: MiniLM on the generated demo tasks, a few hundred CPU steps.

  python -m camtl_jax.main --config demo --workdir /tmp/camtl_demo
"""
from camtl_jax.configs import common

DEMO_TASKS = ("demo/sentiment", "demo/similarity", "demo/entities", "demo/choice", "demo/span")


def get_config(arg=None):
  del arg
  c = common.base()
  c.tasks = DEMO_TASKS
  c.data_dir = ""  # empty: the demo data is generated into WORKDIR/demo_data
  # The demo texts are short (<= 28 tokens) except the span contexts, which are windowed at 48.
  c.max_length = 48
  c.bucket_step = 16
  c.doc_stride = 32
  c.batch_size = 8
  c.total_steps = 300
  c.learning_rate = 1e-4
  c.log_every = 25
  c.eval_every = 150
  c.checkpoint_every = 150
  c.eval_batch_size = 64
  return c
