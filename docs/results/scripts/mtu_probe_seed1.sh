#!/bin/bash
# Is COPA's flat uncertainty in the mixed run the options' doing or chance? The mixed and the paper
# runs of mtu_mixing.md again at seed 1, and COPA alone with the same settings (seed 0). Commit
# d99c1ce. Resumable: rerun (each run resumes from its last checkpoint; a finished one is skipped).
#   docs/results/scripts/mtu_probe_seed1.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env d99c1ce "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
run() {  # workdir, then overrides; skipped when results.json exists (the run finished)
  local dir=$1; shift
  [ -f "$dir/results.json" ] && return 0
  nice -n 5 python -m camtl_jax.main --config glue5_minilm --workdir "$dir" $C "$@"
}
run "$RUNS/mtu_copa_alone" "--config.tasks=('superglue/copa',)" || exit 1
run "$RUNS/mtu_paper_seed1" "$T" --config.seed=1 --config.mtu_uncertainty=normalised \
    --config.mtu_min_share=0.0 --config.mtu_max_share=1.0 || exit 1
run "$RUNS/mtu_mixed_seed1" "$T" --config.seed=1 || exit 1
echo PROBES DONE
