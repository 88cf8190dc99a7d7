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
from dataclasses import dataclass
from typing import Any

import numpy as np

from .client import Client
from .config import WorkloadConfig
from .story import Story

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
    while done < n_total:
        for k, st in enumerate(stories):
            seq0 = st._seq
            if seq0 >= per[k]:
                continue
            m = min(step, per[k] - seq0)
            if w.mode == "log_many":
                st.log_many([pool[pick(rank, idx[k], s)] for s in range(seq0, seq0 + m)])
            else:
                log = st.log
                for s in range(seq0, seq0 + m):
                    log(pool[pick(rank, idx[k], s)])
            done += m
            counter[thread] = done
            if w.rate > 0:
                ahead = done / (w.rate / w.threads) - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    for st in stories:
        st.release()


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
    t0 = time.perf_counter()
    threads = [
        threading.Thread(target=_drive, args=(client, w, t, pool, counter), name=f"workload-{t}")
        for t in range(1, w.threads)
    ]
    for th in threads:
        th.start()
    batch_job = any(k in os.environ for k in ("SLURM_JOB_ID", "PBS_JOBID")) or os.environ.get("TERM") == "dumb"
    show = w.progress and comm.Get_rank() == 0 and not batch_job  # no bar redrawn into a job's output file
    if show:
        watcher = threading.Thread(target=_progress, args=(w, counter, comm.Get_size()), daemon=True)
        watcher.start()
    _drive(client, w, 0, pool, counter)
    for th in threads:
        th.join()
    client.flush()
    if show:
        counter.append(-1)  # tells the progress thread to finish
        watcher.join()
    return Result(sum(counter[: w.threads]), time.perf_counter() - t0)


def _progress(w: WorkloadConfig, counter: list[int], n_clients: int) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("client 0 of {task.fields[n]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("log", total=w.events, n=n_clients)
        while counter[-1] != -1:
            bar.update(task, completed=sum(counter[: w.threads]))
            time.sleep(0.1)
        bar.update(task, completed=sum(counter[: w.threads]))


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
