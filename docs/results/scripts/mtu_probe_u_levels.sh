#!/bin/bash
# Diagnostic: the mixed run's command (seed 0, the defaults; commit c128387), reading every
# task's mean calibrated u per 25 steps (history.jsonl `task_uncertainty`), to see whether some
# task sits at u = 1.0 exactly (a saturated score would outrank COPA's 0.9999 on every step).
# The timeout was a guard: the run finished inside it (500 steps and the dev evaluation, 8 min).
# Resumable: rerun.
#   docs/results/scripts/mtu_probe_u_levels.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env c128387 "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=50 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
timeout 600 python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_u_levels" "$T" $C
