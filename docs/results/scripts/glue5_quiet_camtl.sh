#!/bin/bash
# camtl_mtu seed 0 of glue5_minilm again, alone on the 2-core machine: its wall time with the cores
# to itself, and a reproduction check of the committed seed-0 record. Resumable: rerun.
cd /work/runs/code
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code
camtl-experiment --experiment glue5_minilm --out /work/runs/quiet --seeds 0 --arms camtl_mtu \
  --config.data_dir=/work/shared/data --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir=/work/runs/quiet/cache
