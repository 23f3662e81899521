#!/bin/bash
# Which other task keeps COPA on its plateau? COPA alone learns at 4 rows per step (b = 4), and
# stays flat beside the five other tasks at 3-4 rows per step (b = 8) and at 7-8 (b = 16). Here
# COPA with one other task at a time, half of each batch each (uniform sampler, b = 8: about 4
# COPA rows per step), 500 steps, seed 0, a clone of c128387. Resumable: rerun (a finished run is
# skipped).
cd /work/runs/code
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.sampler=uniform \
   --config.data_dir=/work/shared/data --config.cache_dir=/work/runs/mtu_cache"
for other in wnut17 glue/stsb glue/rte; do
  dir=/work/runs/mtu_pair_${other//\//_}
  [ -f "$dir/results.json" ] && continue
  python -m camtl_jax.main --config glue5_minilm --workdir "$dir" $C \
      "--config.tasks=('$other','superglue/copa')" || exit 1
done
echo PROBES DONE
