#!/bin/bash
# Probe: the mixed run's calibrated uncertainty with neither floor nor cap (mtu_min_share=0,
# mtu_max_share=1): can COPA hold most of the batch, as in the paper runs, when only the
# calibration differs from the paper's formula? Seed 0, commit d99c1ce. Resumable: rerun.
#   docs/results/scripts/mtu_probe_calibrated_only.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env d99c1ce "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
nice -n 5 python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_calibrated_only" \
    "$T" $C --config.mtu_min_share=0.0 --config.mtu_max_share=1.0 && echo PROBE DONE
