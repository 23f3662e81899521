#!/bin/bash
# The mixed command of mtu_mixing.md (the defaults, seed 0) with both levers that each freed COPA
# in a smaller setting: loss_weighting=example_mean (COPA's gradient weight is its share of the
# rows, ~0.4-0.5 at the cap, instead of 1 / tasks present) and regression_loss_scale=0.5 (STS-B's
# loss at the scale of cross-entropy). Commit 124df6e. Resumable: rerun.
#   docs/results/scripts/mtu_probe_example_mean_scale.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env 124df6e "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.regression_loss_scale=0.5 --config.loss_weighting=example_mean \
   --config.data_dir=$DATA --config.cache_dir=$RUNS/mtu_cache"
dir=$RUNS/mtu_mixed_rows_stsb_half
[ -f "$dir/results.json" ] ||
  python -m camtl_jax.main --config glue5_minilm --workdir "$dir" "$T" $C
echo PROBES DONE
