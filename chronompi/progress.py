"""Progress helpers for service loops: a polling backoff and in-order delivery.

Both are free of MPI so they can be unit-tested alone.
"""

from __future__ import annotations

import os
import time
from typing import Generic, TypeVar

T = TypeVar("T")


# How often a rank that has nothing left to do but wait for the whole job (the session's start, its
# release) polls: at most every 20 ms. Dozens of ranks polling every 2 ms on an oversubscribed node took
# most of the CPU from the ranks they were waiting for.
WAIT_POLL_MAX_S = 0.02
WAIT_POLL_MIN_CAP_S = 0.002
POLL_CPU_S = 25e-6  # CPU of one poll: an Iprobe, a 2 ms sleep and its wake-up (measured here: 25 us)
POLL_SHARE = 0.02  # of the node's cores, for all its waiting ranks together


def usable_cores() -> int:
    """The cores this process may run on (its affinity: under Slurm, the allocation's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (no sched_getaffinity outside Linux)
        return os.cpu_count() or 1


def wait_poll_cap(ranks_here: int, cores: int) -> float:
    """The longest sleep between polls of a rank that waits for the whole job (its release, the visor's
    answer), for ``ranks_here`` ranks on a node of ``cores`` cores: long enough that all of them polling
    together take about 2 % of the cores, at least 2 ms, at most :data:`WAIT_POLL_MAX_S`. (A fixed 20 ms
    kept 64 ranks on 2 cores quiet, but made each of 5 clients on 2 cores wait ~10 ms for its release.)"""
    want = ranks_here * POLL_CPU_S / (POLL_SHARE * max(1, cores))
    return min(WAIT_POLL_MAX_S, max(WAIT_POLL_MIN_CAP_S, want))


class Backoff:
    """Sleep between polls that doubles up to a cap and resets on progress.

    Oversubscribed service ranks would otherwise spin and starve the science
    code of the cores it runs on. ``busy=True`` never sleeps (dedicated cores).
    """

    def __init__(self, min_s: float = 20e-6, max_s: float = 2e-3, busy: bool = False) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.busy = busy
        self.delay = 0.0
        self.slept = 0.0  # total seconds slept, for stats

    def reset(self) -> None:
        self.delay = 0.0

    def sleep(self) -> None:
        if self.busy:
            return
        self.delay = min(self.max_s, self.delay * 2) if self.delay else self.min_s
        time.sleep(self.delay)
        self.slept += self.delay

    def step(self, progressed: bool) -> None:
        """Call after each pass of a service loop."""
        if progressed:
            self.reset()
        else:
            self.sleep()


class Sequencer(Generic[T]):
    """Releases items of each source in the order of their sequence numbers.

    Receives posted with ANY_SOURCE match a source's messages in the order it
    sent them (MPI's non-overtaking rule), but they may *complete* out of
    order (a large message still in transfer while a later small one is
    done). A keeper must apply a client's batches in order (the promise of a
    later batch must not be seen before the events of an earlier one), so
    completed items wait here until their predecessors arrive.
    """

    def __init__(self) -> None:
        self._next: dict[int, int] = {}
        self._held: dict[int, dict[int, T]] = {}

    def push(self, source: int, number: int, item: T) -> list[T]:
        """Add item ``number`` of ``source``; return the items now releasable, in order."""
        expect = self._next.get(source, 0)
        if number < expect:
            raise ValueError(f"item {number} of source {source} arrived twice (expected {expect})")
        held = self._held.setdefault(source, {})
        if number in held:
            raise ValueError(f"item {number} of source {source} arrived twice")
        held[number] = item
        out = []
        while expect in held:
            out.append(held.pop(expect))
            expect += 1
        self._next[source] = expect
        return out

    def held(self) -> int:
        """Number of items waiting for a predecessor."""
        return sum(len(h) for h in self._held.values())
