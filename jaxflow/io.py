"""Safe file output: atomic writes, the lock of a run directory, and the cleanup of dead temporaries.

A file is written under a fresh temporary name in the target's directory,
``.<name>.tmp-<pid>-<nonce>-<tag><ext>`` (created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so a
planted file or symlink is never followed or reused), flushed to disk (``fsync``), then renamed
onto the target (``os.replace``, atomic on POSIX): every file jaxflow writes is a fresh inode, so
a symlink or hard link planted at the target's name is replaced, never written through. On any
failure the temporary file is removed and the target is untouched. A process killed mid-write
leaves a temporary that names its dead pid; :func:`remove_stale_temporaries` removes it only if
its ``tag`` (:func:`_tag`: a digest of the directory's inode, the pid and the random nonce) is
right, so a user's file that merely looks like a temporary is never deleted.

The one file written in place is the lock (:func:`locked`), whose inode must persist to be
locked: it is opened with ``O_NOFOLLOW`` and refused unless it is a regular file with one link.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import stat
from typing import Iterator

__all__ = ["atomic_write", "read_regular", "atomic_output", "is_temporary", "remove_stale_temporaries", "RunLocked",
           "UnsafeFile", "locked", "LOCK_FILE"]

_TEMPORARY = re.compile(r"^\..+\.tmp-(\d{1,10})-([0-9a-f]{12})-([0-9a-f]{12})(\.[^./]*)?$")

#: the lock file of a run directory (:func:`locked`)
LOCK_FILE = ".lock"


class UnsafeFile(ValueError):
    """A file jaxflow would write in place is a symbolic link, a hard link or not a regular file."""


def _tag(directory: str, pid: int, nonce: str) -> str:
    """The check in a temporary's name: SHA-256 of the directory's device and inode, ``pid`` and ``nonce``."""
    info = os.stat(directory)
    return hashlib.sha256(f"jaxflow temporary {info.st_dev} {info.st_ino} {pid} {nonce}".encode()).hexdigest()[:12]


def _temporary_name(directory: str, path: str, pid: int, nonce: str) -> str:
    """``.<name>.tmp-<pid>-<nonce>-<tag><ext>`` for the file ``path`` in ``directory``."""
    base, ext = os.path.splitext(os.path.basename(path))
    return f".{base}.tmp-{pid}-{nonce}-{_tag(directory, pid, nonce)}{ext}"


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same extension) to write to by name; on success it
    is fsynced and moved onto ``path``, on failure (any exception, an interruption included) removed."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, _temporary_name(directory, path, os.getpid(), secrets.token_hex(6)))
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
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


def _writer(directory: str, name: str) -> int | None:
    """The pid that wrote ``name`` if it is one of :func:`atomic_output`'s temporaries in ``directory``."""
    match = _TEMPORARY.match(name)
    if match is None or match.group(3) != _tag(directory, int(match.group(1)), match.group(2)):
        return None
    return int(match.group(1))


def is_temporary(directory: str, name: str) -> bool:
    """Whether the file ``name`` in ``directory`` is one of :func:`atomic_output`'s temporaries."""
    return _writer(directory, name) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid is that large
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove the temporaries in ``directory`` whose writing process is dead; returns their names."""
    removed = []
    for name in os.listdir(directory):
        pid = _writer(directory, name)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            os.remove(os.path.join(directory, name))
            removed.append(name)
    return removed


class RunLocked(RuntimeError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``directory/.lock`` (created) for the block; a second
    process gets :class:`RunLocked` naming the holder's pid, at once (no waiting). A lock file that
    is a symbolic link, has another hard link or is not a regular file is :class:`UnsafeFile`: the
    holder's pid is written into it, which must never reach a file outside the run directory."""
    path = os.path.join(directory, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise UnsafeFile(f"{path}: the lock file is a symbolic link; remove it") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            what = f"has {info.st_nlink} hard links" if stat.S_ISREG(info.st_mode) else "is not a regular file"
            raise UnsafeFile(f"{path}: the lock file {what}; remove it")
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
        reason = "a symbolic link" if err.errno == errno.ELOOP else err.strerror
        raise error(f"{path}: cannot read {what} ({reason})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: {what} is not a regular file")
        if info.st_size > max_bytes:
            raise error(f"{path}: {what} is {info.st_size} bytes, more than the {max_bytes} expected")
        return handle.read(min(info.st_size, max_bytes) + 1)  # a file that grew past its size is caught by the caller
