"""The base class of the ingest peers: what an HPC user would record events with instead of chronompi.

A peer writes one client rank's events (``perf/events.py``) in batches, from open to every file closed;
the harness (``perf/harness.py``) puts a barrier of all ranks before and after, and a peer's time runs from
the first rank out of the first barrier to the last rank's files closed (``benchlib.measured``), as
chronompi's runs from its first client's first log call to its last client's session returned. Peers do not order
events across ranks (chronompi does); users compare the number they see all the same.

How the events reach a peer (``shape``, see :func:`feed`) mirrors chronompi's calls: ``arrays`` (the
application holds rows of an array, like ``log_many``), ``events`` (one event at a time, like ``log``) and
``made`` (one at a time, each made in the loop, like ``log_made`` / ``log_many_made``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from events import Events, made

SHAPES = ("arrays", "events", "made")
# joins into a writable buffer: adios2's Put does not take a read-only array as an array (it picks the
# overload for a sequence of ints, and crashes), so bytes.join would need a second copy
JOIN = bytearray().join


class Peer(ABC):
    """One way of writing events; subclasses set ``name`` (config key) and ``label`` (table row)."""

    name: str = ""
    label: str = ""

    def unavailable(self) -> str | None:
        """Why this peer cannot run here (what to install), or None when it can."""
        return None

    @abstractmethod
    def write(self, comm: Any, events: Events, root: Path, batch: int, shape: str = "arrays") -> None:
        """Write ``events`` of this rank under ``root`` in batches of ``batch`` events; return once closed.

        ``shape``: how the application hands the events over (:func:`feed`).

        ``comm`` holds exactly the writing (client) ranks; per-rank peers use it only for their rank.
        """

    @abstractmethod
    def stored(self, root: Path) -> int:
        """Events in the files under ``root`` (read back after timing, one process)."""

    def versions(self) -> dict[str, str]:
        """Library versions for the result record."""
        return {}


def feed(events: Events, batch: int, shape: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(payload bytes back to back as uint8, int64 timestamps) of every batch of ``batch`` events.

    ``arrays``: the events are rows of an array already; a batch is a view of ``batch`` rows, stamped
    with one clock read plus the event's index. ``events``: one event at a time, as an application that
    produces them one by one: every event's ``bytes`` and a ``time_ns()`` are appended to two lists,
    joined into arrays when ``batch`` events are pending (call ``events.as_bytes()`` before timing).
    ``made``: the same, each event made in the loop as an application makes it (``events.made``).
    """
    n, batch = events.n, max(1, batch)
    if shape == "arrays":
        for a in range(0, n, batch):
            b = min(n, a + batch)
            t = time.time_ns()
            yield events.rows[a:b].reshape(-1), np.arange(t, t + (b - a), dtype=np.int64)
    elif shape in ("events", "made"):
        now = time.time_ns
        pending: list[bytes] = []
        times: list[int] = []
        put, stamp = pending.append, times.append
        rank, w = events.rank, events.payload
        for p in events.as_bytes() if shape == "events" else (made(rank, i, w) for i in range(n)):
            put(p)
            stamp(now())
            if len(pending) == batch:
                yield np.frombuffer(JOIN(pending), np.uint8), np.array(times, np.int64)
                pending, times = [], []
                put, stamp = pending.append, times.append
        if pending:
            yield np.frombuffer(JOIN(pending), np.uint8), np.array(times, np.int64)
    else:
        raise ValueError(f"unknown peer input shape {shape!r}; known: {', '.join(SHAPES)}")
