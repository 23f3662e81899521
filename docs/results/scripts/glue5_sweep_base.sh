#!/bin/bash
# The sweep's centre point (lr 1e-4, warmup 0.1: the config's values) rerun in the sweep's own
# setting, so that its dev at step 1000 is known too (the committed mtl seed 0 kept only its best
# checkpoint's). Same overrides as glue5_sweep.sh. Resumable: rerun.
cd /work/runs/code
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code
nice -n 5 camtl-experiment --experiment glue5_minilm --seeds 0 --arms mtl \
  --config.data_dir=/work/shared/data --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir=/work/runs/sweep/cache \
  --out /work/runs/sweep/lr1e-4_wu0.1 --config.learning_rate=1e-4 --config.warmup_fraction=0.1
