"""The workload simulator behind ``chronompi run`` (ChronoLog's admin tool).

Every client acquires ``chronicles x stories`` stories and logs ``events``
events round-robin over them, with payload sizes drawn from a triangular
distribution over ``[payload_min, payload_max]`` whose mean is
``payload_avg``. Payloads are a pure function of (seed, client rank, story,
seq), so :func:`verify` can check the store byte for byte afterwards.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .client import Client
from .config import WorkloadConfig
from .story import Story

if TYPE_CHECKING:
    from rich.console import Console

POOL = 1024


def payload_pool(w: WorkloadConfig) -> list[bytes]:
    """The payloads every client draws from (same on every rank for one seed)."""
    rng = np.random.default_rng(w.seed)
    if w.payload_min == w.payload_max:
        sizes = np.full(POOL, w.payload_min)
    else:
        mode = min(max(3 * w.payload_avg - w.payload_min - w.payload_max, w.payload_min), w.payload_max)
        sizes = np.rint(rng.triangular(w.payload_min, mode, w.payload_max, POOL)).astype(int)
    return [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in sizes]


def pick(rank: int, story_index: int, seq: int) -> int:
    """Index into the pool of the payload of event ``seq`` of a client's story."""
    return (seq * 31 + rank * 17 + story_index * 7) % POOL


def story_names(w: WorkloadConfig, rank: int, thread: int) -> list[tuple[str, str]]:
    """(chronicle, story) pairs logged by one thread of one client."""
    suffix = "" if w.shared else f"_r{rank}"
    if w.threads > 1:
        suffix += f"_t{thread}"
    return [(f"chron{i}", f"story{j}{suffix}") for i in range(w.chronicles) for j in range(w.stories)]


def story_index(name: str) -> int:
    """The ``j`` of ``story{j}...``."""
    digits = name[len("story") :].split("_", 1)[0]
    return int(digits)


@dataclass
class Result:
    events: int = 0
    seconds: float = 0.0


