#!/bin/bash
# Which other task keeps COPA on its plateau? COPA alone learns at 4 rows per step (b = 4), and
# stays flat beside the five other tasks at 3-4 rows per step (b = 8) and at 7-8 (b = 16). Here
# COPA with one other task at a time, half of each batch each (uniform sampler, b = 8: about 4
# COPA rows per step), 500 steps, seed 0, commit c128387. Resumable: rerun (a finished run is
# skipped).
#   docs/results/scripts/mtu_probe_pairs.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env c128387 "$@"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.sampler=uniform \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
for other in wnut17 glue/stsb glue/rte; do
  dir=$RUNS/mtu_pair_${other//\//_}
  [ -f "$dir/results.json" ] && continue
  python -m camtl_jax.main --config glue5_minilm --workdir "$dir" $C \
      "--config.tasks=('$other','superglue/copa')" || exit 1
done
echo PROBES DONE
