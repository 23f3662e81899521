"""CA-MTL on 24 tasks with BERT-large: GLUE (9), SuperGLUE (8), MRQA (6) and WNUT-17.

  python -m camtl_jax.main --config mtl24_large --workdir gs://bucket/runs/mtl24 \
      --config.model_path=/data/ckpt/bert-large-uncased --config.data_dir=/data/benchmarks \
      --jax_distributed   # on every worker of a TPU pod (launch/tpu_pod.sh)
"""
from camtl_jax.configs import glue_large

MTL24 = ("glue/cola", "glue/sst2", "glue/mrpc", "glue/stsb", "glue/qqp", "glue/mnli", "glue/qnli",
         "glue/rte", "glue/wnli",
         "superglue/boolq", "superglue/cb", "superglue/copa", "superglue/multirc",
         "superglue/record", "superglue/rte", "superglue/wic", "superglue/wsc",
         "mrqa/squad", "mrqa/newsqa", "mrqa/triviaqa", "mrqa/searchqa", "mrqa/hotpotqa",
         "mrqa/naturalquestions", "wnut17")


def get_config(arg=None):
  del arg
  c = glue_large.get_config()
  c.tasks = MTL24
  c.max_length = 384  # span tasks; the conditional attention bias works at any L_max
  c.doc_stride = 128
  c.batch_size = 64
  # glue_base's pod schedule is for its batch of 512; this config keeps its own.
  c.total_steps = 100_000
  c.eval_every = 5000
  c.checkpoint_every = 5000
  c.mesh.fsdp = True
  return c
