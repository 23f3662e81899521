#!/bin/bash
# The glue5_minilm experiment at the config's 2000 steps; resumable: rerun this script (finished
# arms are skipped, a killed one resumes). Order: mtl and single_task seed 0, camtl_mtu seed 0,
# mtl seed 1, camtl_mtu seed 1, then the ablation arms (the experiment's own order after that).
cd RUNS/code
source .venv/bin/activate
export PYTHONPATH=RUNS/code
COMMON=(--experiment glue5_minilm --out RUNS/glue5_2000
  --config.data_dir=DATA --config.max_eval_examples=500 --config.eval_every=1000
  --config.log_every=100 --config.cache_dir=RUNS/glue5_2000/cache)
# a previous copy of this script's first command still running: let it finish
while pgrep -f "camtl-experiment --experiment glue5_minilm" > /dev/null; do sleep 20; done
nice -n 10 camtl-experiment "${COMMON[@]}" --seeds 0 --arms mtl,single_task || exit 1
nice -n 10 camtl-experiment "${COMMON[@]}" --seeds 0 --arms camtl_mtu || exit 1
nice -n 10 camtl-experiment "${COMMON[@]}" --seeds 1 --arms mtl || exit 1
nice -n 10 camtl-experiment "${COMMON[@]}" --seeds 0,1 --arms camtl_mtu,mtl,single_task || exit 1
exec nice -n 10 camtl-experiment "${COMMON[@]}" --seeds 0,1
