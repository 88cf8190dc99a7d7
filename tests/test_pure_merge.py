"""Merging sorted runs (chronompi.merge): order, permutation, payload integrity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronompi.codec import EVENT
from chronompi.merge import concat_runs, gather, is_sorted, merge_runs, order_runs, total_order

BIG = 2**64 - 1


def _events(rows: list[tuple[int, int, int]], lengths: list[int] | None = None) -> np.ndarray:
    ev = np.zeros(len(rows), EVENT)
    if rows:
        ev["time"] = [r[0] for r in rows]
        ev["client"] = [r[1] for r in rows]
        ev["seq"] = [r[2] for r in rows]
    if lengths is not None:
        ev["length"] = lengths
        ev["offset"] = np.cumsum([0, *lengths])[:-1]
    return ev


def _keys(ev: np.ndarray) -> list[tuple[int, int, int]]:
    return list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist(), strict=True))


def _payload(key: tuple[int, int, int], length: int) -> bytes:
    """A payload that is a function of its event, so any mix-up shows."""
    rng = np.random.default_rng([key[0] & 0xFFFFFFFF, key[1] & 0xFFFFFFFF, key[2]])
    return rng.integers(0, 256, length, dtype=np.uint8).tobytes()


# -- total_order / is_sorted -----------------------------------------------------------------


def test_total_order_sorts_by_time_client_seq() -> None:
    ev = _events([(5, 1, 0), (3, 2, 0), (3, 1, 9), (3, 1, 2), (-4, BIG, 0), (5, 0, 7)])
    order = total_order(ev)
    assert _keys(ev[order]) == [(-4, BIG, 0), (3, 1, 2), (3, 1, 9), (3, 2, 0), (5, 0, 7), (5, 1, 0)]


def test_total_order_without_time_ties_ignores_client_and_seq() -> None:
    ev = _events([(30, 0, 0), (10, 9, 9), (20, 5, 1)])
    assert total_order(ev).tolist() == [1, 2, 0]


def test_total_order_is_stable_for_equal_keys() -> None:
    ev = _events([(1, 1, 1), (0, 0, 0), (1, 1, 1), (1, 1, 1)])
    assert total_order(ev).tolist() == [1, 0, 2, 3]


@pytest.mark.parametrize("n", [0, 1])
def test_total_order_tiny(n: int) -> None:
    assert total_order(_events([(7, 7, 7)] * n)).tolist() == list(range(n))


KEYS = st.tuples(st.integers(-3, 3), st.sampled_from([0, 1, 2, BIG]), st.integers(0, 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(KEYS, max_size=30))
def test_total_order_matches_python_sort(rows: list[tuple[int, int, int]]) -> None:
    ev = _events(rows)
    order = total_order(ev).tolist()
    assert sorted(order) == list(range(len(rows)))
    assert order == sorted(range(len(rows)), key=lambda i: (rows[i], i))  # stable


@settings(max_examples=200, deadline=None)
@given(st.lists(KEYS, max_size=12))
def test_is_sorted_means_strictly_increasing(rows: list[tuple[int, int, int]]) -> None:
    expected = all(a < b for a, b in zip(rows, rows[1:], strict=False))
    assert is_sorted(_events(rows)) is expected


def test_is_sorted_examples() -> None:
    assert is_sorted(_events([]))
    assert is_sorted(_events([(1, 1, 1)]))
    assert is_sorted(_events([(-1, BIG, 5), (0, 0, 0), (0, 0, 1), (0, 1, 0), (2, 0, 0)]))
    assert not is_sorted(_events([(1, 2, 3), (1, 2, 3)])), "a duplicate is not strictly sorted"
    assert not is_sorted(_events([(0, 0, 0), (1, 0, 0), (1, 0, 0)]))
    assert not is_sorted(_events([(2, 0, 0), (1, 0, 0)])), "time out of order"
    assert not is_sorted(_events([(1, 2, 0), (1, 1, 9)])), "client out of order on a time tie"
    assert not is_sorted(_events([(1, 1, 5), (1, 1, 4)])), "seq out of order on a time + client tie"
    assert not is_sorted(_events([(0, BIG, 0), (0, 0, 0)])), "client is unsigned: 2**64-1 is the largest"


# -- gather / concat_runs --------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_gather_matches_slicing(data) -> None:
    heap = np.frombuffer(data.draw(st.binary(max_size=200)), np.uint8)
    pieces = data.draw(
        st.lists(st.integers(0, heap.nbytes).flatmap(lambda o: st.tuples(st.just(o), st.integers(0, heap.nbytes - o))))
    )
    offsets = np.array([p[0] for p in pieces], np.uint64)
    lengths = np.array([p[1] for p in pieces], np.uint32)
    out = gather(heap, offsets, lengths)
    assert out.dtype == np.uint8
    assert out.tobytes() == b"".join(heap[o : o + n].tobytes() for o, n in pieces)


def test_gather_empty_and_zero_lengths() -> None:
    heap = np.frombuffer(b"abc", np.uint8)
    assert gather(heap, np.array([], np.uint64), np.array([], np.uint32)).nbytes == 0
    assert gather(heap, np.array([1, 2], np.uint64), np.array([0, 0], np.uint32)).nbytes == 0
    out = gather(heap, np.array([2, 0, 3, 0], np.uint64), np.array([1, 0, 0, 3], np.uint32))
    assert out.tobytes() == b"cabc"


def test_concat_runs_rebases_offsets_and_keeps_order() -> None:
    a = _events([(5, 0, 0), (1, 0, 1)], [2, 1])
    b = _events([(3, 1, 0)], [3])
    ev, heap = concat_runs([(a.copy(), np.frombuffer(b"xyz", np.uint8)), (b.copy(), np.frombuffer(b"PQR", np.uint8))])
    assert _keys(ev) == [(5, 0, 0), (1, 0, 1), (3, 1, 0)]
    assert ev["offset"].tolist() == [0, 2, 3]
    assert heap.tobytes() == b"xyzPQR"
    assert [heap[o : o + n].tobytes() for o, n in zip(ev["offset"], ev["length"], strict=True)] == [b"xy", b"z", b"PQR"]


def test_concat_runs_edge_cases() -> None:
    ev, heap = concat_runs([])
    assert len(ev) == 0 and ev.dtype == EVENT and heap.nbytes == 0
    one = (_events([(1, 1, 1)], [1]), np.frombuffer(b"q", np.uint8))
    ev, heap = concat_runs([one])
    assert _keys(ev) == [(1, 1, 1)] and heap.tobytes() == b"q"
    empty = (np.empty(0, EVENT), np.empty(0, np.uint8))
    ev, heap = concat_runs([empty, one, empty])
    assert _keys(ev) == [(1, 1, 1)] and ev["offset"].tolist() == [0] and heap.tobytes() == b"q"


# -- merge_runs ------------------------------------------------------------------------------


@st.composite
def runs(draw):
    """Random events with many time ties across clients, split into k sorted runs, each with its
    own heap in which payloads sit in a shuffled order between junk bytes."""
    n_clients = draw(st.integers(1, 5))
    ids = st.sampled_from([0, 1, 2, 3, 7, 2**63, BIG])
    clients = draw(st.lists(ids, min_size=n_clients, max_size=n_clients, unique=True))
    n = draw(st.integers(0, 120))
    t_span = draw(st.sampled_from([1, 3, 50, 2**40]))
    t0 = draw(st.integers(-(2**50), 2**50))
    seq_of = dict.fromkeys(clients, 0)
    events = []
    for _ in range(n):
        c = draw(st.sampled_from(clients))
        t = t0 + draw(st.integers(0, t_span))
        length = draw(st.sampled_from([0, 1, 7, 64, 300]))
        events.append(((t, c, seq_of[c]), length))
        seq_of[c] += 1
    k = draw(st.integers(1, 6))
    assign = [draw(st.integers(0, k - 1)) for _ in events]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out = []
    for j in range(k):
        mine = sorted(e for e, a in zip(events, assign, strict=True) if a == j)
        ev = _events([key for key, _ in mine], [ln for _, ln in mine])
        heap = bytearray()
        for i in rng.permutation(len(mine)):  # payloads stored out of event order, with gaps
            heap += rng.integers(0, 256, int(rng.integers(0, 5)), dtype=np.uint8).tobytes()
            ev["offset"][i] = len(heap)
            heap += _payload(*mine[i])
        heap += b"\xee" * int(rng.integers(0, 4))
        out.append((ev, np.frombuffer(bytes(heap), np.uint8)))
    return out, events


@settings(max_examples=150, deadline=None)
@given(runs())
def test_merge_runs(case) -> None:
    parts, events = case
    before = [(e.copy(), h.copy()) for e, h in parts]
    for e, _ in parts:
        assert is_sorted(e)
    out, heap = merge_runs(parts)
    assert out.dtype == EVENT
    # sorted by (time, client, seq), strictly, and a permutation of the input
    assert is_sorted(out)
    assert _keys(out) == sorted(key for key, _ in events)
    # offsets are contiguous in event order and the heap holds nothing else (one sorted run with a heap
    # not much larger than its payloads is taken as it is)
    lengths = out["length"].astype(np.int64)
    if out is parts[0][0]:
        assert len(parts) == 1 and heap is parts[0][1] and heap.nbytes <= 2 * int(lengths.sum()) + 4096
    else:
        assert out["offset"].tolist() == (np.cumsum(lengths) - lengths).tolist()
        assert heap.nbytes == int(lengths.sum())
    # every payload byte-identical
    want = dict(events)
    for key, o, n in zip(_keys(out), out["offset"].tolist(), out["length"].tolist(), strict=True):
        assert n == want[key]
        assert heap[o : o + n].tobytes() == _payload(key, n)
    # the input runs are not modified
    for (e, h), (e0, h0) in zip(parts, before, strict=True):
        assert e.tobytes() == e0.tobytes() and h.tobytes() == h0.tobytes()


def test_merge_runs_ties_across_clients() -> None:
    a = _events([(10, 2, 0), (10, 2, 1), (11, 0, 0)], [1, 1, 1])
    b = _events([(10, 1, 0), (10, 3, 0)], [2, 2])
    out, heap = merge_runs([(a, np.frombuffer(b"ABC", np.uint8)), (b, np.frombuffer(b"xxyy", np.uint8))])
    assert _keys(out) == [(10, 1, 0), (10, 2, 0), (10, 2, 1), (10, 3, 0), (11, 0, 0)]
    assert heap.tobytes() == b"xxAByyC"
    assert out["offset"].tolist() == [0, 2, 3, 4, 6]


def test_merge_runs_of_nothing() -> None:
    out, heap = merge_runs([])
    assert len(out) == 0 and heap.nbytes == 0
    out, heap = merge_runs([(np.empty(0, EVENT), np.empty(0, np.uint8))] * 3)
    assert len(out) == 0 and heap.nbytes == 0


def test_merge_single_sorted_run_is_taken_as_it_is() -> None:
    """One sorted run: no copy (its offsets already index its heap); an unsorted one is compacted."""
    ev = _events([(1, 0, 0), (2, 0, 1)], [2, 3])
    ev["offset"] = [5, 0]
    heap0 = np.frombuffer(b"CDE..AB", np.uint8)
    out, heap = merge_runs([(ev, heap0)])
    assert out is ev and heap is heap0
    rev = ev[::-1].copy()
    out, heap = merge_runs([(rev, heap0)])
    assert heap.tobytes() == b"ABCDE"
    assert out["offset"].tolist() == [0, 2]
    assert rev["offset"].tolist() == [0, 5], "the input run is left as it was"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 4), st.integers(0, 8)), max_size=12), max_size=5))
def test_order_runs_sorts_events_and_leaves_payloads_in_place(raw: list[list[tuple[int, int, int]]]) -> None:
    """order_runs: events in total order over the runs, each event's offset still finding its own payload in the
    runs' heaps laid end to end, and the heaps handed back as they were (nothing gathered)."""
    runs, want = [], {}
    seen: set[tuple[int, int, int]] = set()
    for rows in raw:
        rows = sorted({r for r in rows if r not in seen})
        seen.update(rows)
        lengths = [(t + c + s) % 7 for t, c, s in rows]
        ev = _events(rows, lengths)
        heap = np.frombuffer(b"".join(_payload(k, n) for k, n in zip(rows, lengths)), np.uint8)
        runs.append((ev, heap))
        want.update({k: _payload(k, n) for k, n in zip(rows, lengths)})
    if not runs:
        return
    events, heaps = order_runs(runs)
    assert is_sorted(events) and len(events) == len(want)
    assert all(h is r[1] for h, r in zip(heaps, runs, strict=True))
    raw_all = b"".join(h.tobytes() for h in heaps)
    for k, o, n in zip(_keys(events), events["offset"].tolist(), events["length"].tolist(), strict=True):
        assert raw_all[o : o + n] == want[k]
