#!/bin/bash
# single_task at seed 1 of glue5_minilm (five tasks, 400 steps each), alone on the 2-core machine:
# the arm's second seed and its wall time with the cores to itself. The same overrides as the
# committed experiment (glue5_minilm.md). Resumable: rerun.
cd /work/runs/code
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code
camtl-experiment --experiment glue5_minilm --out /work/runs/glue5_2000 --seeds 1 --arms single_task \
  --config.data_dir=/work/shared/data --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir=/work/runs/glue5_2000/cache
