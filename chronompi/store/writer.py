"""A grapher's segment writer: appends merged window runs to its own HDF5 file.

Each grapher writes only its own files, so graphers never wait on each
other and no parallel HDF5 is needed.

Tiers: the open segment lives in the *staging* directory (warm tier,
node-local by default) as ``NAME.h5.part``; when it closes (size, age, or a
new story, see below) it is moved into the store (cold tier) as ``NAME.h5``:
a rename on the same file system, else copy, fsync, rename, fsync of the
directory, then the staged file is removed. A store therefore holds only
whole segments, and a segment is in the store or not, never half.

Crash consistency: segments are written in HDF5 SWMR mode. A SWMR writer
keeps the file readable by a SWMR reader at every moment, also after a
``kill -9``. For every append, data rows and payload bytes are flushed before
the index rows that cover them, so what the windows index lists is complete.
SWMR allows no new datasets once it is on: a story new to the open segment
closes it and opens the next one with datasets for every story so far.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .._faults import fault_point
from ..codec import EVENT
from ..config import StorageConfig
from .format import SCHEMA_VERSION, SEGMENTS, WINDOW

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One sorted run of one window, ready to write: payloads laid out in event order."""

    window: int
    events: np.ndarray  # EVENT, offsets relative to ``heap``
    heap: np.ndarray  # uint8
    late: bool = False


def staging_dir(cfg: StorageConfig, run_id: int) -> Path:
    """Where a grapher of run ``run_id`` writes its open segments."""
    if cfg.staging in ("", "none"):
        return Path(cfg.root) / SEGMENTS
    base = cfg.staging
    if base == "auto":
        base = os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(base) / f"chronompi-staging-r{run_id:016x}"


