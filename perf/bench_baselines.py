"""Baselines that chronompi is compared with, run in the same MPI job as chronompi's own runs.

- ``transport``: the same batches (``codec.encode_batch`` buffers of the sizes chronompi sends) Isent by
  the same client ranks to one receiver (the keeper's rank) that Irecvs and discards them.
- ``storage``: one process (the grapher's rank) appending the same events, pre-sorted, to h5py in
  chronompi's layout (``EVENT`` rows + uint8 payload heap + ``WINDOW`` index), in batches of the size
  chronompi's grapher wrote, data flushed before the index as chronompi does.
- ``logging``: Python ``logging`` with one ``FileHandler`` per client rank (one file each), then one
  process sorts every line into one ordered log; timed end to end.
- ``rpc``: ChronoLog's write path shape: one blocking send + reply per event to the keeper's rank.

Standalone: ``mpirun -n N python perf/bench_baselines.py '{"payloads": [64], "events": 20000}' out.jsonl``
(rank 1 is the receiver / RPC server, rank 2 the storage writer, ranks 3.. are clients, as in a
1 keeper + 1 grapher chronompi layout).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import Recorder, main_guard, measured, quiet_barrier, scratch_dir
from mpi4py import MPI

from chronompi import codec
from chronompi.store.format import WINDOW

TAG_DATA, TAG_ACK, TAG_STOP = 901, 902, 903


def events_per_batch(payload: int, batch_bytes: int) -> int:
    """Events in one chronompi batch: a batch is sent once its bytes (payload + record) reach batch_bytes."""
    return max(1, math.ceil(batch_bytes / (payload + codec.BATCH_RECORD.itemsize)))


def make_batch(payload: int, n: int, rank: int = 0) -> np.ndarray:
    rng = np.random.default_rng(rank)
    t = np.arange(n, dtype=np.int64) + time.time_ns()
    heap = rng.integers(0, 256, payload * n, dtype=np.uint8)
    return codec.encode_batch(
        codec.DATA,
        1 + rank,
        0,
        int(t[-1]) if n else 0,
        rank,
        t,
        np.arange(n, dtype=np.uint64),
        np.zeros(n, np.uint32),
        np.full(n, payload, np.uint32),
        heap,
    )


def transport(
    comm: Any, roles: dict[str, Any], payload: int, counts: dict[int, int], batch_bytes: int, inflight: int
) -> dict[str, Any]:
    """Clients Isend pre-encoded batches (at most ``inflight`` outstanding) to one receiver that discards them."""
    rank = comm.Get_rank()
    recv = roles["keepers"][0]
    k = events_per_batch(payload, batch_bytes)
    n = counts.get(rank, 0)
    plan = [k] * (n // k) + ([n % k] if n % k else [])
    total_msgs = comm.allreduce(len(plan) if rank in roles["clients"] else 0)
    total_events = sum(counts.values())
    bufs = {m: make_batch(payload, m, rank) for m in set(plan)} if rank in roles["clients"] else {}
    cap = codec.batch_capacity(batch_bytes, max(payload, 1))
    with measured(comm) as m:
        if rank == recv:
            slots = [np.empty(cap, np.uint8) for _ in range(min(32, max(total_msgs, 1)))]
            reqs = [comm.Irecv([s, MPI.BYTE], MPI.ANY_SOURCE, TAG_DATA) for s in slots]
            got = 0
            while got < total_msgs:
                done = MPI.Request.Waitsome(reqs)
                for i in done or ():
                    got += 1
                    reqs[i] = comm.Irecv([slots[i], MPI.BYTE], MPI.ANY_SOURCE, TAG_DATA)
            for r in reqs:
                r.Cancel()
            MPI.Request.Waitall(reqs)
        elif rank in roles["clients"]:
            pending: list[Any] = []
            for size in plan:
                if len(pending) >= inflight:
                    i = MPI.Request.Waitany(pending)
                    del pending[i]
                pending.append(comm.Isend([bufs[size], MPI.BYTE], recv, TAG_DATA))
            MPI.Request.Waitall(pending)
    return _rate("transport", m, total_events, total_events * payload, batch_events=k)


def storage(
    comm: Any,
    roles: dict[str, Any],
    payload: int,
    total: int,
    batch_events: int,
    root: str,
    events_chunk_rows: int = 16384,
    payload_chunk_bytes: int = 1 << 20,
) -> dict[str, Any]:
    """One process appends ``total`` pre-sorted events to one HDF5 file in chronompi's layout."""
    import h5py

    rank = comm.Get_rank()
    writer = roles["graphers"][0]
    batch_events = max(1, int(batch_events))
    path = Path(root) / "raw-storage.h5"
    if rank == writer:
        Path(root).mkdir(parents=True, exist_ok=True)
        clients = max(1, len(roles["clients"]))
        ev = np.empty(total, codec.EVENT)
        ev["time"] = time.time_ns() + np.arange(total, dtype=np.int64) * 1000
        ev["client"] = np.arange(total) % clients + 1
        ev["seq"] = np.arange(total) // clients
        ev["length"] = payload
        ev["offset"] = np.arange(total, dtype=np.uint64) * payload
        heap = np.random.default_rng(0).integers(0, 256, total * payload, dtype=np.uint8)
    with measured(comm) as m:
        if rank == writer:
            with h5py.File(path, "w", libver="latest") as f:
                g = f.create_group("perf").create_group("raw")
                e_ds = g.create_dataset(
                    "events", (0,), maxshape=(None,), dtype=codec.EVENT, chunks=(events_chunk_rows,)
                )
                p_ds = g.create_dataset(
                    "payload", (0,), maxshape=(None,), dtype=np.uint8, chunks=(payload_chunk_bytes,)
                )
                w_ds = g.create_dataset("windows", (0,), maxshape=(None,), dtype=WINDOW, chunks=(256,))
                for w, a in enumerate(range(0, total, batch_events)):
                    b = min(total, a + batch_events)
                    e_ds.resize((b,))
                    e_ds[a:b] = ev[a:b]
                    if payload:
                        p_ds.resize((b * payload,))
                        p_ds[a * payload : b * payload] = heap[a * payload : b * payload]
                    f.flush()  # data before the index that points at it, as chronompi's writer does
                    row = np.zeros(1, WINDOW)  # by field name: works whatever columns WINDOW has
                    row["window"], row["first_row"], row["n_rows"] = w, a, b - a
                    row["t_min"], row["t_max"] = ev["time"][a], ev["time"][b - 1]
                    if "committed" in (WINDOW.names or ()):
                        row["committed"] = time.time_ns()
                    w_ds.resize((w + 1,))
                    w_ds[w : w + 1] = row
                    f.flush()
    if rank == writer:
        shutil.rmtree(root, ignore_errors=True)
    return _rate("storage", m, total, total * payload, batch_events=batch_events)


