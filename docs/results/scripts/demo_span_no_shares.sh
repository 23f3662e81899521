#!/bin/bash
# Probe: the README demo with neither MT-U floor nor cap (mtu_min_share=0, mtu_max_share=1; the
# calibrated u kept): does the span task leave its plateau when it may hold most of the batch, as
# COPA does in docs/results/mtu_mixing.md? Compare the README demo (span F1 0.234). Resumable: rerun.
cd /work/runs/code
source /work/main/.venv/bin/activate
export PYTHONPATH=/work/runs/code
nice -n 10 python -m camtl_jax.main --config demo --workdir /work/runs/demo_no_shares \
    --config.mtu_min_share=0.0 --config.mtu_max_share=1.0 && echo PROBE DONE
