# Sourced by the shell scripts of docs/results/scripts (run them from the repository root):
#   docs/results/scripts/NAME.sh DATA_DIR [RUNS_DIR [CODE_DIR]]
# DATA_DIR  the data folder (glue/, superglue/, wnut17/, ...), else $CAMTL_DATA_DIR; a script
#           that needs none (the demo generates its data) sets RESULTS_NO_DATA=1 and takes "-"
# RUNS_DIR  where the runs' workdirs, caches and logs go, else $CAMTL_RUNS_DIR, else ./runs
# CODE_DIR  a checkout of the commit the result was measured on (the script names it), else
#           RUNS_DIR/code_COMMIT; cloned from this repository at that commit when missing
# `results_env COMMIT "$@"` sets DATA, RUNS, CODE and REPO (absolute paths), then changes into
# CODE with PYTHONPATH=CODE, so that `python -m camtl_jax.main` and the console scripts of the
# active environment run the code of COMMIT. With RESULTS_PATCH=REV:PATH set, a fresh clone also
# gets that patch from this repository's history (`git show REV:PATH`) applied.

results_env() {
  local commit=$1
  shift
  if [ ! -f pyproject.toml ] || [ ! -d docs/results/scripts ]; then
    echo "$0: error: run it from the repository root" >&2
    exit 2
  fi
  REPO=$(pwd)
  DATA=${1:-${CAMTL_DATA_DIR:-}}
  if [ -n "${RESULTS_NO_DATA:-}" ]; then
    DATA=
  elif [ -z "$DATA" ] || [ ! -d "$DATA" ]; then
    echo "$0: error: give the data folder as the first argument (or set CAMTL_DATA_DIR)" >&2
    exit 2
  else
    DATA=$(cd "$DATA" && pwd)
  fi
  RUNS=${2:-${CAMTL_RUNS_DIR:-runs}}
  mkdir -p "$RUNS" && RUNS=$(cd "$RUNS" && pwd)
  CODE=${3:-$RUNS/code_$commit${RESULTS_PATCH:+_patched}}
  if [ ! -d "$CODE" ]; then
    git clone -q "$REPO" "$CODE" && git -C "$CODE" checkout -q "$commit" || exit 1
    if [ -n "${RESULTS_PATCH:-}" ]; then
      git show "$RESULTS_PATCH" | git -C "$CODE" apply || exit 1
    fi
  fi
  CODE=$(cd "$CODE" && pwd)
  cd "$CODE" || exit 1
  export PYTHONPATH=$CODE
}
