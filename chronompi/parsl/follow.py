"""Live export: keep Parsl's tables current while the workflow runs (``chronompi export parsl --follow``).

A :class:`Follower` polls the store every ``interval_s``. Its watermark is, per
segment and story, how many rows of the windows index it has read: a poll reads
only the index rows committed since (``.part`` segments in SWMR mode, closed ones
once), decodes their events and keeps them pending. Pending events are applied in
total order ``(time, client, seq)`` to the same :class:`~chronompi.parsl.export.Rebuild`
the offline export uses, once they have waited ``hold_s`` (so that events of the same
windows committed for other stories or by other graphers a moment later sort in
before them), and what changed goes to the extractor in one step (one SQLite
transaction). An event that arrives after a later one was applied (later than
``hold_s``) makes the follower re-derive every table from all events read so far
and write the difference (counted in ``reorders``): the result is always what the
offline export of the same events gives.

It stops when every run that the store's run records show running has ended (then
a last poll reads everything and workflows without an end message get their
``time_completed`` as in the offline export), after ``until_idle_s`` without new
events, or on Ctrl-C or SIGTERM after the step under way (then a workflow without an end
message keeps ``time_completed`` NULL: it may still be running). A step whose write failed
is written again with the next one. A run record still ``running`` but not rewritten for
``stale_s`` (the job rewrites it every 10 s) counts as ended: its job died. With
``new_run``, runs that had ended when the follower started do not count: it waits for
a new one (a store that already holds finished runs, the job not started yet).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DamagedSegment, StoreError
from ..store.format import RUNS, open_segment, read_runs
from ..store.reader import REPLAY, Store, index_rows, read_rows, to_replay
from .encoding import EncodingError, decode_message
from .export import Rebuild, diff
from .extract import Change, Extractor
from .sink import DEFAULT_CHRONICLE, ParslMonitoringError

log = logging.getLogger(__name__)


@dataclass
class FollowStats:
    """What a follow did. Lags are from a message's event time to the commit of the step holding it."""

    polls: int = 0
    steps: int = 0
    messages: int = 0
    reorders: int = 0
    stopped: str = ""
    lags_s: list[float] = field(default_factory=list)

    def lag(self, q: float) -> float:
        return float(np.quantile(self.lags_s, q)) if self.lags_s else float("nan")


