"""Reading a store back: chronicles, stories and time-range replays in total order."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..codec import EVENT
from ..errors import StoreError, UnknownChronicle, UnknownStory
from ..merge import merge_runs
from ..names import check_name
from .format import SEGMENTS, check_store

log = logging.getLogger(__name__)

REPLAY = np.dtype([("time", "<i8"), ("client", "<u8"), ("seq", "<u8"), ("payload", object)])


def _time_ns(t: Any) -> int | None:
    if t is None:
        return None
    if hasattr(t, "timestamp"):  # datetime
        return int(round(t.timestamp() * 1e9))
    return int(t)


def to_replay(events: np.ndarray, heap: np.ndarray) -> np.ndarray:
    """Events plus heap -> REPLAY rows with payloads as ``bytes``."""
    out = np.empty(len(events), REPLAY)
    out["time"], out["client"], out["seq"] = events["time"], events["client"], events["seq"]
    raw = heap.tobytes()
    offs = events["offset"].tolist()
    lens = events["length"].tolist()
    out["payload"] = [raw[o : o + n] for o, n in zip(offs, lens)]
    return out


class Store:
    """A store directory opened for reading. Behaves like a read-only mapping of chronicles."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = check_store(path)
        self._files: dict[Path, h5py.File] = {}

    # -- lifecycle --------------------------------------------------------
    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files ------------------------------------------------------------
    def segments(self) -> list[Path]:
        seg = self.path / SEGMENTS
        if not seg.is_dir():
            return []
        parts = sorted(seg.glob("*.h5.part"))
        if parts:
            warnings.warn(
                f"{len(parts)} segment(s) still open or left by a crash are not read: "
                + ", ".join(p.name for p in parts[:3]),
                stacklevel=3,
            )
        return sorted(seg.glob("*.h5"))

    def _open(self, p: Path) -> h5py.File | None:
        f = self._files.get(p)
        if f is None:
            try:
                f = h5py.File(p, "r")
            except OSError as exc:
                warnings.warn(f"skipping unreadable segment {p.name}: {exc}", stacklevel=3)
                return None
            self._files[p] = f
        return f

    def _files_iter(self) -> Iterator[h5py.File]:
        for p in self.segments():
            f = self._open(p)
            if f is not None:
                yield f

    # -- catalogue --------------------------------------------------------
    def chronicles(self) -> list[str]:
        names: set[str] = set()
        for f in self._files_iter():
            names.update(f.keys())
        return sorted(names)

    def stories(self, chronicle: str) -> list[str]:
        check_name(chronicle, "chronicle")
        names: set[str] = set()
        found = False
        for f in self._files_iter():
            if chronicle in f:
                found = True
                names.update(f[chronicle].keys())
        if not found:
            raise UnknownChronicle(chronicle)
        return sorted(names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.chronicles())

    def __len__(self) -> int:
        return len(self.chronicles())

    def __contains__(self, chronicle: object) -> bool:
        return chronicle in self.chronicles()

    # -- replay -----------------------------------------------------------
    def replay_raw(
        self, chronicle: str, story: str, start: Any = None, end: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Events of ``[start, end)`` in total order as (EVENT rows, payload heap)."""
        check_name(chronicle, "chronicle")
        check_name(story, "story")
        t0, t1 = _time_ns(start), _time_ns(end)
        if t0 is not None and t1 is not None and t0 > t1:
            raise ValueError(f"start {t0} is after end {t1}; give start <= end")
        key = f"{chronicle}/{story}"
        runs: list[tuple[np.ndarray, np.ndarray]] = []
        seen_chronicle = False
        seen_story = False
        for f in self._files_iter():
            if chronicle not in f:
                continue
            seen_chronicle = True
            if key not in f:
                continue
            seen_story = True
            g = f[key]
            index = g["windows"][...]
            sel = np.ones(len(index), bool)
            if t0 is not None:
                sel &= index["t_max"] >= t0
            if t1 is not None:
                sel &= index["t_min"] < t1
            for row in index[sel]:
                a, n = int(row["first_row"]), int(row["n_rows"])
                ev = g["events"][a : a + n]
                if t0 is not None or t1 is not None:
                    keep = np.ones(n, bool)
                    if t0 is not None:
                        keep &= ev["time"] >= t0
                    if t1 is not None:
                        keep &= ev["time"] < t1
                    ev = ev[keep]
                if not len(ev):
                    continue
                b0 = int(ev["offset"][0])
                b1 = int(ev["offset"][-1] + ev["length"][-1])
                heap = g["payload"][b0:b1] if b1 > b0 else np.empty(0, np.uint8)
                ev["offset"] -= b0
                runs.append((ev, heap))
        if not seen_chronicle:
            raise UnknownChronicle(chronicle)
        if not seen_story:
            raise UnknownStory(chronicle, story)
        if not runs:
            return np.empty(0, EVENT), np.empty(0, np.uint8)
        return merge_runs(runs)

    def replay(self, chronicle: str, story: str, start: Any = None, end: Any = None) -> np.ndarray:
        """Events of ``[start, end)`` (ns since the epoch or datetimes) in total order.

        Returns a structured array with fields ``time`` (int64 ns), ``client``
        (uint64), ``seq`` (uint64) and ``payload`` (bytes).
        """
        return to_replay(*self.replay_raw(chronicle, story, start, end))

    def count(self, chronicle: str, story: str) -> int:
        key = f"{chronicle}/{story}"
        return sum(int(f[key]["windows"]["n_rows"].sum()) for f in self._files_iter() if key in f)


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open a store directory for reading (raises StoreError if it is not one)."""
    try:
        return Store(path)
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot open store {str(path)!r}: {exc}") from None
