"""Atomic file output, the one helper for checkpoints, samples and plots.

A file is written under a fresh temporary name in the target's directory (``tempfile.mkstemp``:
created with ``O_CREAT | O_EXCL``, so a planted file or symlink is never followed or reused),
flushed to disk (``fsync``), then renamed onto the target (``os.replace``, atomic on POSIX). On
any failure the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

__all__ = ["atomic_write", "atomic_output"]


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same extension) to write to by name; on success it
    is fsynced and moved onto ``path``, on failure removed."""
    directory = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-", suffix=ext, dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (see the module docstring)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