def _drive(client: Client, w: WorkloadConfig, thread: int, pool: list[bytes], counter: list[int]) -> None:
    stories: list[Story] = [client.acquire_story(c, s) for c, s in story_names(w, client.rank, thread)]
    idx = [story_index(s.name) for s in stories]
    n_total = w.events // w.threads + (1 if thread < w.events % w.threads else 0)
    per = [n_total // len(stories) + (1 if k < n_total % len(stories) else 0) for k in range(len(stories))]
    rank = client.rank
    t0 = time.perf_counter()
    done = 0
    step = max(1, min(w.many, 1000))
    pace = _Pace(w, t0)
    while done < n_total:
        for k, st in enumerate(stories):
            seq0 = st.seq
            if seq0 >= per[k]:
                continue
            m = min(step, per[k] - seq0, pace.chunk())
            if w.mode == "log_many":
                st.log_many([pool[pick(rank, idx[k], s)] for s in range(seq0, seq0 + m)])
            else:
                log = st.log
                for s in range(seq0, seq0 + m):
                    log(pool[pick(rank, idx[k], s)])
            done += m
            counter[thread] = done
            pace.wait(m)
    for st in stories:
        st.release()


class _Pace:
    """The load of one thread: ``rate`` (0: as fast as it can); with ``burst_s`` > 0, bursts at
    ``rate`` alternate with ``quiet_s`` at ``quiet_rate`` (the autoscaler's demo: +experiment=autoscale)."""

    def __init__(self, w: WorkloadConfig, t0: float) -> None:
        self.w = w
        self.phase: tuple[int, bool] = (0, True)
        self.p_t0 = t0
        self.p_done = 0
        self.t0 = t0

    def rate(self) -> float:
        w = self.w
        if w.burst_s <= 0:
            return w.rate / w.threads
        now = time.perf_counter() - self.t0
        period = w.burst_s + w.quiet_s
        phase = (int(now // period), now % period < w.burst_s)
        if phase != self.phase:
            self.phase, self.p_t0, self.p_done = phase, time.perf_counter(), 0
        return (w.rate if phase[1] else w.quiet_rate) / w.threads

    def chunk(self) -> int:
        """Events to log in one call: about 10 ms worth when paced."""
        r = self.rate()
        return max(1, int(r / 100)) if r > 0 else 1 << 30

    def wait(self, m: int) -> None:
        self.p_done += m
        r = self.rate()
        if r > 0:
            ahead = self.p_done / r - (time.perf_counter() - self.p_t0)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))


def run_workload(client: Client, w: WorkloadConfig) -> Result:
    """Log the workload from this client; collective over ``client.comm``."""
    comm = client.comm
    if comm.Get_rank() == 0:
        have = set(client.show_chronicles())
        for i in range(w.chronicles):
            if f"chron{i}" not in have:
                client.create_chronicle(f"chron{i}", {"workload": "chronompi run", "seed": w.seed})
    comm.Barrier()
    pool = payload_pool(w)
    counter = [0] * w.threads
    # how client 0 shows progress ("bar" on a terminal, "lines" otherwise, None): its decision, for every client
    mode = comm.bcast(progress_mode() if w.progress and comm.Get_rank() == 0 else None, root=0)
    watch = _Watch(client, w, counter, mode) if mode else None
    t0 = time.perf_counter()
    threads = [
        threading.Thread(target=_drive, args=(client, w, t, pool, counter), name=f"workload-{t}")
        for t in range(1, w.threads)
    ]
    for th in threads:
        th.start()
    try:
        _drive(client, w, 0, pool, counter)
        for th in threads:
            th.join()
        client.flush()
    finally:
        if watch is not None:
            watch.finish()  # client 0: waits until every client reported its last count
    return Result(sum(counter[: w.threads]), time.perf_counter() - t0)


# -- progress of the whole run, shown by client 0 ----------------------------------------------------------------------
TAG_COUNT = 7  # on the Dup of client.comm that only progress uses: (events so far, finished)
REPORT_S = 0.2  # how often a client reports its count to client 0
LINE_S = 2.0  # how often a text line is printed when stdout is not a terminal


def progress_mode() -> str | None:
    """``bar`` when stdout is a terminal, ``lines`` (plain text, no escape codes) when it is not, ``None`` in
    batch jobs (Slurm, PBS: the job's output file gets the summary only)."""
    from .report import stdout_is_terminal

    if any(k in os.environ for k in ("SLURM_JOB_ID", "PBS_JOBID")):
        return None
    return "bar" if stdout_is_terminal() else "lines"


def rate_text(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else f"{n:.0f}"


class _Watch:
    """Every client sends its running count to client 0 every ``REPORT_S`` (point to point on a communicator
    of its own, so nothing mixes with the application's messages); client 0 adds them up and shows the whole
    run: events of all clients, the wall time so far and the rate as the run's summary defines them (from the
    session's start: chronompi/report.py), the rate of the last second, and the membership the visor reports."""

    def __init__(self, client: Client, w: WorkloadConfig, counter: list[int], mode: str) -> None:
        self.client, self.w, self.counter, self.mode = client, w, counter, mode
        self.comm = client.comm.Dup()  # collective over the clients
        self.done = threading.Event()
        target = self._show if self.comm.Get_rank() == 0 else self._report
        self.thread = threading.Thread(target=target, name="workload-progress", daemon=True)
        self.thread.start()

    def mine(self) -> int:
        return sum(self.counter[: self.w.threads])

    def finish(self) -> None:
        self.done.set()
        self.thread.join()
        self.comm.Free()

    def _report(self) -> None:
        last = -1
        while not self.done.wait(REPORT_S):
            if self.mine() != last:
                last = self.mine()
                self.comm.send((last, False), dest=0, tag=TAG_COUNT)  # a few bytes: sent eagerly
        self.comm.send((self.mine(), True), dest=0, tag=TAG_COUNT)  # the last message of this rank on the tag

    def _show(self) -> None:
        from mpi4py import MPI

        n = self.comm.Get_size()
        counts = [0] * n
        finished = {0}
        total = self.w.events * n
        recent = RecentRate()
        recent.add(time.perf_counter(), 0)
        status = MPI.Status()
        render = _Bar(total, n) if self.mode == "bar" else _Lines(total, n)
        members, asked = "", 0.0
        while True:
            while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_COUNT, status=status):
                src = status.Get_source()
                counts[src], end = self.comm.recv(source=src, tag=TAG_COUNT)
                if end:
                    finished.add(src)
            counts[0] = self.mine()
            now = time.perf_counter()
            if now - asked > 1.0:
                members, asked = _members(self.client), now
            done = sum(counts)
            rate = recent.add(now, done)
            last = self.done.is_set() and len(finished) == n
            render.update(done, rate, self.client.elapsed(), members, last)
            if last:
                break
            time.sleep(0.1)


class RecentRate:
    """Events per second over about the last ``span_s``: the newest count against the newest sample at least
    ``span_s`` older (the oldest one until there is such a sample). A loop that comes round late (a busy
    machine, a slow answer from the visor) still gets the rate since its last look; keeping only the samples
    of the last second, it had a single sample then and showed 0 events/s while the count rose."""

    def __init__(self, span_s: float = 1.0) -> None:
        self.span_s = span_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, count: int) -> float:
        """Record ``count`` events at time ``t`` (seconds); return the recent rate."""
        self.samples.append((t, count))
        while len(self.samples) > 2 and t - self.samples[1][0] >= self.span_s:
            self.samples.popleft()
        t0, c0 = self.samples[0]
        return (count - c0) / (t - t0) if t > t0 else 0.0


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _members(client: Client) -> str:
    """``1 keeper, 2 graphers`` (plus spares and the epoch once the membership changed) from the visor."""
    try:
        m = client.members()
    except Exception:  # progress is decoration: never let it end a run
        return ""
    text = f"{_count(len(m['keepers']), 'keeper')}, {_count(len(m['graphers']), 'grapher')}"
    if m.get("spares"):
        text += f", {_count(len(m['spares']), 'spare')}"
    if m.get("epoch") or m.get("changing"):
        text += f" (epoch {m['epoch']}{', changing' if m.get('changing') else ''})"
    return text


