#!/bin/bash
# 2026-12-05 06:18-06:26, commit 1411d15: the mixed command (seed 0) with fixed per-task loss
# factors (mtu_probe_fixed_balance.py); the 2-core machine to itself. Resumable: rerun.
#   docs/results/scripts/mtu_probe_fixed_balance.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env 1411d15 "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=50 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
timeout 900 python "$REPO/docs/results/scripts/mtu_probe_fixed_balance.py" --config glue5_minilm \
  --workdir "$RUNS/mtu_fixed_balance" "$T" $C
