#!/bin/bash
# 2026-12-05 06:43-06:49 (beside a 500-step probe), commit 1411d15: the README demo at learning
# rate LR (LR=3e-4 ran): does the span task learn in the demo's 300 steps at the span-only run's
# 3e-4? (docs/results/mtu_mixing.md)
#   LR=3e-4 docs/results/scripts/demo_lr_probe.sh - [RUNS_DIR [CODE_DIR]]
# The demo generates its own data: the first argument is '-'.
RESULTS_NO_DATA=1
. "$(dirname "$0")/results_env.sh"
results_env 1411d15 "$@"
LR=${LR:-3e-4}
timeout 1200 python -m camtl_jax.main --config demo --workdir "$RUNS/demo_lr$LR" \
  --config.learning_rate="$LR"
