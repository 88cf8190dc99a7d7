"""Progress helpers (chronompi.progress): Backoff and Sequencer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronompi import progress
from chronompi.progress import Backoff, Sequencer


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(progress.time, "sleep", slept.append)
    return slept


# -- Backoff ---------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap(sleeps: list[float]) -> None:
    b = Backoff(min_s=1e-3, max_s=10e-3)
    for _ in range(7):
        b.sleep()
    assert sleeps == pytest.approx([1e-3, 2e-3, 4e-3, 8e-3, 10e-3, 10e-3, 10e-3])
    assert b.delay == pytest.approx(10e-3)
    assert b.slept == pytest.approx(sum(sleeps))


def test_backoff_resets_to_min(sleeps: list[float]) -> None:
    b = Backoff(min_s=1e-3, max_s=1.0)
    b.sleep()
    b.sleep()
    b.sleep()
    b.reset()
    assert b.delay == 0.0
    b.sleep()
    assert sleeps == pytest.approx([1e-3, 2e-3, 4e-3, 1e-3])


def test_backoff_step(sleeps: list[float]) -> None:
    b = Backoff(min_s=1e-3, max_s=1.0)
    b.step(False)
    b.step(False)
    assert sleeps == pytest.approx([1e-3, 2e-3])
    b.step(True)  # progress: no sleep, and the next idle pass starts small again
    assert len(sleeps) == 2
    assert b.delay == 0.0
    b.step(False)
    assert sleeps[-1] == pytest.approx(1e-3)


def test_backoff_defaults(sleeps: list[float]) -> None:
    b = Backoff()
    for _ in range(20):
        b.sleep()
    assert sleeps[0] == pytest.approx(20e-6)
    assert max(sleeps) == pytest.approx(2e-3)
    assert sleeps == sorted(sleeps)


def test_busy_backoff_never_sleeps(sleeps: list[float]) -> None:
    b = Backoff(min_s=1e-3, max_s=1e-2, busy=True)
    for progressed in [False] * 50 + [True, False]:
        b.step(progressed)
    for _ in range(10):
        b.sleep()
    assert sleeps == []
    assert b.slept == 0.0


def test_backoff_really_sleeps() -> None:
    import time

    b = Backoff(min_s=2e-3, max_s=2e-3)
    t0 = time.perf_counter()
    b.sleep()
    assert time.perf_counter() - t0 >= 1.5e-3


# -- Sequencer ---------------------------------------------------------------------------------------


def test_sequencer_in_order_passes_straight_through() -> None:
    s: Sequencer[str] = Sequencer()
    assert s.push(3, 0, "a") == ["a"]
    assert s.push(3, 1, "b") == ["b"]
    assert s.held() == 0


def test_sequencer_holds_until_the_hole_is_filled() -> None:
    s: Sequencer[str] = Sequencer()
    assert s.push(1, 2, "c") == []
    assert s.push(1, 1, "b") == []
    assert s.held() == 2
    assert s.push(1, 0, "a") == ["a", "b", "c"]
    assert s.held() == 0
    assert s.push(1, 4, "e") == []
    assert s.held() == 1
    assert s.push(1, 3, "d") == ["d", "e"]
    assert s.held() == 0


def test_sequencer_sources_are_independent() -> None:
    s: Sequencer[str] = Sequencer()
    assert s.push(1, 1, "1b") == []
    assert s.push(2, 0, "2a") == ["2a"]  # source 2 is not held back by source 1's hole
    assert s.push(2, 2, "2c") == []
    assert s.held() == 2
    assert s.push(1, 0, "1a") == ["1a", "1b"]
    assert s.held() == 1
    assert s.push(2, 1, "2b") == ["2b", "2c"]
    assert s.held() == 0


def test_sequencer_rejects_duplicates() -> None:
    s: Sequencer[str] = Sequencer()
    s.push(0, 0, "a")
    with pytest.raises(ValueError, match="item 0 of source 0 arrived twice"):
        s.push(0, 0, "again")  # already released
    s.push(0, 2, "c")
    with pytest.raises(ValueError, match="item 2 of source 0 arrived twice"):
        s.push(0, 2, "again")  # still held
    assert s.held() == 1
    assert s.push(0, 1, "b") == ["b", "c"], "a refused duplicate does not replace the held item"
    with pytest.raises(ValueError):
        s.push(0, 1, "late")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_sequencer_releases_every_item_once_in_order(data) -> None:
    counts = data.draw(st.lists(st.integers(0, 15), min_size=1, max_size=4))
    arrivals = [(src, n) for src, c in enumerate(counts) for n in range(c)]
    arrivals = data.draw(st.permutations(arrivals))
    s: Sequencer[tuple[int, int]] = Sequencer()
    out: dict[int, list[int]] = {src: [] for src in range(len(counts))}
    for i, (src, n) in enumerate(arrivals):
        for item in s.push(src, n, (src, n)):
            assert item[0] == src
            out[src].append(item[1])
        seen = arrivals[: i + 1]
        # held = arrived but not yet released (waiting for a predecessor)
        assert s.held() == len(seen) - sum(len(v) for v in out.values())
        for src2, got in out.items():
            arrived = {n2 for s2, n2 in seen if s2 == src2}
            assert got == list(range(len(got)))  # in order, no gaps, no repeats
            assert len(got) not in arrived  # released up to the first hole exactly
    assert out == {src: list(range(c)) for src, c in enumerate(counts)}
    assert s.held() == 0


def test_wait_poll_cap_follows_ranks_per_core() -> None:
    """A waiting rank polls more often when few ranks share the cores, never more than every 2 ms, never
    less than every 20 ms; all of a node's waiting ranks together poll with about 2 % of its cores."""
    from chronompi.progress import POLL_CPU_S, WAIT_POLL_MAX_S, WAIT_POLL_MIN_CAP_S, wait_poll_cap

    assert wait_poll_cap(8, 2) == pytest.approx(8 * POLL_CPU_S / (0.02 * 2))  # 5 clients + 3 services: 5 ms
    assert wait_poll_cap(64, 2) == WAIT_POLL_MAX_S  # 64 ranks on 2 cores: as quiet as before
    assert wait_poll_cap(4, 64) == WAIT_POLL_MIN_CAP_S
    caps = [wait_poll_cap(n, 2) for n in range(1, 100)]
    assert caps == sorted(caps)
    for n, cores in ((8, 2), (16, 4), (40, 32)):
        cap = wait_poll_cap(n, cores)
        if WAIT_POLL_MIN_CAP_S < cap < WAIT_POLL_MAX_S:
            assert n * POLL_CPU_S / cap / cores == pytest.approx(0.02)
