#!/usr/bin/env bash
# Train on one NVIDIA GPU with bfloat16 compute (parameters and optimizer state stay float32).
#
#   launch/gpu.sh [--dry-run] [--no-install] [--mem-fraction F] [--config NAME|FILE] [--workdir DIR]
#                 [-- MAIN_FLAGS...]
#   launch/gpu.sh --config glue_base --workdir /data/runs/glue_base -- \
#       --config.model_path=/data/ckpt/bert-base-uncased --config.data_dir=/data/benchmarks
#
# Installs the CUDA 12 build of the jax version already in the environment (jax[cuda12]) unless
# --no-install, then runs `python -m camtl_jax.main ... --config.dtype=bfloat16`.
set -euo pipefail

DRY_RUN=0
INSTALL=1
MEM_FRACTION=0.9
CONFIG=demo
WORKDIR=/tmp/camtl_gpu
EXTRA=()

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu.sh: error: $*" >&2; exit 2; }
. "$(dirname "$0")/_config.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    --mem-fraction) MEM_FRACTION="${2:?--mem-fraction needs a value in (0, 1]}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a NAME or FILE}"; shift 2 ;;
    --workdir) WORKDIR="${2:?--workdir needs a directory}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

CONFIG=$(resolve_config "$CONFIG" gpu.sh) || exit 2
cd "$(dirname "$0")/.."

JAX_VERSION=$(installed_version jax)
JAX_SPEC="jax[cuda12]${JAX_VERSION:+==$JAX_VERSION}"
# XLA preallocates this fraction of GPU memory once (no fragmentation, no re-allocation);
# the rest stays free for cuDNN/cuBLAS workspaces and other processes.
ENV=("XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION" "TF_CPP_MIN_LOG_LEVEL=1")
CMD=(python -m camtl_jax.main --config "$CONFIG" --workdir "$WORKDIR" --config.dtype=bfloat16
     "${EXTRA[@]}")

echo "gpu.sh: single-GPU run, bfloat16 compute"
if [[ "$INSTALL" == 1 ]]; then
  echo "  \$ $(quote_args pip install -q -U "$JAX_SPEC")"
  echo "  \$ $(quote_args pip install -q -e .)"
fi
echo "  \$ $(quote_args env "${ENV[@]}" "${CMD[@]}")"
echo "  results: $WORKDIR/results.txt, $WORKDIR/results.json"
if [[ "$DRY_RUN" == 1 ]]; then
  command -v nvidia-smi >/dev/null || echo "  (note: nvidia-smi not found here; a real run stops)"
  echo "(dry run: nothing executed)"
  exit 0
fi

command -v nvidia-smi >/dev/null \
  || die "nvidia-smi not found: this machine has no NVIDIA driver (use launch/local.sh for CPU)"
nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi sees no GPU (driver not loaded?)"
if [[ "$INSTALL" == 1 ]]; then
  pip install -q -U "$JAX_SPEC"
  pip install -q -e .
fi
python -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 1)" \
  || die "jax does not see the GPU after installing $JAX_SPEC (check the CUDA driver >= 12)"
exec env "${ENV[@]}" "${CMD[@]}"
