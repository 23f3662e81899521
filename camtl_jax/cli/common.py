"""The prologue every command shares: configs from any folder, quiet logging, one-line errors.

All commands use argparse (stdlib: a parser per call, testable in-process, a fast --help since no
command imports JAX before its arguments are parsed). A config is named by
  NAME[:ARG]          a shipped config, configs/NAME.py (`demo`, `tiny`, `glue_base`, ...)
  PATH.py[:ARG]       any get_config(arg) file, from any working directory
and its fields are overridden with `--config.field=value` (or `--config.field value`), as with
ml_collections' config flags: the value is a Python literal (tuples, numbers, True/False; a bare
word is a string) checked against the field's type.

`run(prog, parser, body, argv)` parses, sets up logging, calls body(args) and turns a user error
(bad input, missing file, unknown name, a contradictory config) into one line
`prog: error: ...` and exit status 2; --verbose shows the traceback instead. Ctrl-C is exit 130.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

NOT_CONFIGS = ("__init__", "common")
# Exceptions that mean "the user asked for something wrong", not a bug: one line, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError,
                                                 NotADirectoryError, PermissionError)


class UserError(ValueError):
  """A usage error found by a command itself (the message is the whole story)."""


# ------------------------------------------------------------------------------------------------
# Configs


def config_dir() -> Path:
  """The shipped configs' folder: the repository's configs/, installed as camtl_jax.configs."""
  from camtl_jax import configs  # pylint: disable=import-outside-toplevel
  return Path(configs.__file__).resolve().parent


def shipped_configs() -> list[str]:
  """Names of the shipped configs (what --config NAME accepts)."""
  return sorted(p.stem for p in config_dir().glob("*.py") if p.stem not in NOT_CONFIGS)


def config_path(spec: str) -> tuple[Path, str | None]:
  """(file, arg) of a config spec NAME[:ARG] or PATH.py[:ARG]."""
  head, sep, arg = spec.partition(":")
  candidate = Path(head).expanduser()
  if head.endswith(".py") or candidate.is_file() or "/" in head:
    if not candidate.is_file():
      raise UserError(f"config file {head} not found (from {Path.cwd()}); shipped configs: "
                      f"{', '.join(shipped_configs())}")
    return candidate.resolve(), arg if sep else None
  if head not in shipped_configs():
    close = difflib.get_close_matches(head, shipped_configs(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"unknown config {head!r}: {hint}shipped configs are "
                    f"{', '.join(shipped_configs())} (or pass a path to a .py file)")
  return config_dir() / f"{head}.py", arg if sep else None


def load_config(spec: str, overrides: Sequence[str] = ()):
  """The locked ConfigDict of a config spec, with `field=value` overrides applied."""
  path, arg = config_path(spec)
  module_spec = importlib.util.spec_from_file_location(f"camtl_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UserError(f"{path} defines no get_config(arg) function")
  config = module.get_config(arg) if arg is not None else module.get_config()
  config.lock()
  for item in overrides:
    apply_override(config, item)
  return config


def _field_names(node) -> list[str]:
  return sorted(node.keys()) if hasattr(node, "keys") else []


def _parse_value(text: str, current: Any, field_type: type | None) -> Any:
  """A `--config.x=value` string as the field's type."""
  kind = field_type or type(current)
  if kind is str:
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text
  if kind is bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise UserError(f"expected true or false, got {text!r}")
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if kind in (tuple, list):  # a,b,c without brackets or quotes
      return tuple(part.strip() for part in text.split(",") if part.strip())
    if kind is float and text.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
      return float(text)  # a float, refused where it must be finite (experiment.check_config)
    raise UserError(f"{text!r} is not a {kind.__name__}") from None
  if kind in (tuple, list) and isinstance(value, (list, tuple, str)):
    return tuple(value) if not isinstance(value, str) else (value,)
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def apply_override(config, item: str) -> None:
  """Sets one `field.sub=value` override on a locked ConfigDict; UserError names the field."""
  name, sep, text = item.partition("=")
  if not sep:
    raise UserError(f"--config.{name} needs a value (--config.{name}=VALUE)")
  *parents, leaf = name.split(".")
  node, where = config, "config"
  for part in parents + [leaf]:
    fields = _field_names(node)
    if part not in fields:
      close = difflib.get_close_matches(part, fields, n=1)
      hint = f" (did you mean {where}.{close[0]}?)" if close else ""
      raise UserError(f"unknown config field {where}.{part}{hint}")
    if part != leaf:
      node, where = node[part], f"{where}.{part}"
  current = node[leaf]
  field_type = node.get_ref(leaf).get_type() if hasattr(node, "get_ref") else None
  try:
    value = _parse_value(text, current, field_type if current is None else None)
    node[leaf] = value
  except (UserError, TypeError, ValueError) as e:
    raise UserError(f"--config.{name}={text}: {e}".split("\n")[0]) from None


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> None:
  """The rule of every command that writes a folder (camtl-export, camtl-convert): an existing,
  non-empty OUT_DIR is refused (UserError) unless --overwrite, before any work is done."""
  out = Path(path).expanduser()
  if out.exists() and not out.is_dir():
    raise UserError(f"{out} exists and is not a folder")
  if out.is_dir() and any(out.iterdir()) and not overwrite:
    raise UserError(f"{out} exists and is not empty; pass --overwrite to replace its files, or "
                    "choose another folder")


