#!/bin/bash
# 2026-12-04, commit 5a6d181. Resumable: rerun this script. 1) glue5_minilm ablation arms, seed 0,
# 2000 steps; 2) MT-U mixing: the two commands of docs/results/mtu_mixing.md (mtu_mixed: the
# defaults; mtu_paper: the paper's formula, no options).
#   docs/results/scripts/glue5_ablation_mtu_mixing.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env 5a6d181 "$@"
nice -n 19 camtl-experiment --experiment glue5_minilm --out "$RUNS/glue5_2000" \
  --config.data_dir="$DATA" --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir="$RUNS/glue5_2000/cache" --seeds 0 \
  --arms attention,adapter,layernorm || exit 1
T="--config.tasks=('glue/rte','glue/mrpc','glue/stsb','glue/cola','wnut17','superglue/copa')"
C="--config.total_steps=500 --config.max_length=64 --config.batch_size=8 --config.eval_every=500 \
   --config.checkpoint_every=100 --config.log_every=25 --config.max_eval_examples=300 \
   --config.data_dir=$DATA"
nice -n 19 python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_mixed" "$T" $C \
    || exit 1
nice -n 19 python -m camtl_jax.main --config glue5_minilm --workdir "$RUNS/mtu_paper" "$T" $C \
    --config.mtu_uncertainty=normalised --config.mtu_min_share=0.0 --config.mtu_max_share=1.0 \
    || exit 1
echo ALL DONE
