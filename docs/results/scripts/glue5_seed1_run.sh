#!/bin/bash
# camtl_mtu seed 1 of glue5_minilm at the config's 2000 steps, commit ccdc632 (resumable: rerun).
#   docs/results/scripts/glue5_seed1_run.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env ccdc632 "$@"
exec nice -n 19 camtl-experiment --experiment glue5_minilm --out "$RUNS/glue5_2000" \
  --config.data_dir="$DATA" --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir="$RUNS/glue5_2000/cache" --seeds 1 --arms camtl_mtu
