"""Free space and directory checks for the grapher's files (pure, no MPI, no HDF5).

HDF5 does not survive a full disk: a flush that hits ENOSPC raises, leaves the
file's metadata cache inconsistent, and the library segfaults when it closes the
file or terminates. So the segment writer never hands HDF5 a write that might not
fit: before each append it computes the bytes the append will add to the file and
compares them, plus :data:`MARGIN`, with what ``statvfs`` says is free.

What an append adds is whole chunks: HDF5 writes a chunk in full the first time it
reaches the disk, and later writes to it land in place. So the growth of a dataset
from ``n0`` to ``n1`` elements is ``(ceil(n1 / C) - ceil(n0 / C)) * C * itemsize``
for chunk size ``C``. Measured on a tmpfs with chunks of 16 KiB to 1 MiB and random
appends (``tests/test_storage_faults.py`` exercises it end to end): the file grew by
exactly that, plus at most 4 KiB of metadata (object headers, chunk index blocks,
page rounding) per append, and closing a file needed nothing more.
:data:`MARGIN` keeps 64 times that.

The margin covers this writer only. Another process filling the same file system
between the check and the write can still make HDF5 fail; the writer then treats
the error as a storage failure like any other (see ``SegmentWriter``).
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from dataclasses import field
from pathlib import Path
from typing import Any

from .._plain import plain
from ..errors import StorageFull

MARGIN = 256 << 10  # free bytes always left beyond an append's chunks (measured need: <= 4 KiB)
FIRST_RETRY_S = 0.05  # a failing write is retried after this, then after twice as long, ...
MAX_RETRY_S = 1.0  # ... up to this


def free_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``directory``."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def chunk_growth(n0: int, n1: int, chunk: int, itemsize: int) -> int:
    """Bytes a chunked dataset adds on disk when it grows from ``n0`` to ``n1`` elements."""
    if n1 <= n0:
        return 0
    return (-(-n1 // chunk) - -(-n0 // chunk)) * chunk * itemsize


def ensure_free(directory: Path, need: int, what: str) -> None:
    """Raise :class:`StorageFull` unless ``need`` bytes plus :data:`MARGIN` are free in ``directory``."""
    free = free_bytes(directory)
    if free < need + MARGIN:
        raise StorageFull(directory, need + MARGIN, free, what)


def check_dir(path: Path) -> str | None:
    """Can a grapher write files in ``path``? ``None`` if so, else what is wrong and what to do.

    The directory is created if it is missing (its writer would create it anyway); a probe
    file is created and removed in it.
    """
    for parent in [path, *path.parents]:  # the deepest part of the path that exists
        if os.path.lexists(parent):
            break
    if not parent.is_dir():
        kind = "a symlink to nowhere" if parent.is_symlink() and not parent.exists() else "not a directory"
        return f"{parent} is {kind}; remove it or point the setting at a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the directory: {exc.strerror} (errno {exc.errno}); {advice(exc)}"
    probe = path / f".chronompi-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        try:
            probe.unlink()
        except OSError:
            pass
        return f"cannot write in the directory: {exc.strerror} (errno {exc.errno}); {advice(exc)}"
    return None


def advice(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "the file system is mounted read-only: choose a directory on a writable one"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "fix its permissions or choose a directory this user may write"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return "a file is where a directory should be: remove it or choose another directory"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the file system (or your quota) is full: free some space or choose another directory"
    return "choose another directory"


@plain
class Outage:
    """A storage target that keeps failing: when to try again (a doubling delay) and when to give up."""

    error: OSError
    retry_s: float  # storage.retry_s: how long after the first failure to keep trying
    since: float = field(default_factory=time.monotonic)
    delay: float = FIRST_RETRY_S
    failures: int = 1

    def __post_init__(self) -> None:
        self.next_try = self.since + self.delay

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.next_try

    def failed_again(self, exc: OSError, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.error = exc
        self.failures += 1
        self.delay = min(self.delay * 2, MAX_RETRY_S)
        self.next_try = now + self.delay

    def expired(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) - self.since >= self.retry_s

    def info(self) -> dict[str, Any]:
        """What the run record says about it: path, errno, error text, how long, how many tries."""
        return describe(self.error) | {
            "for_s": round(time.monotonic() - self.since, 3),
            "failures": self.failures,
        }


def describe(exc: OSError) -> dict[str, Any]:
    """An OSError (or StorageFull) as a small JSON-able dict."""
    path = getattr(exc, "path", None) or exc.filename
    return {
        "path": str(path) if path is not None else None,
        "errno": exc.errno,
        "errno_name": errno.errorcode.get(exc.errno or 0, ""),
        "error": str(exc),
    }
