"""The standard MTL baseline: shared BERT-base + per-task heads, no conditioning, proportional
task sampling, nothing frozen.

  python -m camtl_jax.main --config mtl_baseline --workdir /tmp/mtl \
      --config.model_path=/data/ckpt/bert-base-uncased --config.data_dir=/data/benchmarks
"""
from camtl_jax.configs import glue_base


def get_config(arg=None):
  del arg
  c = glue_base.get_config()
  c.model.conditioning = "none"
  c.sampler = "proportional"
  c.frozen_layers = (0, 0)
  c.freeze_embeddings = False
  return c
