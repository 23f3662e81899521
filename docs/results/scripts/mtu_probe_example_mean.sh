#!/bin/bash
# Probe: the MT-U mixing run's defaults with loss_weighting=example_mean, commit e1dbea5
# (resumable: rerun).
#   docs/results/scripts/mtu_probe_example_mean.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env e1dbea5 "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA"
nice -n 19 python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_mixed_rows" "$T" $C \
    --config.loss_weighting=example_mean && echo PROBE DONE
