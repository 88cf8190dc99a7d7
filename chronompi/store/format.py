"""Layout of a store directory and of its HDF5 segment files.

::

    STORE/chronompi.json                      marker: {"format": "chronompi-store", "schema": 2}
    STORE/segments/r<run>-g<grapher>-<n>.h5   closed segments (".h5.part" while being written)
    STORE/runs/r<run>.json                    run manifest written by the visor at the end

    segment:/<chronicle>/<story>/events    EVENT rows (time, client, seq, offset, length)
    segment:/<chronicle>/<story>/payload   uint8 heap; row i's bytes are payload[offset : offset + length]
    segment:/<chronicle>/<story>/windows   WINDOW rows, one per sorted run written, with its checksums
    segment attrs: schema, run, grapher, created

Schema 2 adds checksums: each windows row carries the XXH3-64 hashes of its run and of itself
(``integrity.py``). Schema-1 segments (no checksums, the ``WINDOW_V1`` index) are still read, with
the plausibility checks only.

Rows of one window run are contiguous and sorted by (time, client, seq); their
payloads lie in one span of the heap (min offset to max offset + length), in the
order the grapher received them, not necessarily in event order. Data rows are flushed before the index row that
covers them, so a reader that trusts only the windows index never sees a
half-written run.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from ..codec import EVENT
from ..errors import StoreError
from .dirs import MARKER, RUNS, SCHEMA_VERSION, SEGMENTS, init_store  # (the directory's layout: dirs.py)

_WINDOW_V1 = [
    ("window", "<i8"),
    ("first_row", "<u8"),
    ("n_rows", "<u8"),
    ("t_min", "<i8"),
    ("t_max", "<i8"),
    ("late", "u1"),
    ("committed", "<i8"),  # wall-clock ns when the run was written (time-to-durable)
]
WINDOW_V1 = np.dtype(_WINDOW_V1)  # schema 1: no checksums (still read, see docs/format.md)
WINDOW = np.dtype(
    _WINDOW_V1
    + [
        ("heap0", "<u8"),  # the run's payload bytes: payload[heap0 : heap0 + heap_bytes]
        ("heap_bytes", "<u8"),
        ("checksum", "<u8"),  # XXH3-64 of the run's event rows, then of its payload bytes (integrity.py)
        ("row_checksum", "<u8"),  # XXH3-64 of this row's bytes before row_checksum
    ]
)

__all__ = ["EVENT", "WINDOW", "WINDOW_V1", "SCHEMA_VERSION", "init_store", "check_store", "write_run", "read_runs"]


def check_store(root: str | os.PathLike[str]) -> Path:
    """Return the path of an existing store, or raise StoreError saying what is wrong."""
    path = Path(root)
    if not path.exists():
        raise StoreError(f"no store at {str(path)!r}: the directory does not exist")
    marker = path / MARKER
    if not marker.is_file():
        raise StoreError(f"{str(path)!r} is not a chronompi store (no {MARKER})")
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{str(marker)!r} is unreadable: {exc}") from None
    if meta.get("format") != "chronompi-store":
        raise StoreError(f"{str(path)!r} is not a chronompi store ({MARKER} says {meta!r})")
    if int(meta.get("schema", 0)) > SCHEMA_VERSION:
        raise StoreError(
            f"store {str(path)!r} has schema {meta['schema']}, newer than this chronompi "
            f"({SCHEMA_VERSION}); upgrade chronompi"
        )
    return path


def open_segment(path: str | os.PathLike[str]) -> Any:
    """Open a segment read-only: a ``.part`` (open, or left by a crash) in SWMR mode, a closed one plainly.

    SWMR read mode is what makes an open or killed writer's file readable; raises OSError
    (or ValueError) when the file is not a readable HDF5 file.
    """
    import h5py

    if str(path).endswith(".part"):
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
        _few_read_attempts(fapl.id)
        flags = h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ
        return h5py.File(h5py.h5f.open(os.fsencode(os.fspath(path)), flags, fapl=fapl))
    return h5py.File(path, "r")


SWMR_READ_ATTEMPTS = 8  # HDF5's default for SWMR readers is 100, with a backoff that grows to seconds


def _few_read_attempts(fapl_id: int) -> None:
    """Make a SWMR reader give up on a metadata checksum after a few tries, not 100.

    A SWMR reader retries metadata that fails its checksum (it may be mid-write) with a growing
    sleep; on a *damaged* file that is minutes per object, so a reader of a flipped ``.part``
    seemed to hang. A few tries (about a millisecond) are plenty for a live writer's torn reads.
    h5py has no binding for ``H5Pset_metadata_read_attempts``: it is called in the HDF5 library
    h5py has loaded (found in this process's mappings); where it cannot be, the default stays.
    """
    global _set_attempts
    if _set_attempts is None:
        _set_attempts = _find_set_attempts() or (lambda fapl, n: None)
    _set_attempts(fapl_id, SWMR_READ_ATTEMPTS)


_set_attempts: Any = None


def _find_set_attempts() -> Any:
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            libs = {line.split()[-1] for line in fh if "libhdf5" in line and "_hl" not in line}
    except OSError:
        return None
    for lib in sorted(libs):
        try:
            fn = ctypes.CDLL(lib).H5Pset_metadata_read_attempts
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
        return lambda fapl, n: fn(fapl, n)
    return None


def write_run(
    root: str | os.PathLike[str], record: dict[str, object], space_margin: int | None = None, fsync: bool = False
) -> Path:
    """Write (or replace) a run's record ``runs/r<run>.json`` atomically (see :func:`write_atomic`)."""
    path = Path(root) / RUNS / f"r{record['run']}.json"
    write_atomic(path, (json.dumps(record, indent=1, default=str) + "\n").encode(), space_margin, fsync)
    return path


def free_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``directory``."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def space_margin(size: int) -> int:
    """Free space to keep beyond a write of ``size`` bytes (file system metadata, rounding): 1 MiB + 1 %."""
    return (1 << 20) + size // 100


def write_atomic(path: Path, data: bytes | memoryview, space_margin: int | None = None, fsync: bool = True) -> None:
    """Write ``data`` as ``path`` atomically: ``NAME.tmp-<pid>`` beside it, then a rename.

    With ``space_margin`` the free space is checked first: fewer than ``len(data) +
    space_margin`` free bytes raise OSError(ENOSPC) naming the path and both numbers,
    before anything is written. Any failure removes the temporary file, so a failed
    write leaves the directory as it was.
    """
    need = len(data)
    if space_margin is not None:
        free = free_bytes(path.parent)
        if free < need + space_margin:
            raise OSError(
                errno.ENOSPC,
                f"no space to write {path}: {free:,} bytes free, {need + space_margin:,} needed "
                f"({need:,} + {space_margin:,} margin); free some space",
                str(path),
            )
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if need and hasattr(os, "posix_fallocate"):
                try:  # reserve every block first: a full disk fails here, before any byte is written
                    os.posix_fallocate(fd, 0, need)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
            view = memoryview(data).cast("B")
            done = 0
            while done < need:
                done += os.write(fd, view[done : done + (8 << 20)])
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


def discard(path: Path) -> None:
    """Remove a temporary file after a failed write; a file already gone is fine."""
    try:
        path.unlink()
    except OSError:
        pass


_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writing the range's dirty pages, do not wait for them
_sync_file_range: Any = None  # libc's, found on first use; False where there is none


def start_writeback(fd: int) -> bool:
    """Ask the kernel to start writing ``fd``'s dirty pages to its disk now, without waiting for them
    (Linux ``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)``, as databases spread their writes): a
    later ``fsync`` then finds little left to write. Only a hint: False where the call does not exist or
    fails (the fsync that follows reports any real error)."""
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes

            f = ctypes.CDLL(None, use_errno=True).sync_file_range
            f.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            f.restype = ctypes.c_int
            _sync_file_range = f
        except (OSError, AttributeError):
            _sync_file_range = False
    return bool(_sync_file_range) and _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) == 0


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    dirfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def part_files(root: str | os.PathLike[str]) -> list[Path]:
    """Open segments (``*.h5.part``) of a store: in ``STORE/segments`` and in the staging
    directories of runs not ``complete`` that are visible from here.

    Each file once: a staging directory recorded by the job as a different spelling of
    the same directory (relative or absolute, through a symlink, ``staging = none``)
    is recognised by device and inode, not by its name.
    """
    seg = Path(root) / SEGMENTS
    candidates = sorted(seg.glob("*.h5.part")) if seg.is_dir() else []
    for run in read_runs(root):
        if run.get("status") == "complete":
            continue
        for g in run.get("graphers", []) or []:  # type: ignore[attr-defined]
            stage = Path(g.get("staging", "")) if isinstance(g, dict) else Path("")
            if str(stage) not in ("", ".") and stage.is_dir():
                candidates.extend(sorted(stage.glob("*.h5.part")))
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for p in candidates:
        try:
            st = p.stat()
        except OSError:  # gone meanwhile (its writer closed it): nothing to read
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append(p)
    return out


def fsck_hint(segment: str | os.PathLike[str], what: str = "repair it") -> str:
    """``run chronompi fsck STORE to ...`` for a segment (STORE from its path when it is in one)."""
    p = Path(segment)
    store = shlex.quote(str(p.parent.parent)) if p.parent.name == SEGMENTS else "STORE"
    return f"run chronompi fsck {store} to {what}"


def read_runs(root: str | os.PathLike[str]) -> list[dict[str, object]]:
    """Every run record of a store, oldest first; unreadable records are skipped."""
    out = []
    for p in sorted((Path(root) / RUNS).glob("r*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    out.sort(key=lambda r: int(r.get("start") or 0))
    return out
