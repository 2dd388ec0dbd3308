"""Safe file output: atomic writes, the lock of a run directory, and the cleanup of dead temporaries.

A file is written under a fresh temporary name in the target's directory,
``.<name>.tmp-<pid>-<random><ext>`` (``tempfile.mkstemp``: created with ``O_CREAT | O_EXCL``, so a
planted file or symlink is never followed or reused), flushed to disk (``fsync``), then renamed
onto the target (``os.replace``, atomic on POSIX). On any failure the temporary file is removed
and the target is untouched; a process killed mid-write leaves a temporary that names its dead
pid, which :func:`remove_stale_temporaries` recognises and removes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile
from typing import Iterator

__all__ = ["atomic_write", "read_regular", "atomic_output", "is_temporary", "remove_stale_temporaries", "RunLocked",
           "locked", "LOCK_FILE"]

_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)-[^/]*$")

#: the lock file of a run directory (:func:`locked`)
LOCK_FILE = ".lock"


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same extension) to write to by name; on success it
    is fsynced and moved onto ``path``, on failure removed."""
    directory = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-{os.getpid()}-", suffix=ext, dir=directory)
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


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a file name) is one of :func:`atomic_output`'s temporaries."""
    return _TEMPORARY.match(name) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove the temporaries in ``directory`` whose writing process is dead; returns their names."""
    removed = []
    for name in os.listdir(directory):
        match = _TEMPORARY.match(name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            os.remove(os.path.join(directory, name))
            removed.append(name)
    return removed


class RunLocked(RuntimeError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``directory/.lock`` (created) for the block; a second
    process gets :class:`RunLocked` naming the holder's pid, at once (no waiting)."""
    path = os.path.join(directory, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunLocked(f"{directory}: another jaxflow process (pid {holder}) is using this run directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def read_regular(path: str, max_bytes: int, what: str, error: type[Exception]) -> bytes:
    """The bytes of ``path``, a regular file (not a symlink, FIFO or device) of at most ``max_bytes``;
    anything else raises ``error`` with a one-line message naming ``what``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        reason = "a symbolic link" if err.errno == 40 else err.strerror
        raise error(f"{path}: cannot read {what} ({reason})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: {what} is not a regular file")
        if info.st_size > max_bytes:
            raise error(f"{path}: {what} is {info.st_size} bytes, more than the {max_bytes} expected")
        return handle.read(min(info.st_size, max_bytes) + 1)  # a file that grew past its size is caught by the caller