def add_config_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
  """--config NAME[:ARG] | PATH.py[:ARG]; `--config.field=value` overrides are collected by
  parse_args below."""
  parser.add_argument("--config", required=required, metavar="NAME_OR_FILE",
                      help=f"a shipped config ({', '.join(shipped_configs())}), or a "
                           "get_config(arg) .py file; NAME:ARG passes ARG. Override fields "
                           "with --config.FIELD=VALUE (e.g. --config.batch_size=16)")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None
               ) -> argparse.Namespace:
  """parser.parse_args plus `--config.x=y` / `--config.x y` overrides in args.overrides."""
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides, rest, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      item = arg[len("--config."):]
      if "=" not in item and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        item, i = f"{item}={argv[i + 1]}", i + 1
      overrides.append(item)
    else:
      rest.append(arg)
    i += 1
  args = parser.parse_args(rest)
  args.overrides = overrides
  return args


# ------------------------------------------------------------------------------------------------
# Logging and errors


class _Formatter(logging.Formatter):
  """Our progress as plain lines; warnings and errors say what they are."""

  def format(self, record: logging.LogRecord) -> str:
    message = super().format(record)
    if record.levelno >= logging.WARNING:
      return f"{record.levelname.lower()}: {message}"
    return message


# Libraries that log routine detail (Orbax logs every save step by step, absl prefixes its lines).
QUIET_LOGGERS = ("absl", "orbax", "jax", "tensorstore", "transformers", "urllib3", "filelock",
                 "matplotlib", "asyncio")


def quiet_environment() -> None:
  """Before any heavy import: no TF/PyTorch advisory banners from transformers."""
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def setup_logging(verbose: bool = False) -> None:
  """camtl_jax at INFO on stderr, libraries at ERROR (WARNING with --verbose)."""
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(_Formatter("%(message)s"))
  root = logging.getLogger()
  root.handlers[:] = [handler]
  root.setLevel(logging.WARNING)
  logging.getLogger("camtl_jax").setLevel(logging.DEBUG if verbose else logging.INFO)
  for name in QUIET_LOGGERS:
    logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)
  try:  # absl installs its own handler on first use; route it through ours
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
    absl_logging.set_verbosity(absl_logging.WARNING if verbose else absl_logging.ERROR)
    absl_logging.get_absl_handler().setFormatter(_Formatter("%(message)s"))
  except ImportError:
    pass


def one_line(error: BaseException) -> str:
  """An exception's message on one line (the first line, plus how many more there were)."""
  text = str(error).strip() or type(error).__name__
  if isinstance(error, KeyError) and error.args:
    text = str(error.args[0])
  lines = [line for line in text.splitlines() if line.strip()]
  return lines[0] if len(lines) <= 1 else f"{lines[0]} (+{len(lines) - 1} more lines; --verbose)"


def new_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
  """An ArgumentParser with the module docstring as its description and --verbose."""
  parser = argparse.ArgumentParser(prog=prog, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--verbose", action="store_true",
                      help="library logs, and the traceback of an error")
  return parser


def run(prog: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], Any],
        argv: Sequence[str] | None = None, user_errors: tuple = ()) -> int:
  """Parses argv, runs body(args) and returns the exit status (module docstring)."""
  quiet_environment()
  args = parse_args(parser, argv)
  if args.overrides and not hasattr(args, "config"):
    parser.error(f"--config.{args.overrides[0]}: this command takes no --config")
  setup_logging(args.verbose)
  try:
    status = body(args)
  except (*USER_ERRORS, *user_errors) as e:
    if args.verbose:
      raise
    print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"{prog}: interrupted", file=sys.stderr)
    return 130
  return 0 if status is None else int(status)
