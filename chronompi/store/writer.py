"""A grapher's segment writer: appends merged window runs to its own HDF5 file.

Each grapher writes only its own files, so graphers never wait on each
other and no parallel HDF5 is needed. A segment is written as
``NAME.h5.part`` and renamed to ``NAME.h5`` once closed (atomic on POSIX).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

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


class SegmentWriter:
    def __init__(self, root: str | os.PathLike[str], run_id: int, grapher: int, cfg: StorageConfig) -> None:
        self.root = Path(root)
        self.run_id = run_id
        self.grapher = grapher
        self.cfg = cfg
        self.n_segment = 0
        self.file: h5py.File | None = None
        self.path: Path | None = None
        self.bytes_in_segment = 0
        self.closed_paths: list[Path] = []
        self.events_written = 0
        self.bytes_written = 0
        self.windows_written = 0
        self.write_seconds = 0.0

    # -- segments ---------------------------------------------------------
    def _open(self) -> h5py.File:
        name = f"r{self.run_id:016x}-g{self.grapher:04d}-{self.n_segment:04d}.h5"
        self.path = self.root / SEGMENTS / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(str(self.path) + ".part", "w", libver="latest")
        f.attrs["schema"] = SCHEMA_VERSION
        f.attrs["run"] = np.uint64(self.run_id)
        f.attrs["grapher"] = self.grapher
        f.attrs["segment"] = self.n_segment
        f.attrs["created"] = time.time_ns()
        self.file = f
        self.bytes_in_segment = 0
        log.info("grapher %d opened segment %s", self.grapher, self.path.name)
        return f

    def _close_segment(self) -> None:
        if self.file is None or self.path is None:
            return
        self.file.close()
        self.file = None
        os.replace(str(self.path) + ".part", self.path)  # atomic: the segment is whole or absent
        self.closed_paths.append(self.path)
        log.info("grapher %d closed segment %s", self.grapher, self.path.name)
        self.n_segment += 1

    def close(self) -> None:
        """Close the open segment; safe to call twice."""
        self._close_segment()

    # -- appends ----------------------------------------------------------
    def _datasets(self, f: h5py.File, chronicle: str, story: str) -> tuple[h5py.Dataset, ...]:
        key = f"{chronicle}/{story}"
        if key in f:
            g = f[key]
            return g["events"], g["payload"], g["windows"]
        g = f.require_group(chronicle).create_group(story)
        ev = g.create_dataset("events", shape=(0,), maxshape=(None,), dtype=EVENT, chunks=(self.cfg.events_chunk_rows,))
        pl = g.create_dataset(
            "payload", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(self.cfg.payload_chunk_bytes,)
        )
        wi = g.create_dataset("windows", shape=(0,), maxshape=(None,), dtype=WINDOW, chunks=(256,))
        return ev, pl, wi

    def append(self, chronicle: str, story: str, runs: Sequence[Run]) -> None:
        """Append the runs of one story: data first, flushed, then their index rows."""
        if not runs:
            return
        t0 = time.perf_counter()
        f = self.file if self.file is not None else self._open()
        ev_ds, pl_ds, wi_ds = self._datasets(f, chronicle, story)
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
        f.flush()  # the data is on its way before the index that points at it
        index["committed"] = time.time_ns()
        w0 = wi_ds.shape[0]
        wi_ds.resize((w0 + len(runs),))
        wi_ds[w0:] = index
        f.flush()
        self.events_written += n_rows
        self.bytes_written += n_bytes
        self.windows_written += len(runs)
        self.bytes_in_segment += n_bytes + n_rows * EVENT.itemsize
        self.write_seconds += time.perf_counter() - t0
        if self.bytes_in_segment >= self.cfg.segment_bytes:
            self._close_segment()
