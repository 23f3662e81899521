#!/bin/bash
# 2026-12-05: both commands of docs/results/mtu_mixing.md (the defaults, and the paper's formula
# with no options) at seeds 0 and 1, on commit 46901a5; two streams side by side on the 2-core
# machine (defaults s0 -> s1, paper s0 -> s1), each run's log beside its workdir. Resumable: rerun.
#   docs/results/scripts/mtu_rerun_46901a5.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env 46901a5 "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=50 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
PAPER="--config.mtu_uncertainty=normalised --config.mtu_min_share=0.0 --config.mtu_max_share=1.0"
(for s in 0 1; do
   python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_mixed_46901a5_s$s" "$T" $C \
     --config.seed=$s > "$RUNS/mtu_mixed_46901a5_s$s.log" 2>&1
 done) &
(for s in 0 1; do
   python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_paper_46901a5_s$s" "$T" $C \
     --config.seed=$s $PAPER > "$RUNS/mtu_paper_46901a5_s$s.log" 2>&1
 done) &
wait