class _Bar:
    """rich's progress bar on a terminal. The count is never cut: on a narrow terminal the text after it ends
    in an ellipsis instead (rich squeezed every column alike, and the count read ``29000/1000...``)."""

    def __init__(self, total: int, n_clients: int, console: Console | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.table import Column

        self.progress = Progress(
            TextColumn(f"{_count(n_clients, 'client')}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=20),
            MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=2 * len(str(total)) + 1)),
            TextColumn(
                "{task.fields[elapsed]} s  {task.fields[rate]} events/s{task.fields[now]}  {task.fields[members]}",
                table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
            ),
            console=console,
            expand=True,  # the last column takes what is left of the line, and no more
        )
        self.task = self.progress.add_task("log", total=total, rate="0", now="", elapsed="0.0", members="")
        self.progress.start()

    def update(self, done: int, rate: float, elapsed: float, members: str, last: bool) -> None:
        """``rate``: of the last second; the bar shows the average since the session started (report.py)."""
        avg = done / elapsed if elapsed > 0 else 0.0
        now = "" if last else f" (now {rate_text(rate)})"
        self.progress.update(
            self.task, completed=done, rate=rate_text(avg), now=now, elapsed=f"{elapsed:.1f}", members=members
        )
        if last:
            self.progress.stop()


class _Lines:
    """Plain text when stdout is not a terminal: a line every ``LINE_S`` and a last one, no escape codes."""

    def __init__(self, total: int, n_clients: int) -> None:
        self.total, self.n_clients, self.printed = total, n_clients, -LINE_S

    def update(self, done: int, rate: float, elapsed: float, members: str, last: bool) -> None:
        """``rate``: of the last second; ``elapsed``: since the session started. The line shows the wall time
        and the average rate as the summary defines them (report.py), and the last second's rate while running."""
        if not last and elapsed - self.printed < LINE_S:
            return
        self.printed = elapsed
        avg = done / elapsed if elapsed > 0 else 0.0
        now = "" if last else f" (now {rate:,.0f}/s)"
        line = (
            f"progress: {done:,}/{self.total:,} events of {_count(self.n_clients, 'client')} in {elapsed:.2f} s: "
            f"{avg:,.0f} events/s{now}"
        )
        print(line + (f"; {members}" if members else ""), flush=True)


def verify(root: str, summary: dict[str, Any], w: WorkloadConfig) -> dict[str, Any]:
    """Check the store against the workload: every event once, bytes identical, order, dense seq."""
    from .merge import is_sorted
    from .protocol import client_id
    from .store import open_store

    run_id = int(summary["run"], 16)
    ranks = [c["rank"] for c in summary["roles"]["client"]]
    rank_of = {client_id(run_id, r): r for r in ranks}
    pool = payload_pool(w)
    checked = 0
    problems: list[str] = []
    with open_store(root) as store:
        names = {(c, s) for r in ranks for t in range(w.threads) for c, s in story_names(w, r, t)}
        for chron, story in sorted(names):
            ev, heap = store.replay_raw(chron, story)
            ev = ev[np.isin(ev["client"], list(rank_of))]  # this run only
            if not is_sorted(ev):
                problems.append(f"{chron}/{story}: not in total order")
            raw = heap.tobytes()
            j = story_index(story)
            for cid in np.unique(ev["client"]):
                mine = ev[ev["client"] == cid]
                seq = mine["seq"]
                if not np.array_equal(seq, np.arange(len(seq), dtype=np.uint64)):
                    problems.append(f"{chron}/{story} client {rank_of[int(cid)]}: seq not dense from 0")
                r = rank_of[int(cid)]
                for e in mine:
                    o, n = int(e["offset"]), int(e["length"])
                    if raw[o : o + n] != pool[pick(r, j, int(e["seq"]))]:
                        problems.append(f"{chron}/{story} client {r} seq {int(e['seq'])}: payload differs")
                        break
            checked += len(ev)
    expected = sum(c["events"] for c in summary["roles"]["client"])
    if checked != expected:
        problems.append(f"store holds {checked} events of this run, clients logged {expected}")
    return {"checked": checked, "expected": expected, "problems": problems[:20]}
