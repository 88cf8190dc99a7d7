"""Checksums of a segment's sorted runs, and the rows that cannot be data (pure numpy + zlib, no HDF5).

Every windows-index row of a schema-2 segment carries two 64-bit XXH3 hashes (``xxhash.xxh3_64``,
seed 0; xxHash's XXH3_64bits in C): chosen by measurement over zlib's CRC-32 and HDF5's Fletcher32
filter (``perf/bench_checksum.py``; at ~10 GB/s it is the one within 10 % of a full replay):

- ``checksum``: over the run's event rows as stored (``n_rows`` x 36 bytes, offsets absolute), then
  its payload bytes ``payload[heap0 : heap0 + heap_bytes]``, as one byte stream;
- ``row_checksum``: over the index row itself, every byte before ``row_checksum`` (so a flipped
  ``first_row``, ``t_min`` or ``checksum`` is told apart from damaged data).

A reader checks both for every run it uses; a run that fails is never served. Besides the sums,
:func:`implausible` finds rows that cannot be data whatever the sums say (schema-1 segments have
none): a time outside the run's span or not positive, payloads outside the run's heap span, clients
the run record does not know, seq numbers past a client's count for the story.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from ..protocol import client_id

__all__ = ["has_sums", "data_sum", "row_sum", "run_problem", "implausible", "RunClients", "run_clients"]

_ROW_SUM = "row_checksum"


def has_sums(index_dtype: np.dtype) -> bool:
    """True for a schema-2 windows index (with checksums), False for a schema-1 one."""
    names = index_dtype.names or ()
    return "checksum" in names and _ROW_SUM in names and "heap0" in names


def run_hasher(events: np.ndarray) -> Any:
    """The XXH3-64 state of a run's data checksum after its event rows (as stored); its payload bytes follow
    (``update``), then ``intdigest()`` is the ``checksum`` (:func:`data_sum` in one call)."""
    h = xxhash.xxh3_64()
    if len(events):
        h.update(np.ascontiguousarray(events).view(np.uint8).data)
    return h


def data_sum(events: np.ndarray, heap_parts: list[np.ndarray] | tuple[np.ndarray, ...]) -> int:
    """XXH3-64 of a run's event rows (as stored) followed by its payload bytes (one or more parts)."""
    h = run_hasher(events)
    for part in heap_parts:
        if len(part):
            h.update(np.ascontiguousarray(part).view(np.uint8).data)
    return h.intdigest()


def row_sum(row: np.ndarray) -> int:
    """XXH3-64 of one windows-index row (a 1-element WINDOW array): every byte before ``row_checksum``."""
    raw = np.ascontiguousarray(row).reshape(1).view(np.uint8)
    end = row.dtype.fields[_ROW_SUM][1]  # type: ignore[index]
    return xxhash.xxh3_64_intdigest(raw[:end].data)


def run_problem(row: np.ndarray, events: np.ndarray, heap: np.ndarray) -> str | None:
    """Why the run of index ``row`` (a 1-element array) is not what was written (None: it checks out).

    ``events`` are its rows, ``heap`` its payload bytes ``[heap0, heap0 + heap_bytes)``."""
    if row_sum(row) != int(row[_ROW_SUM][0]):
        return "index row checksum mismatch"
    if data_sum(events, (heap,)) != int(row["checksum"][0]):
        return "data checksum mismatch"
    return None


@dataclass(frozen=True)
class RunClients:
    """What a run record says about the clients of one story: who may write (``known``, sorted), and
    for those it counted, how many events each logged to the story (``counted``, ``counts``, sorted)."""

    known: np.ndarray | None  # uint64, sorted; None: the record does not say
    counted: np.ndarray  # uint64, sorted
    counts: np.ndarray  # uint64, the story's event count of counted[i]


_NOTHING_KNOWN = RunClients(None, np.empty(0, np.uint64), np.empty(0, np.uint64))


def run_clients(record: Mapping[str, object] | None, key: str) -> RunClients:
    """The clients a run record knows, and their event counts for story ``key`` ("chronicle/story").

    Only a record that lists its client ranks (``roles.client``, written when a run ends) says who
    may write; a running or crashed run's record does not, and nothing is checked against it."""
    if not record:
        return _NOTHING_KNOWN
    roles = record.get("roles")
    clients = roles.get("client") if isinstance(roles, dict) else None
    if not isinstance(clients, list) or not clients:
        return _NOTHING_KNOWN
    try:
        run = int(str(record["run"]), 16)
        ranks = {int(c["rank"]) for c in clients}
        ranks.update(int(f["rank"]) for f in record.get("failures") or [] if isinstance(f, dict))  # type: ignore[attr-defined]
    except (KeyError, TypeError, ValueError):
        return _NOTHING_KNOWN
    known = np.array(sorted(client_id(run, r) for r in ranks), np.uint64)
    pairs = []
    for c in clients:
        stories = c.get("stories")
        if isinstance(stories, dict) and key in stories:
            pairs.append((client_id(run, int(c["rank"])), int(stories[key])))
    pairs.sort()
    return RunClients(known, np.array([p[0] for p in pairs], np.uint64), np.array([p[1] for p in pairs], np.uint64))


def implausible(
    events: np.ndarray,
    lo: np.ndarray | int,
    hi: np.ndarray | int,
    t_min: np.ndarray | int,
    t_max: np.ndarray | int,
    who: RunClients,
    starts: np.ndarray | None = None,
) -> str | None:
    """Why some of ``events`` cannot be data (None: all can), vectorised.

    ``lo``/``hi``: the payload byte span the events may use; ``t_min``/``t_max``: their run's time
    span from the index: scalars for one run, or with ``starts`` (the first row of each non-empty
    run, increasing) one value per run."""
    if not len(events):
        return None
    t = events["time"]
    if starts is not None:  # per run: its smallest and largest time, one pass each
        small, large = np.minimum.reduceat(t, starts), np.maximum.reduceat(t, starts)
    else:
        small, large = np.asarray(t.min()), np.asarray(t.max())
    if np.any(small <= 0):
        return "events with time <= 0"
    if np.any(small < t_min) or np.any(large > t_max):
        return "events outside their run's time span"
    off = events["offset"]
    end = off + events["length"].astype(np.uint64)
    if np.any(off < lo) or np.any(end > hi) or np.any(end < off):
        return "payload offsets or lengths outside the heap"
    if who.known is not None:
        c = events["client"]
        pos = np.minimum(np.searchsorted(who.known, c), len(who.known) - 1)
        bad = who.known[pos] != c
        if np.any(bad):
            return f"{int(bad.sum())} events of clients not in the run record (e.g. {int(c[bad][0]):#x})"
        if len(who.counted):
            pos = np.minimum(np.searchsorted(who.counted, c), len(who.counted) - 1)
            mine = who.counted[pos] == c
            over = mine & (events["seq"] >= who.counts[pos])
            if np.any(over):
                return f"{int(over.sum())} events with seq beyond their client's count for the story"
    return None
