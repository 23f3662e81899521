#!/bin/bash
# Probe: the README demo with neither MT-U floor nor cap (mtu_min_share=0, mtu_max_share=1; the
# calibrated u kept): does the span task leave its plateau when it may hold most of the batch, as
# COPA does in docs/results/mtu_mixing.md? Compare the README demo (span F1 0.234). Commit d99c1ce.
# Resumable: rerun.
#   docs/results/scripts/demo_span_no_shares.sh - [RUNS_DIR [CODE_DIR]]
# The demo generates its own data: the first argument is '-'.
RESULTS_NO_DATA=1
. "$(dirname "$0")/results_env.sh"
results_env d99c1ce "$@"
nice -n 10 python -m camtl_jax.main --config demo --workdir "$RUNS/demo_no_shares" \
    --config.mtu_min_share=0.0 --config.mtu_max_share=1.0 && echo PROBE DONE
