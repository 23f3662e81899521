#!/bin/bash
# The two commands of mtu_mixing.md (seed 0) rerun on one later code version (commit c128387,
# 2026-12-05): the mixed run is mtu_probe_u_levels.sh's workdir (the defaults, full 500 steps),
# the paper run is below. Resumable: rerun.
#   docs/results/scripts/mtu_rerun_today.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env c128387 "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=50 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_paper_today" "$T" $C \
    --config.mtu_uncertainty=normalised --config.mtu_min_share=0.0 --config.mtu_max_share=1.0
