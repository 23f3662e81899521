#!/bin/bash
# Is COPA held on its plateau in the mixed run by the number of COPA rows per step (3-4 at the cap
# of b = 8; 6-8 where it learned: alone, and the paper runs' 75-89% stretches)?
#  1. COPA alone at b = 4 for 1000 steps: the examples of COPA alone at b = 8 for 500 steps (which
#     learned by step 200), in twice the steps of half the rows.
#  2. The mixed command (the defaults) at b = 16: COPA's cap is 8 rows per step.
# Seed 0, commit c128387. Resumable: rerun (a finished run is skipped).
#   [PART=alone|mixed] docs/results/scripts/mtu_probe_batch.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env c128387 "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.max_length=64 --config.eval_every=500 --config.checkpoint_every=100 \
   --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
run() {  # workdir, then overrides; skipped when results.json exists (the run finished)
  local dir=$1; shift
  [ -f "$dir/results.json" ] && return 0
  python -m camtl_jax.main --config glue5_minilm --workdir "$dir" $C "$@"
}
case "${PART:-all}" in
  alone|all) run "$RUNS/mtu_copa_alone_b4" "--config.tasks=('superglue/copa',)" \
        --config.batch_size=4 --config.total_steps=1000 || exit 1 ;;&
  mixed|all) run "$RUNS/mtu_mixed_b16" "$T" --config.batch_size=16 \
        --config.total_steps=500 || exit 1 ;;
esac
echo PROBES DONE
