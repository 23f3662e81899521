"""JAX's persistent compilation cache for a run: a resumed or repeated run loads its compiled
programs from disk instead of compiling them again (the MiniLM GLUE-5 train step compiled in 15.1 s
on 2 CPU cores and loaded from the cache in 4.1 s; the AOT-compiled BERT-large pod steps took
minutes).

The cache directory is a process-wide JAX setting that JAX reads once, at the first compilation
that uses it; so the command line (`camtl-train`) enables it before anything compiles, and library
users who call train.train_and_evaluate directly call `enable` themselves (or set
`jax_compilation_cache_dir`). config.compile_cache_dir: 'workdir' (default: WORKDIR/compile_cache),
a directory (shared between runs of the same programs), or '' (off).

The cache is trusted code: JAX runs what it finds there. Do not point it at a directory others can
write to.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import jax

log = logging.getLogger(__name__)

HIT_EVENT = "/jax/compilation_cache/cache_hits"
# Programs loaded from the cache in this process, counted by a jax.monitoring listener.
_hits = {"count": 0, "listening": False}


def _count(event: str, **kwargs) -> None:
  del kwargs
  if event == HIT_EVENT:
    _hits["count"] += 1


def resolve(setting: str, workdir: str | os.PathLike) -> Path | None:
  """config.compile_cache_dir -> the directory to use, or None when the cache is off."""
  if not setting:
    return None
  return Path(workdir) / "compile_cache" if setting == "workdir" else Path(setting).expanduser()


def enable(directory: str | os.PathLike) -> None:
  """Points JAX's persistent compilation cache at `directory` for this process (JAX creates it
  at the first compilation, so a run refused before compiling writes nothing).

  Programs that compile in at least 1 s are stored (JAX's default threshold): the train step and
  the evaluation programs of any real model; trivial helper programs are not worth a file each.
  Call before the first compilation: JAX fixes the directory when it first uses the cache.
  """
  jax.config.update("jax_compilation_cache_dir", str(directory))
  if not _hits["listening"]:
    jax.monitoring.register_event_listener(_count)
    _hits["listening"] = True
  log.debug("persistent compilation cache: %s", directory)


def hits() -> int:
  """How many programs this process has loaded from the persistent cache so far."""
  return _hits["count"]


def hit_note(hits_before: int) -> str:
  """' (from the persistent compilation cache)' when a program was loaded since `hits_before`."""
  return " (from the persistent compilation cache)" if hits() > hits_before else ""
