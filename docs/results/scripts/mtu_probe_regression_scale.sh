#!/bin/bash
# COPA beside STS-B: does the regression loss's scale hold COPA on its plateau? The COPA + STS-B
# pair of mtu_probe_pairs.sh, and the mixed command of mtu_mixing.md (the defaults, seed 0), each
# with config.regression_loss_scale=0.5 (the Gaussian NLL at unit variance instead of the squared
# error). Commit 124df6e. Resumable: rerun (a finished run is skipped).
#   [PART=pair|mixed] docs/results/scripts/mtu_probe_regression_scale.sh DATA_DIR \
#       [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env 124df6e "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.regression_loss_scale=0.5 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
run() {  # workdir, then overrides; skipped when results.json exists (the run finished)
  local dir=$1; shift
  [ -f "$dir/results.json" ] && return 0
  python -m camtl_jax.main --config glue5_minilm --workdir "$dir" $C "$@"
}
case "${PART:-all}" in
  pair|all) run "$RUNS/mtu_pair_stsb_half" "--config.tasks=('glue/stsb','superglue/copa')" \
        --config.sampler=uniform || exit 1 ;;&
  mixed|all) run "$RUNS/mtu_mixed_stsb_half" "$T" || exit 1 ;;
esac
echo PROBES DONE
