#!/bin/bash
# COPA beside all five other tasks of the mixed run, but on random rows: the uniform sampler at
# b = 24 (about 4 COPA rows per step, as COPA alone at b = 4 and in the pairs of
# mtu_probe_pairs.sh, where it learned). If COPA learns here, what holds it in the mixed runs is
# which COPA rows MT-U trains on, not the other tasks beside it. 500 steps, seed 0, commit
# c128387. Resumable: rerun.
#   docs/results/scripts/mtu_probe_uniform6.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env c128387 "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=24 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.sampler=uniform \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
dir=$RUNS/mtu_uniform6_b24
[ -f "$dir/results.json" ] ||
  python -m camtl_jax.main --config glue5_minilm --workdir "$dir" "$T" $C
echo PROBES DONE
