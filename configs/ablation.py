"""The five steps of the paper's ablation table (CA-MTL paper, Table 1), on GLUE with BERT-base:

  mtl        shared encoder + heads, lower half frozen, proportional sampling
  attention  + conditional attention (and the task embedding)
  adapter    + conditional bottleneck
  layernorm  + conditional LayerNorm (and conditional alignment)
  mtu        + MT-Uncertainty sampling = full CA-MTL

  python -m camtl_jax.main --config ablation:attention --workdir /tmp/abl_attention \
      --config.model_path=/data/ckpt/bert-base-uncased --config.data_dir=/data/benchmarks
"""
from camtl_jax.configs import glue_base

STEPS = ("mtl", "attention", "adapter", "layernorm", "mtu")


def get_config(arg="mtu"):
  if arg not in STEPS:
    raise ValueError(f"ablation step {arg!r} unknown; choose one of {STEPS}")
  level = STEPS.index(arg)
  c = glue_base.get_config()
  m = c.model
  m.conditioning = "camtl" if level >= 1 else "none"
  m.cond_attention = level >= 1
  m.adapter = "top" if level >= 2 else "none"
  m.cond_layernorm = level >= 3
  m.alignment = "matrix" if level >= 3 else "none"
  c.sampler = "mt_uncertainty" if level >= 4 else "proportional"
  return c


def experiment_arms(seeds=(0,), total_steps=None, step_flops=None):
  """`camtl-experiment --experiment ablation`: the five steps on glue_base (BERT-base, 8 GLUE
  tasks), for a GPU or a TPU pod. (arm, seed, config, overrides) per run, seeds innermost.
  step_flops is not used (no arm here is matched in compute)."""
  overrides = (f"--config.total_steps={total_steps}",) if total_steps else ()
  return [(step, seed, f"ablation:{step}", overrides) for step in STEPS for seed in seeds]
