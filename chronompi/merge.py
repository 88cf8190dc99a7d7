"""Merging sorted runs of events and gathering their payloads (pure numpy).

A run is an EVENT array sorted by ``(time, client, seq)`` whose ``offset``
and ``length`` point into the run's own payload heap. :func:`merge_runs`
returns one sorted run over one heap whose payloads are laid out in event
order, except that a single run already sorted is taken as it is (a replay of a
range inside one segment: its payloads lie as the grapher wrote them).
:func:`order_runs` sorts the events alone and leaves the payloads where they lie
(what a grapher writes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .codec import EVENT, rows
from .windows import window_end, window_start


def total_order(events: np.ndarray) -> np.ndarray:
    """Permutation that sorts ``events`` by (time, client, seq), stable.

    The common case is runs that are already sorted and rarely tie on time:
    a stable sort on time alone (timsort merges the presorted runs, so this is
    a k-way merge in O(n log k)); only when equal times exist is the full
    three-key sort done.
    """
    n = len(events)
    if n < 2:
        return np.arange(n)
    t = events["time"]
    order = np.argsort(t, kind="stable")
    st = t[order]
    if np.any(st[1:] == st[:-1]):
        order = np.lexsort((events["seq"], events["client"], t))
    return order


def ordered_steps(events: np.ndarray) -> np.ndarray:
    """For each pair of neighbours, whether the second strictly follows the first in (time, client, seq)."""
    t, c, s = events["time"], events["client"], events["seq"]
    lt = t[:-1] < t[1:]
    eq_t = t[:-1] == t[1:]
    lt_c = c[:-1] < c[1:]
    eq_c = c[:-1] == c[1:]
    lt_s = s[:-1] < s[1:]
    return np.asarray(lt | (eq_t & (lt_c | (eq_c & lt_s))))


def is_sorted(events: np.ndarray) -> bool:
    """True when ``events`` is in total order (time, client, seq), strictly (no duplicates).

    The times alone first: where they strictly increase (most neighbours) client and seq are not read,
    so a run without ties costs one comparison per event instead of five (15 ms of a 1 M-event replay)."""
    if len(events) < 2:
        return True
    t = events["time"]
    rise = t[:-1] < t[1:]
    if rise.all():
        return True
    rest = np.flatnonzero(~rise)  # neighbours with equal or falling times
    if np.any(t[rest] != t[rest + 1]):
        return False
    c, s = events["client"], events["seq"]
    c0, c1 = c[rest], c[rest + 1]
    return bool(np.all((c0 < c1) | ((c0 == c1) & (s[rest] < s[rest + 1]))))


LOOP_MIN_BYTES = 512  # contiguous pieces at least this long on average are copied slice by slice


def gather(heap: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``heap[offsets[i] : offsets[i] + lengths[i]]`` for every i.

    Three ways, fastest first: equal-size payloads on a row grid are copied as
    rows; otherwise neighbouring payloads that are also neighbours in ``heap``
    are coalesced, and when the pieces are long they are copied slice by slice;
    else a byte index is built (vectorised, but 8 bytes of index per byte).
    """
    lengths = lengths.astype(np.int64, copy=False)
    offsets = offsets.astype(np.int64, copy=False)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.uint8)
    width = int(lengths[0])
    if width and heap.nbytes % width == 0 and np.all(lengths == width) and not np.any(offsets % width):
        return heap.reshape(-1, width)[offsets // width].reshape(-1)
    # pieces: maximal runs of payloads that follow each other in the heap too
    breaks = np.flatnonzero(offsets[1:] != offsets[:-1] + lengths[:-1]) + 1
    starts = np.concatenate(([0], breaks))
    if total >= LOOP_MIN_BYTES * len(starts):
        src0 = offsets[starts]
        size = np.add.reduceat(lengths, starts)
        out = np.empty(total, np.uint8)
        pos = 0
        for a, m in zip(src0.tolist(), size.tolist()):
            out[pos : pos + m] = heap[a : a + m]
            pos += m
        return out
    dest = np.cumsum(lengths) - lengths  # where each payload lands in the output
    # index of every output byte in the input: offset of its event + its position inside
    idx = np.repeat(offsets - dest, lengths) + np.arange(total, dtype=np.int64)
    return heap[idx]


def concat_events(events: Sequence[np.ndarray], heap_sizes: Sequence[int]) -> np.ndarray:
    """Concatenate event arrays whose heaps will be concatenated in the same order: offsets rebased."""
    out = np.concatenate([rows(e) for e in events]).view(EVENT) if events else np.empty(0, EVENT)
    base = pos = 0
    for e, size in zip(events, heap_sizes):
        if base:
            out["offset"][pos : pos + len(e)] += base
        pos += len(e)
        base += size
    return out


def concat_runs(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (events, heap) runs into one, rebasing offsets; order is kept."""
    if len(runs) == 1:
        return runs[0]
    heaps = [h for _, h in runs]
    events = concat_events([e for e, _ in runs], [h.nbytes for h in heaps])
    return events, (np.concatenate(heaps) if heaps else np.empty(0, np.uint8))


def order_runs(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The events of ``runs`` in total order, their payloads left where they are.

    Returns (events, heaps): the offsets index the runs' heaps laid end to end (what
    :class:`chronompi.store.writer.Run` writes part by part). Only the 36-byte event rows
    move; the payload bytes are not gathered into event order."""
    heaps = [h for _, h in runs]
    events = runs[0][0] if len(runs) == 1 else concat_events([e for e, _ in runs], [h.nbytes for h in heaps])
    if not is_sorted(events):
        events = rows(events)[total_order(events)].view(EVENT)
    return events, heaps


def _in_layout(events: np.ndarray, heap: np.ndarray) -> bool:
    """True when the payloads already lie in ``heap`` back to back in event order."""
    if not len(events):
        return heap.nbytes == 0
    ends = np.cumsum(events["length"], dtype=np.uint64)
    return bool(
        events["offset"][0] == 0 and np.array_equal(events["offset"][1:], ends[:-1]) and ends[-1] == heap.nbytes
    )


def merged_as_is(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The one run that needs no merge, else None: a single run already sorted whose heap is mostly its own
    payloads (its offsets index its heap, in whatever order the payloads lie). It only reads the run."""
    if len(runs) == 1 and is_sorted(runs[0][0]):
        events, heap = runs[0]
        if heap.nbytes <= 2 * int(events["length"].sum(dtype=np.int64)) + 4096:
            return runs[0]
    return None


def merge_runs(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Merge runs into one sorted run whose heap holds the payloads in event order; one run that needs no
    merge is returned as it is (:func:`merged_as_is`; a piece cut to a range is compacted)."""
    as_is = merged_as_is(runs)
    return as_is if as_is is not None else merge_all(runs)


def merge_all(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`merge_runs` for pieces :func:`merged_as_is` has already turned down: always a new run."""
    events, heap = concat_runs(runs)
    if is_sorted(events):  # already in order (e.g. runs of consecutive windows)
        if _in_layout(events, heap):
            return events, heap
        order = np.arange(len(events))
    else:
        order = total_order(events)
    out = rows(events)[order].view(EVENT)
    new_heap = gather(heap, out["offset"], out["length"])
    out["offset"] = np.cumsum(out["length"], dtype=np.uint64) - out["length"]
    return out, new_heap


def pieces_in_range(
    held: Iterable[tuple[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]]],
    story: int,
    t0: int,
    t1: int,
    window_ns: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """From ``((story, window), pieces)`` items held in memory, the pieces' events of ``story`` in [t0, t1).

    Each returned piece keeps its heap (offsets still point into it): ready for :func:`merge_runs`.
    """
    runs: list[tuple[np.ndarray, np.ndarray]] = []
    for (s, w), pieces in held:
        if s != story or window_end(w, window_ns) <= t0 or window_start(w, window_ns) >= t1:
            continue
        for ev, heap in pieces:
            keep = (ev["time"] >= t0) & (ev["time"] < t1)
            if keep.any():
                runs.append((ev[keep], heap))
    return runs
