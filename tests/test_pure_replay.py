"""to_replay and packed: payload bytes per event, on the fast paths (payloads back to back) and the general one."""

from __future__ import annotations

import numpy as np
import pytest

from chronompi.codec import EVENT
from chronompi.store.reader import packed, to_ns, to_replay


def _events(lengths: list[int], gap: int = 0, first: int = 0) -> np.ndarray:
    ev = np.zeros(len(lengths), EVENT)
    ev["time"] = np.arange(len(lengths)) + 10
    ev["length"] = lengths
    ev["offset"] = first + np.concatenate(([0], np.cumsum(np.array(lengths) + gap)[:-1])) if lengths else []
    return ev


@pytest.mark.parametrize(
    ("lengths", "gap", "first"),
    [([8] * 50, 0, 0), ([8] * 50, 0, 16), ([8] * 50, 3, 0), ([1, 9, 0, 4, 8], 0, 0), ([0] * 5, 0, 0), ([], 0, 0)],
)
def test_payloads_are_the_heap_slices(lengths: list[int], gap: int, first: int) -> None:
    ev = _events(lengths, gap, first)
    heap = np.random.default_rng(1).integers(0, 256, first + sum(lengths) + gap * len(lengths) + 4, dtype=np.uint8)
    out = to_replay(ev, heap)
    raw = heap.tobytes()
    want = [raw[o : o + n] for o, n in zip(ev["offset"].tolist(), ev["length"].tolist())]
    assert out["payload"].tolist() == want
    assert all(type(p) is bytes for p in out["payload"])
    assert out["time"].tolist() == ev["time"].tolist()


@pytest.mark.parametrize(
    ("lengths", "gap", "first"),
    [([8] * 50, 0, 0), ([8] * 50, 0, 16), ([8] * 50, 3, 0), ([1, 9, 0, 4, 8], 0, 0), ([0] * 5, 0, 0), ([], 0, 0)],
)
@pytest.mark.parametrize("shuffled", [False, True])
def test_packed_is_the_payloads_in_event_order(lengths: list[int], gap: int, first: int, shuffled: bool) -> None:
    ev = _events(lengths, gap, first)
    if shuffled:  # payloads stored in another order than the events (what a merge of runs gives)
        ev["offset"] = ev["offset"][::-1].copy()
        ev["length"] = ev["length"][::-1].copy()
    heap = np.random.default_rng(2).integers(0, 256, first + sum(lengths) + gap * len(lengths) + 4, dtype=np.uint8)
    bounds, data = packed(ev, heap)
    raw = heap.tobytes()
    want = [raw[o : o + n] for o, n in zip(ev["offset"].tolist(), ev["length"].tolist())]
    assert bounds.tolist() == np.concatenate(([0], np.cumsum([len(w) for w in want]))).tolist()
    assert data.tobytes() == b"".join(want)


def test_a_time_in_seconds_is_refused_not_read_as_1970() -> None:
    """A time.time() passed by mistake was read as nanoseconds: a range in the first seconds of 1970, nothing
    replayed and no word. Floats that large are ns; small ones are refused with the ns to give."""
    with pytest.raises(ValueError, match=r"looks like seconds .* 1796600000000000000"):
        to_ns(1796600000.0, "start")
    assert to_ns(1.7966e18) == 1796600000000000000 and to_ns(1796600000) == 1796600000