def _text_pool(payload: int) -> list[str]:
    rng = np.random.default_rng(1)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/", np.uint8)
    return [alphabet[rng.integers(0, 64, payload)].tobytes().decode() for _ in range(64)]


def logging_files(
    comm: Any, roles: dict[str, Any], payload: int, counts: dict[int, int], root: str, seconds: float = 1e9
) -> dict[str, Any]:
    """Every client logs with Python logging to its own file; one process then merges all into time order.

    Payloads are ASCII text of the same length (logging writes text lines). Each line carries
    ``time_ns rank seq`` so the merge can produce the same total order as chronompi's.
    """
    rank = comm.Get_rank()
    sorter = roles["graphers"][0]
    n = counts.get(rank, 0)
    d = Path(root)
    if rank == 0:
        d.mkdir(parents=True, exist_ok=True)
    quiet_barrier(comm)
    pool = _text_pool(payload) if rank in roles["clients"] else []
    done = 0
    with measured(comm) as m:
        if rank in roles["clients"]:
            lg = logging.getLogger(f"perf.baseline.r{rank}")
            lg.propagate = False
            lg.setLevel(logging.INFO)
            h = logging.FileHandler(d / f"rank{rank}.log", mode="w")
            h.setFormatter(logging.Formatter("%(message)s"))
            lg.addHandler(h)
            info, now = lg.info, time.time_ns
            deadline = time.perf_counter() + seconds
            while done < n:
                for i in range(done, min(n, done + 256)):
                    info("%d %d %d %s", now(), rank, i, pool[i & 63])
                done = min(n, done + 256)
                if time.perf_counter() > deadline:
                    break
            lg.removeHandler(h)
            h.close()
        quiet_barrier(comm)  # every file is complete
        total = int(comm.allreduce(done))
        if rank == sorter:
            lines: list[str] = []
            for p in sorted(d.glob("rank*.log")):
                with p.open() as f:
                    lines.extend(f)

            def key(line: str) -> tuple[int, int, int]:
                a, b, c, _ = line.split(" ", 3)
                return int(a), int(b), int(c)

            lines.sort(key=key)
            with (d / "merged.log").open("w") as f:
                f.writelines(lines)
            assert len(lines) == total, (len(lines), total)
    quiet_barrier(comm)
    if rank == 0:
        shutil.rmtree(d, ignore_errors=True)
    return _rate("logging", m, total, total * payload)


