"""The events every system of the ingest benchmark records: distinct payloads, made before any timing.

A client rank's events are the rows of one ``(n, payload)`` uint8 array filled from a RNG seeded by the
rank and the payload size, with the event's index (little-endian uint64) and the rank (uint32) stamped
into its first bytes, so no two events of a job have the same bytes (for payloads of at least 12 B;
shorter payloads carry as much of the stamp as fits). Every system gets the same array: chronompi's
``log_many`` and the peers take row slices (views), chronompi's ``log`` takes one ``bytes`` object per
event (made once, on first use, like an application that already holds its messages). :func:`made` is
the event as an application makes it inside its loop (the ``made`` rows of the ingest: ``log_made``,
``log_many_made`` and the peers' ``made`` shape), the same bytes as ``perf/user_ingest.py`` makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Events:
    """``n`` events of ``payload`` bytes each for one client rank."""

    rank: int
    payload: int
    rows: np.ndarray  # (n, payload) uint8, C-contiguous
    _bytes: list[bytes] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes)

    def as_bytes(self) -> list[bytes]:
        """One ``bytes`` object per event (made once and kept: call it before timing)."""
        if self._bytes is None:
            w = self.payload
            buf = self.rows.tobytes()
            self._bytes = [buf[i * w : (i + 1) * w] for i in range(self.n)] if w else [b""] * self.n
        return self._bytes


def make_events(rank: int, payload: int, n: int, seed: int = 11) -> Events:
    """``n`` distinct events of ``payload`` bytes for client ``rank`` (deterministic for a given seed)."""
    rng = np.random.default_rng([seed, rank, payload])
    rows = np.frombuffer(rng.bytes(n * payload), np.uint8).reshape(n, payload).copy()
    stamp = np.empty((n, 12), np.uint8)
    stamp[:, :8] = np.arange(n, dtype="<u8").view(np.uint8).reshape(n, 8)
    stamp[:, 8:] = np.frombuffer(np.uint32(rank).astype("<u4").tobytes(), np.uint8)
    k = min(12, payload)
    rows[:, :k] = stamp[:, :k]
    return Events(rank, payload, rows)


def made(rank: int, i: int, size: int) -> bytes:
    """Event ``i`` of ``rank`` made as an application makes a message in its loop: a ``bytes`` object, index
    and rank formatted first, padded to ``size`` bytes (what ``perf/user_ingest.py`` makes)."""
    return (b"%010d %05d " % (i, rank)).ljust(size, b"~")[:size]
