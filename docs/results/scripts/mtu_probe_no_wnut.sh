#!/bin/bash
# Probe: the mixed run's defaults without wnut17 (does COPA learn when no tagging task shares the
# encoder?). Commit 5a6d181.
#   docs/results/scripts/mtu_probe_no_wnut.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env 5a6d181 "$@"
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA"
nice -n 19 python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_mixed_no_wnut" \
    "$T" $C && echo PROBE DONE