def rpc(comm: Any, roles: dict[str, Any], payload: int, counts: dict[int, int], seconds: float) -> dict[str, Any]:
    """One blocking send + blocking reply per event to the keeper's rank (at most ``seconds`` per client)."""
    rank = comm.Get_rank()
    server = roles["keepers"][0]
    clients = roles["clients"]
    cap = codec.batch_capacity(0, max(payload, 1))
    sent = 0
    with measured(comm) as m:
        if rank == server:
            buf = np.empty(cap, np.uint8)
            ack = np.zeros(1, np.int64)
            st = MPI.Status()
            stopped = 0
            while stopped < len(clients):
                comm.Recv([buf, MPI.BYTE], MPI.ANY_SOURCE, MPI.ANY_TAG, st)
                if st.Get_tag() == TAG_STOP:
                    stopped += 1
                else:
                    comm.Send([ack, MPI.INT64_T], st.Get_source(), TAG_ACK)
        elif rank in clients:
            ev = make_batch(payload, 1, rank)
            ack = np.zeros(1, np.int64)
            n = counts.get(rank, 0)
            deadline = time.perf_counter() + seconds
            while sent < n:
                for _ in range(min(64, n - sent)):
                    comm.Send([ev, MPI.BYTE], server, TAG_DATA)
                    comm.Recv([ack, MPI.INT64_T], server, TAG_ACK)
                    sent += 1
                if time.perf_counter() > deadline:
                    break
            comm.Send([ev[:0], MPI.BYTE], server, TAG_STOP)
    total = int(comm.allreduce(sent))
    return _rate("rpc", m, total, total * payload)


def _rate(name: str, m: dict[str, float], events: int, nbytes: int, **extra: Any) -> dict[str, Any]:
    wall = m["wall_s"]
    return {
        "baseline": name,
        "events": events,
        "bytes": nbytes,
        "seconds": round(wall, 6),
        "events_per_s": round(events / wall, 1) if wall > 0 else 0.0,
        "mb_per_s": round(nbytes / wall / 1e6, 3) if wall > 0 else 0.0,
        "cpu_s": round(m["cpu_s"], 4),
        "cpu_s_per_million": round(m["cpu_s"] / events * 1e6, 3) if events else None,
        **extra,
    }


def run_all(
    comm: Any,
    params: dict[str, Any],
    roles: dict[str, Any],
    payload: int,
    counts: dict[int, int],
    storage_batch: int,
    which: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every baseline for one payload size, with ``counts[rank]`` events per client rank."""
    which = which or list(params.get("baselines", ["transport", "storage", "logging", "rpc"]))
    seconds = float(params.get("baseline_seconds", 1e9))
    slow = {r: min(n, int(params.get("baseline_events", n))) for r, n in counts.items()}
    cc = params.get("chronompi", {}).get("client", {})
    batch_bytes = int(cc.get("batch_bytes", 256 * 1024))
    inflight = int(cc.get("max_inflight", 4))
    out: dict[str, dict[str, Any]] = {}
    for name in which:
        root = scratch_dir(params, comm, f"baseline-{name}")
        if name == "transport":
            out[name] = transport(comm, roles, payload, counts, batch_bytes, inflight)
        elif name == "storage":
            out[name] = storage(comm, roles, payload, sum(counts.values()), storage_batch, root)
        elif name == "logging":
            out[name] = logging_files(comm, roles, payload, slow, root, seconds)
        elif name == "rpc":
            out[name] = rpc(comm, roles, payload, slow, float(params.get("rpc_seconds", seconds)))
        else:
            raise ValueError(f"unknown baseline {name!r}")
        quiet_barrier(comm)
        if comm.Get_rank() == 0 and os.path.isdir(root):
            shutil.rmtree(root, ignore_errors=True)
    return out


def main(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    size = comm.Get_size()
    if size < 4:
        raise SystemExit("bench_baselines needs at least 4 ranks (receiver, writer and clients)")
    roles = {"visor": 0, "keepers": [1], "graphers": [2], "clients": list(range(3, size))}
    events = int(params.get("events", 20000))
    for payload in params.get("payloads", [64]):
        n = max(1, min(events, int(params.get("max_bytes", 1 << 24)) // max(int(payload), 1)))
        counts = {r: n for r in roles["clients"]}
        res = run_all(comm, params, roles, int(payload), counts, int(params.get("storage_batch", 10000)))
        for r in res.values():
            rec.emit("baseline", payload=int(payload), clients=len(roles["clients"]), **r)


if __name__ == "__main__":
    main_guard(main, "baselines")
