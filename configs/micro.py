"""The micro config of the default test tier: the demo tasks on a random-init 2-layer, hidden-32
encoder with a word-level tokenizer built by the project (camtl_jax/micro.py): no pretrained
weights, no download, seconds per run. It checks the engine, not learning.

  camtl-train --config micro --workdir /tmp/camtl_micro
"""
from camtl_jax.configs import demo


def get_config(arg=None):
  del arg
  c = demo.get_config()
  c.model_path = "micro"
  c.max_length = 32
  c.bucket_step = 16
  c.doc_stride = 16
  c.batch_size = 4
  c.total_steps = 4
  c.learning_rate = 1e-3
  c.log_every = 2
  c.eval_every = 2
  c.checkpoint_every = 2
  c.eval_batch_size = 16
  c.max_eval_examples = 16
  c.async_checkpoint = False
  return c
