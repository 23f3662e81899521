#!/usr/bin/env bash
# Train on one NVIDIA GPU with bfloat16 compute (parameters and optimizer state stay float32).
#
#   launch/gpu.sh [--dry-run] [--no-install] [--mem-fraction F] [--config FILE] [--workdir DIR]
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
die() { echo "gpu.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    --mem-fraction) MEM_FRACTION="${2:?--mem-fraction needs a value in (0, 1]}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
    --workdir) WORKDIR="${2:?--workdir needs a directory}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

cd "$(dirname "$0")/.."
[[ -f "$CONFIG" ]] || die "config file '$CONFIG' not found"

JAX_VERSION=$(python -c "import jax; print(jax.__version__)" 2>/dev/null || echo "")
JAX_SPEC="jax[cuda12]${JAX_VERSION:+==$JAX_VERSION}"
# XLA preallocates this fraction of GPU memory once (no fragmentation, no re-allocation);
# the rest stays free for cuDNN/cuBLAS workspaces and other processes.
ENV=("XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION" "TF_CPP_MIN_LOG_LEVEL=1")
CMD=(python -m camtl_jax.main --config "$CONFIG" --workdir "$WORKDIR" --config.dtype=bfloat16
     "${EXTRA[@]}")

echo "gpu.sh: single-GPU run, bfloat16 compute"
[[ "$INSTALL" == 1 ]] && echo "  install: pip install -U \"$JAX_SPEC\" && pip install -e ."
echo "  env: ${ENV[*]}"
echo "  run: ${CMD[*]}"
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
