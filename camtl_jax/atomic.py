"""Files that a crash, a kill or a full disk never leaves half-written.

`write_text(path, text)` writes a temporary file beside `path` (same folder, so same filesystem),
flushes it to disk and renames it over `path` (os.replace, atomic on POSIX): a reader sees the old
file or the new one, never a torn one. Used for every small file a run rewrites in place:
results.json, results.txt, config.json, tasks.json and the history rewrite on resume.
`write_bytes(path, data)` does the same for binary files (the HF recipe's checkpoint.pt).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The process's umask, read once (os.umask can only be read by setting it): mkstemp creates its
# file as 0600, and the renamed file should get the mode a plain open() would have given it.
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_text(path: str | os.PathLike, text: str) -> None:
  """Replaces `path` with `text` (UTF-8) atomically; on any failure the old file is unchanged and
  no temporary file is left behind."""
  write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Replaces `path` with `data` atomically; on any failure the old file is unchanged and no
  temporary file is left behind."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
