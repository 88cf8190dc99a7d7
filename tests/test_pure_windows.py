"""Window arithmetic and striping (chronompi.windows)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronompi.windows import FOREVER, NEVER, is_closed, stripe, window_end, window_of, window_start

MS = 1_000_000


def test_never_and_forever_are_the_int64_extremes() -> None:
    assert NEVER == -(2**63)
    assert FOREVER == 2**63 - 1


@pytest.mark.parametrize(
    ("t", "w"),
    [(0, 0), (1, 0), (99, 0), (100, 1), (250, 2), (-1, -1), (-100, -1), (-101, -2), (-250, -3)],
)
def test_window_of(t: int, w: int) -> None:
    assert window_of(t, 100) == w


def test_window_bounds() -> None:
    assert window_start(0, 100) == 0 and window_end(0, 100) == 100
    assert window_start(3, 100) == 300 and window_end(3, 100) == 400
    assert window_start(-1, 100) == -100 and window_end(-1, 100) == 0
    assert window_start(-3, 100) == -300 and window_end(-3, 100) == -200


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**62), 2**62), st.integers(1, 10**10))
def test_every_time_falls_in_its_window(t: int, width: int) -> None:
    w = window_of(t, width)
    assert window_start(w, width) <= t < window_end(w, width)
    assert window_end(w, width) - window_start(w, width) == width
    assert window_end(w, width) == window_start(w + 1, width)


def test_is_closed() -> None:
    width = 100 * MS
    w = 17
    end = window_end(w, width)
    assert not is_closed(w, NEVER, width)
    assert not is_closed(w, window_start(w, width), width)
    assert not is_closed(w, end - 1, width)  # an event at end - 1 may still come
    assert is_closed(w, end, width)
    assert is_closed(w, end + 1, width)
    assert is_closed(w, FOREVER, width)
    # negative windows close the same way
    assert not is_closed(-2, -101, 100)
    assert is_closed(-2, -100, 100)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**50), 2**50), st.integers(-(2**50), 2**50), st.integers(1, 10**9))
def test_is_closed_iff_no_event_of_the_window_can_follow(w: int, watermark: int, width: int) -> None:
    # closed exactly when every time of the window is older than the watermark
    assert is_closed(w, watermark, width) == (window_of(watermark, width) > w)


# -- striping ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(-(2**62), 2**62), st.integers(1, 64))
def test_stripe_in_range_and_deterministic(story: int, window: int, g: int) -> None:
    s = stripe(story, window, g)
    assert isinstance(s, int)
    assert 0 <= s < g
    assert stripe(story, window, g) == s


def test_stripe_single_grapher() -> None:
    assert {stripe(s, w, 1) for s in range(20) for w in range(-50, 50)} == {0}


def test_stripe_is_a_fixed_function() -> None:
    # every rank computes the same owner: no per-process salt (hash randomisation, id(), ...)
    first = [stripe(s, w, 7) for s in range(5) for w in range(-20, 20)]
    again = [stripe(s, w, 7) for s in range(5) for w in range(-20, 20)]
    assert first == again
    assert len(set(first)) == 7


@pytest.mark.parametrize("story", [0, 1, 2, 3, 12345, 2**32 - 1])
@pytest.mark.parametrize("start", [0, 17_000_000_000 // 100, -500, 2**40 - 500])
def test_stripe_spreads_one_story_over_all_graphers(story: int, start: int) -> None:
    owners = Counter(stripe(story, w, 4) for w in range(start, start + 1000))
    assert set(owners) == {0, 1, 2, 3}
    assert min(owners.values()) > 150, owners


@pytest.mark.parametrize("g", [2, 3, 5, 8])
def test_stripe_spreads_over_other_grapher_counts(g: int) -> None:
    owners = Counter(stripe(7, w, g) for w in range(1000))
    assert set(owners) == set(range(g))
    assert min(owners.values()) > 1000 / g * 0.6, owners


def test_stripe_differs_between_stories() -> None:
    # two stories do not follow the same grapher sequence (their hot windows do not pile up)
    seq = [tuple(stripe(s, w, 4) for w in range(64)) for s in range(16)]
    assert len(set(seq)) == 16
