#!/bin/bash
# single_task at seed 1 of glue5_minilm (five tasks, 400 steps each), alone on the 2-core machine:
# the arm's second seed and its wall time with the cores to itself. The same overrides as the
# committed experiment (glue5_minilm.md). Commit d99c1ce. Resumable: rerun.
#   docs/results/scripts/glue5_single_seed1.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env d99c1ce "$@"
camtl-experiment --experiment glue5_minilm --out "$RUNS/glue5_2000" --seeds 1 --arms single_task \
  --config.data_dir="$DATA" --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir="$RUNS/glue5_2000/cache"
