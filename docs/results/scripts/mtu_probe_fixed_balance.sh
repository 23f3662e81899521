#!/bin/bash
# Stop 30, 2026-12-05 06:18-06:26: the mixed command (seed 0) with fixed per-task loss factors
# (mtu_probe_fixed_balance.py), on a clone of commit 1411d15 in /work/runs/code3; the 2-core
# machine to itself. Resumable: rerun.
#   docs/results/scripts/mtu_probe_fixed_balance.sh REPO
REPO=${1:-/work/main}
if [ ! -d /work/runs/code3 ]; then
  git clone -q "$REPO" /work/runs/code3 && git -C /work/runs/code3 checkout -q 1411d15
fi
cd /work/runs/code3
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code3
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=50 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=/work/shared/data --config.cache_dir=/work/runs/mtu_cache"
timeout 900 python "$REPO/docs/results/scripts/mtu_probe_fixed_balance.py" --config glue5_minilm \
  --workdir /work/runs/mtu_fixed_balance "$T" $C
