#!/bin/bash
# Probe: the mixed run (defaults: calibrated u, floor and cap) at lr 3e-4 instead of 1e-4, seed 0.
# Reading under test: with every task present each step (the floor), task-mean weighting gives
# COPA a sixth of the gradient, too little to leave its plateau in 500 steps at lr 1e-4; a larger
# step should let it leave. A diagnostic of COPA's uncertainty, not a tuning of the defaults.
# Commit e0588fb. Resumable: rerun.
#   docs/results/scripts/mtu_probe_lr3e-4.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env e0588fb "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_mixed_lr3e-4" "$T" $C \
    --config.learning_rate=3e-4 && echo PROBE DONE
