#!/bin/bash
# The whole glue5_minilm experiment with the one command, seeds 0 and 1, on one code version
# (a clone of main: d99c1ce for the main comparison, e0588fb for the ablation arms; their
# camtl_jax/ differs in one docstring and the experiment's plan), into the folder where
# glue5_quiet_camtl.sh ran camtl_mtu seed 0 (that arm is skipped as finished). Resumable: rerun.
cd /work/runs/code
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code
camtl-experiment --experiment glue5_minilm --out /work/runs/quiet --seeds 0,1 \
  --config.data_dir=/work/shared/data --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir=/work/runs/quiet/cache
