#!/bin/bash
# The documented learning-rate / warmup sweep of glue5_minilm (issue 13), on the mtl arm (the paper
# uses one learning rate for every arm), seed 0, 2000 steps, the committed experiment's overrides;
# dev read at steps 1000 and 2000 (eval_every=1000), so the step count is swept too.
# lr 1e-4 / warmup 0.1 is the committed mtl seed 0 (docs/results/glue5_minilm.json).
# Then CoLA alone for 3 epochs (1600 steps of 16: is CoLA limited by the checkpoint or by steps?).
# Commit d99c1ce. Resumable: rerun (finished arms are skipped, a killed one resumes).
#   docs/results/scripts/glue5_sweep.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env d99c1ce "$@"
COMMON=(--experiment glue5_minilm --seeds 0 --arms mtl
  --config.data_dir="$DATA" --config.max_eval_examples=500 --config.eval_every=1000
  --config.log_every=100 --config.cache_dir="$RUNS/sweep/cache")
for setting in "3e-4 0.1" "3e-5 0.1" "1e-4 0.0"; do
  set -- $setting
  nice -n 5 camtl-experiment "${COMMON[@]}" --out "$RUNS/sweep/lr$1_wu$2" \
      --config.learning_rate=$1 --config.warmup_fraction=$2 || exit 1
done
for lr in 1e-4 3e-5; do
  nice -n 5 python -m camtl_jax.main --config glue5_minilm:single_task:glue/cola \
      --workdir "$RUNS/sweep/cola_1600_lr$lr" --config.total_steps=1600 \
      --config.eval_every=400 --config.log_every=100 --config.learning_rate=$lr \
      --config.data_dir="$DATA" --config.cache_dir="$RUNS/sweep/cache" || exit 1
done
echo SWEEP DONE
