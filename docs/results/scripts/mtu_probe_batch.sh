#!/bin/bash
# Is COPA held on its plateau in the mixed run by the number of COPA rows per step (3-4 at the cap
# of b = 8; 6-8 where it learned: alone, and the paper runs' 75-89% stretches)?
#  1. COPA alone at b = 4 for 1000 steps: the examples of COPA alone at b = 8 for 500 steps (which
#     learned by step 200), in twice the steps of half the rows.
#  2. The mixed command (the defaults) at b = 16: COPA's cap is 8 rows per step.
# Seed 0, a clone of c128387. Resumable: rerun (a finished run is skipped).
cd /work/runs/code
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.max_length=64 --config.eval_every=500 --config.checkpoint_every=100 \
   --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=/work/shared/data --config.cache_dir=/work/runs/mtu_cache"
run() {  # workdir, then overrides; skipped when results.json exists (the run finished)
  local dir=$1; shift
  [ -f "$dir/results.json" ] && return 0
  python -m camtl_jax.main --config glue5_minilm --workdir "$dir" $C "$@"
}
case "${1:-all}" in
  alone|all) run /work/runs/mtu_copa_alone_b4 "--config.tasks=('superglue/copa',)" \
        --config.batch_size=4 --config.total_steps=1000 || exit 1 ;;&
  mixed|all) run /work/runs/mtu_mixed_b16 "$T" --config.batch_size=16 \
        --config.total_steps=500 || exit 1 ;;
esac
echo PROBES DONE