def move_into_store(src: Path, dst: Path) -> None:
    """Move a closed segment into the store atomically: rename, or copy + fsync + rename."""
    try:
        os.replace(src, dst)
    except OSError:  # another file system: copy beside the target, make it durable, rename
        tmp = dst.with_name(dst.name + f".tmp-{os.getpid()}")
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 8 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        fault_point("move")  # copied, not yet renamed: the store must not show it
        os.replace(tmp, dst)
        src.unlink()
    dirfd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class SegmentWriter:
    def __init__(self, root: str | os.PathLike[str], run_id: int, grapher: int, cfg: StorageConfig) -> None:
        self.root = Path(root)
        self.store_dir = self.root / SEGMENTS
        self.stage = staging_dir(cfg, run_id)
        self.run_id = run_id
        self.grapher = grapher
        self.cfg = cfg
        self.n_segment = 0
        self.file: h5py.File | None = None
        self.part: Path | None = None
        self.name = ""
        self.opened_at = 0.0
        self.bytes_in_segment = 0
        self.stories: list[tuple[str, str]] = []  # every story this grapher has written
        self.closed_paths: list[Path] = []
        self.events_written = 0
        self.bytes_written = 0
        self.windows_written = 0
        self.write_seconds = 0.0
        self.move_seconds = 0.0
        self.dirty = False  # written since the last fsync
        self.fsyncs = 0
        self.fsync_seconds = 0.0

    # -- segments ---------------------------------------------------------
    def _open(self) -> h5py.File:
        if self.n_segment:
            fault_point("roll")  # the previous segment is in the store, the next not yet open
        self.name = f"r{self.run_id:016x}-g{self.grapher:04d}-{self.n_segment:04d}.h5"
        self.stage.mkdir(parents=True, exist_ok=True)
        self.part = self.stage / (self.name + ".part")
        f = h5py.File(self.part, "w", libver="latest")
        f.attrs["schema"] = SCHEMA_VERSION
        f.attrs["run"] = np.uint64(self.run_id)
        f.attrs["grapher"] = self.grapher
        f.attrs["segment"] = self.n_segment
        f.attrs["created"] = time.time_ns()
        for chronicle, story in self.stories:  # SWMR: every dataset exists before it starts
            self._create(f, chronicle, story)
        f.swmr_mode = True
        self.file = f
        self.opened_at = time.monotonic()
        self.bytes_in_segment = 0
        log.info("grapher %d opened segment %s", self.grapher, self.part)
        return f

    def _create(self, f: h5py.File, chronicle: str, story: str) -> None:
        g = f.require_group(chronicle).create_group(story)
        g.create_dataset("events", shape=(0,), maxshape=(None,), dtype=EVENT, chunks=(self.cfg.events_chunk_rows,))
        g.create_dataset(
            "payload", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(self.cfg.payload_chunk_bytes,)
        )
        g.create_dataset("windows", shape=(0,), maxshape=(None,), dtype=WINDOW, chunks=(256,))

    def fsync(self) -> None:
        """Make what the open segment holds durable on its disk (``storage.fsync`` decides when)."""
        if self.file is None or not self.dirty or self.cfg.fsync == "never":
            return
        t0 = time.perf_counter()
        os.fsync(self.file.id.get_vfd_handle())
        self.dirty = False
        self.fsyncs += 1
        self.fsync_seconds += time.perf_counter() - t0

    def _close_segment(self) -> None:
        if self.file is None or self.part is None:
            return
        self.fsync()  # a segment enters the store durable (the copy path fsyncs its copy too)
        self.file.close()
        self.file = None
        t0 = time.perf_counter()
        dst = self.store_dir / self.name
        move_into_store(self.part, dst)
        self.move_seconds += time.perf_counter() - t0
        self.closed_paths.append(dst)
        log.info("grapher %d closed segment %s", self.grapher, dst.name)
        self.n_segment += 1
        self.part = None

    def close(self) -> None:
        """Close the open segment and move it into the store; safe to call twice."""
        self._close_segment()
        if self.stage != self.store_dir:
            try:
                self.stage.rmdir()
            except OSError:
                pass

    def roll_if_old(self) -> bool:
        """Close the open segment if it is older than ``segment_age_s`` (called when idle too)."""
        if self.file is not None and time.monotonic() - self.opened_at >= self.cfg.segment_age_s:
            self._close_segment()
            return True
        return False

    def open_paths(self) -> list[Path]:
        """Files holding what this writer committed: closed segments and the open one."""
        return self.closed_paths + ([self.part] if self.part is not None else [])

    # -- appends ----------------------------------------------------------
    def append(self, chronicle: str, story: str, runs: Sequence[Run]) -> None:
        """Append the runs of one story (see :meth:`append_all`)."""
        self.append_all([(chronicle, story, runs)])

    def append_all(self, items: Sequence[tuple[str, str, Sequence[Run]]]) -> None:
        """Append runs of several stories: all data, one flush, then all their index rows, one flush.

        Two file flushes per commit whatever the number of stories (SWMR flushes are
        the grapher's main cost on small windows).
        """
        items = [(c, s, runs) for c, s, runs in items if runs]
        if not items:
            return
        t0 = time.perf_counter()
        new = [(c, s) for c, s, _ in items if (c, s) not in self.stories]
        if new:
            self.stories.extend(dict.fromkeys(new))
            self._close_segment()  # SWMR cannot add datasets: the next segment has them all
        f = self.file if self.file is not None else self._open()
        pending = []
        for chronicle, story, runs in items:
            g = f[chronicle][story]
            ev_ds, pl_ds = g["events"], g["payload"]
            n_rows = sum(len(r.events) for r in runs)
            n_bytes = sum(r.heap.nbytes for r in runs)
            row0 = ev_ds.shape[0]
            byte0 = pl_ds.shape[0]
            events = np.empty(n_rows, EVENT)
            index = np.empty(len(runs), WINDOW)
            row, off = 0, byte0
            for i, r in enumerate(runs):
                n = len(r.events)
                part = events[row : row + n]
                part[...] = r.events
                part["offset"] += off
                index[i] = (r.window, row0 + row, n, r.events["time"][0], r.events["time"][-1], r.late, 0)
                row += n
                off += r.heap.nbytes
            ev_ds.resize((row0 + n_rows,))
            ev_ds[row0:] = events
            if n_bytes:
                pl_ds.resize((byte0 + n_bytes,))
                pl_ds[byte0:] = np.concatenate([r.heap for r in runs]) if len(runs) > 1 else runs[0].heap
            pending.append((g["windows"], index))
            self.events_written += n_rows
            self.bytes_written += n_bytes
            self.windows_written += len(runs)
            self.bytes_in_segment += n_bytes + n_rows * EVENT.itemsize
        f.flush()  # the data is on its way before the index that points at it
        if self.cfg.fsync == "always":  # ... and on the disk, so a power loss cannot keep the index alone
            self.dirty = True
            self.fsync()
        fault_point("commit")  # rows written, index not yet: a reader must not see these rows
        now = time.time_ns()
        for wi_ds, index in pending:
            index["committed"] = now
            w0 = wi_ds.shape[0]
            wi_ds.resize((w0 + len(index),))
            wi_ds[w0:] = index
        f.flush()
        self.dirty = True
        if self.cfg.fsync == "always":
            self.fsync()
        self.write_seconds += time.perf_counter() - t0
        if self.bytes_in_segment >= self.cfg.segment_bytes:
            self._close_segment()
        else:
            self.roll_if_old()
