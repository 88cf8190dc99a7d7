"""Peer: plain h5py, one file per client rank, chunked resizable datasets appended a batch at a time.

Layout of ``rank<r>.h5``: ``time`` (int64), ``offset`` (uint64, into ``payload``) and ``payload`` (the
uint8 bytes of every event back to back), all extendible, chunked by one batch (payload chunks capped
at 4 MiB). Timestamps as :func:`peers.base.feed` takes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from events import Events

from .base import Peer, feed

CHUNK_CAP = 4 << 20


class H5pyFiles(Peer):
    name = "h5py"
    label = "h5py, one file per rank"

    def write(self, comm: Any, events: Events, root: Path, batch: int, shape: str = "arrays") -> None:
        import h5py

        w = events.payload
        path = root / f"rank{comm.Get_rank():05d}.h5"
        with h5py.File(path, "w") as f:
            t_ds = f.create_dataset("time", (0,), maxshape=(None,), dtype=np.int64, chunks=(batch,))
            o_ds = f.create_dataset("offset", (0,), maxshape=(None,), dtype=np.uint64, chunks=(batch,))
            chunk = max(1, min(batch * w, CHUNK_CAP))
            p_ds = f.create_dataset("payload", (0,), maxshape=(None,), dtype=np.uint8, chunks=(chunk,))
            a = 0
            for heap, ts in feed(events, batch, shape):
                b = a + len(ts)
                t_ds.resize((b,))
                t_ds[a:b] = ts
                o_ds.resize((b,))
                o_ds[a:b] = np.arange(a, b, dtype=np.uint64) * np.uint64(w)
                if w:
                    p_ds.resize((b * w,))
                    p_ds[a * w : b * w] = heap
                a = b

    def stored(self, root: Path) -> int:
        import h5py

        total = 0
        for p in sorted(root.glob("rank*.h5")):
            with h5py.File(p, "r") as f:
                total += len(f["time"])
        return total

    def versions(self) -> dict[str, str]:
        import h5py

        return {"h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version}
