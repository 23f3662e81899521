"""CA-MTL on the 8 GLUE tasks of the paper with BERT-base (adapter='top').

  camtl-convert bert-base-uncased /data/ckpt/bert-base-uncased   # or any local HF dir
  python -m camtl_jax.main --config glue_base --workdir /data/runs/glue_base \
      --config.model_path=/data/ckpt/bert-base-uncased --config.data_dir=/data/benchmarks

data_dir holds glue/<Task>/{train,dev,test}.tsv as the GLUE download script lays them out.
"""
from camtl_jax.configs import common

GLUE8 = ("glue/cola", "glue/sst2", "glue/mrpc", "glue/stsb", "glue/qqp", "glue/mnli", "glue/qnli",
         "glue/rte")


def get_config(arg=None):
  del arg
  c = common.base()
  c.model_path = "bert-base-uncased"
  c.tasks = GLUE8
  c.max_length = 128
  c.batch_size = 32
  c.total_steps = 100_000
  c.learning_rate = 5e-5
  c.eval_every = 5000
  c.checkpoint_every = 5000
  c.eval_batch_size = 256
  return c
