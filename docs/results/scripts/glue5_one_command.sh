#!/bin/bash
# The whole glue5_minilm experiment with the one command, seeds 0 and 1, on one code version
# (commit d99c1ce for the main comparison; COMMIT=e0588fb for the ablation arms: their camtl_jax/
# differs in one docstring and the experiment's plan), into the folder where glue5_quiet_camtl.sh
# ran camtl_mtu seed 0 (that arm is skipped as finished). Resumable: rerun.
#   [COMMIT=e0588fb] docs/results/scripts/glue5_one_command.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
. "$(dirname "$0")/results_env.sh"
results_env "${COMMIT:-d99c1ce}" "$@"
camtl-experiment --experiment glue5_minilm --out "$RUNS/quiet" --seeds 0,1 \
  --config.data_dir="$DATA" --config.max_eval_examples=500 --config.eval_every=1000 \
  --config.log_every=100 --config.cache_dir="$RUNS/quiet/cache"
