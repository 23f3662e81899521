"""CA-MTL on the 8 GLUE tasks with BERT-large (adapter='skip', the paper's large setting).

  python -m camtl_jax.main --config glue_large --workdir /data/runs/glue_large \
      --config.model_path=/data/ckpt/bert-large-uncased --config.data_dir=/data/benchmarks
"""
from camtl_jax.configs import glue_base


def get_config(arg=None):
  del arg
  c = glue_base.get_config()
  c.model_path = "bert-large-uncased"
  c.model.adapter = "skip"
  c.dtype = "bfloat16"
  c.learning_rate = 2e-5
  return c
