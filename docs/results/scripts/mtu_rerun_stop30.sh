#!/bin/bash
# Stop 30, 2026-12-05: both commands of docs/results/mtu_mixing.md (the defaults, and the paper's
# formula with no options) at seeds 0 and 1, on a clone of commit 46901a5 (main's code at the end
# of stop 30) in /work/runs/code5; two streams side by side on the 2-core machine (defaults
# s0 -> s1, paper s0 -> s1). Resumable: rerun.
#   docs/results/scripts/mtu_rerun_stop30.sh REPO
REPO=${1:-/work/main}
if [ ! -d /work/runs/code5 ]; then
  git clone -q "$REPO" /work/runs/code5 && git -C /work/runs/code5 checkout -q 46901a5
fi
cd /work/runs/code5
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code5
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=50 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=/work/shared/data --config.cache_dir=/work/runs/mtu_cache"
PAPER="--config.mtu_uncertainty=normalised --config.mtu_min_share=0.0 --config.mtu_max_share=1.0"
(for s in 0 1; do
   python -m camtl_jax.main --config glue5_minilm --workdir /work/runs/mtu_mixed_stop30_s$s "$T" $C \
     --config.seed=$s > /work/runs/mtu_mixed_stop30_s$s.log 2>&1
 done) &
(for s in 0 1; do
   python -m camtl_jax.main --config glue5_minilm --workdir /work/runs/mtu_paper_stop30_s$s "$T" $C \
     --config.seed=$s $PAPER > /work/runs/mtu_paper_stop30_s$s.log 2>&1
 done) &
wait
