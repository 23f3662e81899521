#!/bin/bash
# camtl_mtu seed 0 of glue5_minilm again, alone on the 2-core machine: its wall time with the cores
# to itself, and a reproduction check of the committed seed-0 record. Commit d99c1ce. Resumable:
# rerun.
#   docs/results/scripts/glue5_quiet_camtl.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env d99c1ce "$@"
camtl-experiment --experiment glue5_minilm --out "$RUNS/quiet" --seeds 0 --arms camtl_mtu \
  --config.data_dir="$DATA" --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir="$RUNS/quiet/cache"
