# Sourced by the launch scripts (not run): resolve a --config argument without starting Python.
#
#   resolve_config SPEC PROG   -> prints the spec to pass to `--config`, or exits 2 naming it
#
# SPEC is what the commands accept (camtl_jax/cli/common.py): a shipped config NAME[:ARG]
# (configs/NAME.py in this repository, installed as camtl_jax.configs) or a file PATH.py[:ARG].
# A name is printed unchanged; a file becomes an absolute path, resolved from the caller's folder
# (call this before the script changes directory), so it works from any folder.

LAUNCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

shipped_configs() {  # the names `--config NAME` accepts, space-separated
  local f name names=()
  for f in "$LAUNCH_REPO"/configs/*.py; do
    name="$(basename "$f" .py)"
    [[ "$name" == __init__ || "$name" == common ]] || names+=("$name")
  done
  echo "${names[*]}"
}

resolve_config() {
  local spec="$1" prog="$2" head arg="" sep=""
  head="${spec%%:*}"
  if [[ "$spec" == *:* ]]; then sep=":"; arg="${spec#*:}"; fi
  if [[ "$head" == *.py || "$head" == */* || -f "$head" ]]; then
    if [[ ! -f "$head" ]]; then
      echo "$prog: error: config file '$head' not found (from $PWD); shipped configs:" \
        "$(shipped_configs)" >&2
      exit 2
    fi
    echo "$(cd "$(dirname "$head")" && pwd)/$(basename "$head")$sep$arg"
    return
  fi
  if [[ -z "$head" || "$head" == __init__ || "$head" == common \
        || ! -f "$LAUNCH_REPO/configs/$head.py" ]]; then
    echo "$prog: error: unknown config '$head': shipped configs are $(shipped_configs)" \
      "(or pass a path to a .py file)" >&2
    exit 2
  fi
  echo "$spec"
}

quote_args() {  # the arguments as one line a shell reads back the same (quoted only where needed)
  local arg out=()
  for arg in "$@"; do
    if [[ -z "$arg" || "$arg" =~ [^A-Za-z0-9_./:=@,+%-] ]]; then
      out+=("'${arg//\'/\'\\\'\'}'")
    else
      out+=("$arg")
    fi
  done
  echo "${out[*]}"
}

installed_version() {  # the installed version of a Python distribution, '' if none (no import)
  python -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1" 2>/dev/null || true
}
