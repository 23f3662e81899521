#!/bin/bash
# camtl_mtu seed 1 of glue5_minilm at the config's 2000 steps (resumable: rerun this script).
cd /work/runs/code
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code
exec nice -n 19 camtl-experiment --experiment glue5_minilm --out /work/runs/glue5_2000 \
  --config.data_dir=/work/shared/data --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir=/work/runs/glue5_2000/cache --seeds 1 --arms camtl_mtu
