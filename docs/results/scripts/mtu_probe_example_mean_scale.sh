#!/bin/bash
# The mixed command of mtu_mixing.md (the defaults, seed 0) with both levers that each freed COPA
# in a smaller setting: loss_weighting=example_mean (COPA's gradient weight is its share of the
# rows, ~0.4-0.5 at the cap, instead of 1 / tasks present) and regression_loss_scale=0.5 (STS-B's
# loss at the scale of cross-entropy). A clone of 124df6e. Resumable: rerun.
cd /work/runs/code2
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code2
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.regression_loss_scale=0.5 --config.loss_weighting=example_mean \
   --config.data_dir=/work/shared/data --config.cache_dir=/work/runs/mtu_cache"
dir=/work/runs/mtu_mixed_rows_stsb_half
[ -f "$dir/results.json" ] || python -m camtl_jax.main --config glue5_minilm --workdir "$dir" "$T" $C
echo PROBES DONE
