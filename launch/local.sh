#!/usr/bin/env bash
# Train on this machine's CPU, optionally split over N fake CPU devices (the same sharded program
# that runs on a pod; useful to check multi-device runs without hardware).
#
#   launch/local.sh [--dry-run] [--devices N] [--config NAME|FILE] [--workdir DIR] [-- MAIN_FLAGS...]
#   launch/local.sh --devices 8 --config tiny --workdir /tmp/camtl_tiny8
#
# Everything after `--` goes to `python -m camtl_jax.main` (e.g. --config.total_steps=20).
set -euo pipefail

DRY_RUN=0
DEVICES=1
CONFIG=demo
WORKDIR=/tmp/camtl_local
EXTRA=()

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "local.sh: error: $*" >&2; exit 2; }
. "$(dirname "$0")/_config.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --devices) DEVICES="${2:?--devices needs a number}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a NAME or FILE}"; shift 2 ;;
    --workdir) WORKDIR="${2:?--workdir needs a directory}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] || die "--devices must be a positive integer, got '$DEVICES'"

CONFIG=$(resolve_config "$CONFIG" local.sh) || exit 2
cd "$(dirname "$0")/.."

ENV=(JAX_PLATFORMS=cpu)
if [[ "$DEVICES" -gt 1 ]]; then
  ENV+=("XLA_FLAGS=--xla_force_host_platform_device_count=$DEVICES")
fi
CMD=(python -m camtl_jax.main --config "$CONFIG" --workdir "$WORKDIR" "${EXTRA[@]}")

echo "local.sh: CPU run on $DEVICES device(s)"
echo "  \$ $(quote_args env "${ENV[@]}" "${CMD[@]}")"
echo "  results: $WORKDIR/results.txt, $WORKDIR/results.json (rerunning resumes from $WORKDIR/checkpoints)"
if [[ "$DRY_RUN" == 1 ]]; then
  echo "(dry run: nothing executed)"
  exit 0
fi
python -c "import camtl_jax" 2>/dev/null \
  || die "camtl_jax is not importable: activate the venv and 'pip install -e .' (see README)"
exec env "${ENV[@]}" "${CMD[@]}"