class Follower:
    """Applies a store's Parsl messages to ``extractor`` as their windows commit (see the module doc)."""

    def __init__(
        self,
        store: str | os.PathLike[str],
        extractor: Extractor,
        chronicle: str = DEFAULT_CHRONICLE,
        interval_s: float = 1.0,
        hold_s: float | None = None,
        until_idle_s: float | None = None,
        stale_s: float = 60.0,
        new_run: bool = False,
    ) -> None:
        self.path = Path(store)
        self.extractor = extractor
        self.chronicle = chronicle
        self.interval_s = interval_s
        self.hold_s = interval_s if hold_s is None else hold_s
        self.until_idle_s = until_idle_s
        self.stale_s = stale_s
        self.new_run = new_run
        self._old_runs: set[Any] | None = None
        self.rb = Rebuild()
        self.stats = FollowStats()
        self._store: Store | None = None
        self._read: dict[tuple[str, str], int] = {}  # (segment name, story key) -> index rows read
        self._done: set[str] = set()  # closed segments read to the end
        self._pending: list[tuple[np.ndarray, float]] = []  # REPLAY rows, wall time read
        self._applied: list[np.ndarray] = []  # every event applied (for a re-derivation)
        self._last: tuple[int, int, int] | None = None  # key of the last event applied
        self._carry: dict[str, Change] = {}  # changes of a step whose write failed

    # -- reading -------------------------------------------------------------------------------------------------
    def _open_store(self) -> Store | None:
        if self._store is None:
            try:
                self._store = Store(self.path)
            except StoreError:
                return None  # not created yet: the job has not started
        return self._store

    def read_new(self) -> int:
        """Read the events committed since the last call into ``pending``; returns how many."""
        st = self._open_store()
        if st is None:
            return 0
        pieces: list[np.ndarray] = []
        for p in st.segments():
            name = p.name.removesuffix(".part")
            if name in self._done:
                continue
            try:
                f = open_segment(p)
            except (OSError, ValueError):
                continue  # renamed or still being created: the next poll sees it
            try:
                if self.chronicle in f:
                    for story in f[self.chronicle]:
                        key = f"{self.chronicle}/{story}"
                        try:
                            rows = index_rows(f, key, None, None)
                        except DamagedSegment:
                            if p.suffix == ".part":
                                continue  # a writer mid-flush: read it again next time
                            raise
                        n0 = self._read.get((name, key), 0)
                        if len(rows) > n0:
                            pieces += [to_replay(ev, heap) for ev, heap in read_rows(rows[n0:], None, None)]
                            self._read[(name, key)] = len(rows)
                if p.suffix == ".h5":
                    self._done.add(name)
            finally:
                f.close()
        new = np.concatenate(pieces) if pieces else np.empty(0, REPLAY)
        if not len(new):
            return 0
        self._pending.append((new, time.monotonic()))
        return len(new)

    # -- applying ------------------------------------------------------------------------------------------------
    def _ready(self, everything: bool) -> np.ndarray:
        """Pending events due now, in total order (all of them when ``everything``): those read at
        least ``hold_s`` ago, and every pending event that sorts before the last of those."""
        take: list[np.ndarray] = []
        if everything:
            take, self._pending = [p for p, _ in self._pending], []
        else:
            cutoff = time.monotonic() - self.hold_s
            due = [p for p, seen in self._pending if seen <= cutoff]
            if not due:
                return np.empty(0, REPLAY)
            last = max(_key(_sorted(p)[-1]) for p in due)
            keep = []
            for p, seen in self._pending:
                m = _at_or_before(p, last)
                take.append(p[m])
                if not m.all():
                    keep.append((p[~m], seen))
            self._pending = keep
        if not take:
            return np.empty(0, REPLAY)
        return _sorted(np.concatenate(take))

    def apply(self, everything: bool = False, finish: bool | None = None) -> int:
        """Apply the due pending events and write what changed as one step; returns how many.

        ``everything``: all pending events, as the last step. ``finish`` (default: ``everything``):
        workflows without an end message end at their last message, as in the offline export
        (not when following stops while the run still runs).
        """
        ev = self._ready(everything)
        changes: dict[str, Change] = {}
        if len(ev):
            if self._last is not None and _key(ev[0]) < self._last:
                changes = self._rederive(ev)
            else:
                for t, payload in zip(ev["time"].tolist(), ev["payload"].tolist()):
                    self.rb.apply(t, *_decode(payload))
                self._applied.append(ev)
            self._last = max(self._last or _key(ev[-1]), _key(ev[-1]))
        if everything if finish is None else finish:
            self.rb.finish()
        for t, ch in self.rb.take_changes().items():  # after a re-derivation: finish()'s updates
            changes.setdefault(t, Change()).upsert.extend(ch.upsert)
        for t, ch in self._carry.items():  # a step whose write failed goes first
            changes[t] = Change(ch.upsert + changes[t].upsert, ch.delete + changes[t].delete) if t in changes else ch
        self._carry = {}
        if changes or everything:
            try:
                self.extractor.write(self.rb.rows, changes, final=everything)
            except BaseException:
                self._carry = changes  # the next step writes them again
                raise
            self.stats.steps += 1
        if len(ev):
            now = time.time_ns()
            self.stats.lags_s.extend(((now - ev["time"]) / 1e9).tolist())
            self.stats.messages += len(ev)
        return len(ev)

    def _rederive(self, ev: np.ndarray) -> dict[str, Change]:
        """An event older than one applied: every table again from all events; returns the difference."""
        self.stats.reorders += 1
        log.info("an event arrived after later ones were applied: re-deriving the tables")
        every = _sorted(np.concatenate([*self._applied, ev]))
        rb = Rebuild()
        for t, payload in zip(every["time"].tolist(), every["payload"].tolist()):
            rb.apply(t, *_decode(payload))
        rb.take_changes()
        changes = diff(self.rb.rows, rb.rows)
        self.rb = rb
        self._applied = [every]
        return changes

    # -- the loop ------------------------------------------------------------------------------------------------
    def running(self) -> bool | None:
        """True while a run of the store is running; None before any run record exists."""
        runs = read_runs(self.path) if (self.path / RUNS).is_dir() else []
        if self.new_run:
            if self._old_runs is None:  # the runs that had ended when following began do not count
                self._old_runs = {r.get("run") for r in runs if r.get("status") != "running"}
            runs = [r for r in runs if r.get("run") not in self._old_runs]
        if not runs:
            return None
        now = time.time()
        for r in runs:
            if r.get("status") != "running":
                continue
            rec = self.path / RUNS / f"r{r.get('run')}.json"
            try:
                fresh = now - rec.stat().st_mtime < self.stale_s
            except OSError:
                fresh = True
            if fresh:
                return True
        return False

    def run(self) -> FollowStats:
        """Follow until the runs end, ``until_idle_s`` passes without new events, or Ctrl-C / SIGTERM.

        In the main thread, SIGINT and SIGTERM stop it after the step under way (a step is never cut
        in half); the last step then writes everything read.
        """
        stop = threading.Event()
        handled = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handled[sig] = signal.signal(sig, lambda *_: stop.set())
        idle_since = time.monotonic()
        try:
            while not stop.is_set():
                live = self.running()  # before reading: what a run committed before it ended is read after
                got = self.read_new()
                self.apply()
                self.stats.polls += 1
                now = time.monotonic()
                if got:
                    idle_since = now
                if live is False:
                    self.stats.stopped = "the run ended"
                    break
                if self.until_idle_s is not None and now - idle_since >= self.until_idle_s:
                    self.stats.stopped = f"idle for {self.until_idle_s:g} s"
                    break
                stop.wait(self.interval_s)
            else:
                self.stats.stopped = "interrupted"
            self.read_new()
            self.apply(everything=True, finish=self.stats.stopped == "the run ended")
        finally:
            for sig, old in handled.items():
                signal.signal(sig, old)
        return self.stats

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self.extractor.close()


def _key(row: Any) -> tuple[int, int, int]:
    return int(row["time"]), int(row["client"]), int(row["seq"])


def _sorted(ev: np.ndarray) -> np.ndarray:
    return ev[np.lexsort((ev["seq"], ev["client"], ev["time"]))]


def _at_or_before(ev: np.ndarray, key: tuple[int, int, int]) -> np.ndarray:
    """Mask of the events whose (time, client, seq) is <= ``key``."""
    t, c, q = key
    tt, cc = ev["time"], ev["client"]
    return (tt < t) | ((tt == t) & ((cc < c) | ((cc == c) & (ev["seq"] <= q))))


def _decode(payload: bytes) -> tuple[str, Any]:
    try:
        return decode_message(payload)
    except EncodingError as exc:
        raise ParslMonitoringError(f"the chronicle holds a payload that is not a Parsl message: {exc}") from None
