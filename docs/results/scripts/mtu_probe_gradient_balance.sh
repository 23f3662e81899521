#!/bin/bash
# Stop 30, 2026-12-05: the mixed command with task gradient balancing every 10 steps
# (gradient_balance_probe.patch on commit 1411d15: config.task_gradient_balance_every; each task's
# gradient norm on the shared layers measured on its own 8 candidates every 10 steps, a running
# mean of it, and each task's loss scaled by mean_s(norm_s) / norm_t within [0.1, 10]). Seed 0 ran
# 06:28-06:42 beside tests, seed 1 after it. The patch was not merged (docs/results/mtu_mixing.md,
# stop 30). Resumable: rerun with the same SEED.
#   SEED=0 docs/results/scripts/mtu_probe_gradient_balance.sh REPO
REPO=${1:-/work/main}
if [ ! -d /work/runs/code4 ]; then
  git clone -q "$REPO" /work/runs/code4 && git -C /work/runs/code4 checkout -q 1411d15 &&
  git -C /work/runs/code4 apply "$REPO/docs/results/scripts/gradient_balance_probe.patch"
fi
cd /work/runs/code4
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code4
SEED=${SEED:-0}
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=50 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=/work/shared/data --config.cache_dir=/work/runs/mtu_cache"
timeout 1200 python -m camtl_jax.main --config glue5_minilm --workdir /work/runs/mtu_balance10_s$SEED \
  "$T" $C --config.seed=$SEED --config.task_gradient_balance_every=10
