#!/bin/bash
# 2026-12-05: the mixed command with task gradient balancing every 10 steps, on commit 1411d15
# with the probe's patch (config.task_gradient_balance_every; each task's gradient norm on the
# shared layers measured on its own 8 candidates every 10 steps, a running mean of it, and each
# task's loss scaled by mean_s(norm_s) / norm_t within [0.1, 10]). The patch was not merged
# (docs/results/mtu_mixing.md); it is in this repository's history:
# docs/results/scripts/gradient_balance_probe.patch as added in commit 9d632e8, and a fresh clone
# gets it applied. Seed 0 ran 06:28-06:42 beside tests, seed 1 after it. Resumable: rerun with the
# same SEED.
#   SEED=0 docs/results/scripts/mtu_probe_gradient_balance.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
RESULTS_PATCH=9d632e8:docs/results/scripts/gradient_balance_probe.patch
. "$(dirname "$0")/results_env.sh"
results_env 1411d15 "$@"
SEED=${SEED:-0}
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=50 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
timeout 1200 python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_balance10_s$SEED" \
  "$T" $C --config.seed=$SEED --config.task_gradient_balance_every=10
