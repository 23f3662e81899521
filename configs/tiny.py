"""Tiny config for tests: 2 MiniLM layers, short sequences, a handful of steps.

  python -m camtl_jax.main --config tiny --workdir /tmp/camtl_tiny
"""
from camtl_jax.configs import demo


def get_config(arg=None):
  del arg
  c = demo.get_config()
  c.encoder_layers = 2
  c.max_length = 32
  c.bucket_step = 16
  c.batch_size = 8
  c.total_steps = 12
  c.learning_rate = 3e-4
  c.log_every = 4
  c.eval_every = 6
  c.checkpoint_every = 3
  c.eval_batch_size = 32
  c.max_eval_examples = 64
  c.async_checkpoint = False
  return c
