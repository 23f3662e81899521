#!/bin/bash
# Stop 30, 2026-12-05 06:43-06:49 (beside a 500-step probe): the README demo (a clone of 1411d15
# in /work/runs/code3) at learning rate LR (LR=3e-4 ran): does the span task
# learn in the demo's 300 steps at the span-only run's 3e-4?
#   LR=3e-4 docs/results/scripts/demo_lr_probe.sh REPO
REPO=${1:-/work/main}
if [ ! -d /work/runs/code3 ]; then
  git clone -q "$REPO" /work/runs/code3 && git -C /work/runs/code3 checkout -q 1411d15
fi
cd /work/runs/code3
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code3
LR=${LR:-3e-4}
timeout 1200 python -m camtl_jax.main --config demo --workdir /work/runs/demo_lr$LR --config.learning_rate=$LR
