#!/bin/bash
# The sweep's centre point (lr 1e-4, warmup 0.1: the config's values) rerun in the sweep's own
# setting, so that its dev at step 1000 is known too (the committed mtl seed 0 kept only its best
# checkpoint's). Same overrides as glue5_sweep.sh, commit d99c1ce. Resumable: rerun.
#   docs/results/scripts/glue5_sweep_base.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env d99c1ce "$@"
nice -n 5 camtl-experiment --experiment glue5_minilm --seeds 0 --arms mtl \
  --config.data_dir="$DATA" --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir="$RUNS/sweep/cache" \
  --out "$RUNS/sweep/lr1e-4_wu0.1" --config.learning_rate=1e-4 --config.warmup_fraction=0.1
