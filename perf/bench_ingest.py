"""End-to-end ingest: events/s and MB/s from clients to closed HDF5 windows, with ``log`` and ``log_many``,
for several payload sizes, plus CPU seconds of all ranks per million events; then, in the same job, the
baselines of ``bench_baselines`` for the same event counts, and every chronompi result as a ratio to them.

End to end = from the moment the clients start logging (after a barrier of the clients) until ``session()``
has returned on every rank, i.e. every event is in HDF5, every window index row written and every
segment file closed and renamed.

Standalone: ``mpirun -n 8 python perf/bench_ingest.py '{"payloads": [64], "events": 20000}' out.jsonl``
"""

from __future__ import annotations

import time
from typing import Any

import benchlib
import numpy as np
from bench_baselines import run_all
from benchlib import Recorder, cpu_seconds, main_guard, quiet_barrier, ratio, remove_store, scratch_dir, session_cfg

CHRONICLE, STORY = "perf", "ingest"


def per_client_events(params: dict[str, Any], payload: int, events: int | None = None) -> int:
    n = int(params.get("events", 20000) if events is None else events)
    return max(1, min(n, int(params.get("max_bytes", 1 << 24)) // max(payload, 1)))


def _pace(done: int, rate: float, t0: float, deadline: float) -> bool:
    """Sleep to hold ``rate`` events/s (0: as fast as possible); True once the deadline has passed."""
    if rate > 0:
        ahead = done / rate - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
    return time.perf_counter() > deadline


def _log_loop(
    story: Any, payload: int, mode: str, n: int, params: dict[str, Any], rate: float, sample_every: int, seconds: float
) -> tuple[int, list[tuple[int, int]]]:
    """Log ``n`` events (or until ``seconds`` passed); every ``sample_every``-th event is timed for durability.

    Returns (events logged, [(event timestamp, wall ns when its log call returned)]).
    """
    rng = np.random.default_rng(payload)
    many = max(1, int(params.get("many", 1000)))
    samples: list[tuple[int, int]] = []
    now = time.time_ns
    chunk = max(1, sample_every) if sample_every else 1000
    t0 = time.perf_counter()
    deadline = t0 + seconds
    done = 0
    if mode == "log":
        pool = [rng.integers(0, 256, payload, dtype=np.uint8).tobytes() for _ in range(64)]
        log = story.log
        while done < n:
            m = min(chunk, n - done)
            if sample_every:
                samples.append((log(pool[done & 63]), now()))
                for i in range(done + 1, done + m):
                    log(pool[i & 63])
            else:
                for i in range(done, done + m):
                    log(pool[i & 63])
            done += m
            if _pace(done, rate, t0, deadline):
                break
    else:
        rows = rng.integers(0, 256, (many, payload), dtype=np.uint8)
        log_many = story.log_many
        step = 0
        while done < n:
            m = min(many, n - done)
            ts = log_many(rows if m == many else rows[:m])
            if sample_every and step % max(1, sample_every // many) == 0:
                samples.append((int(ts[-1]), now()))
            step += 1
            done += m
            if _pace(done, rate, t0, deadline):
                break
    return done, samples


def chronompi_run(
    comm: Any,
    params: dict[str, Any],
    payload: int,
    mode: str,
    n: int,
    *,
    rate: float = 0.0,
    sample_every: int = 0,
    seconds: float | None = None,
    offsets: list[int] | None = None,
) -> dict[str, Any]:
    """One chronompi session over ``comm``: every client logs ``n`` events (``rate`` events/s per client if > 0).

    Collective. Returns the result on every rank (computed on rank 0, broadcast).
    """
    import chronompi
    from chronompi.session import last_summary

    seconds = float(params.get("seconds", 10.0) if seconds is None else seconds)
    rank = comm.Get_rank()
    root = scratch_dir(params, comm, f"{mode}-{payload}")
    method = benchlib.install_commit_hook() if sample_every else ""
    benchlib.COMMITS.clear()
    cfg = session_cfg(params, root)
    info: dict[str, Any] = {"role": "service"}
    quiet_barrier(comm)
    c0 = cpu_seconds()
    with chronompi.session(comm, cfg) as client:
        if client is not None:
            ccomm = client.comm
            if ccomm.Get_rank() == 0:
                client.create_chronicle(CHRONICLE)
            ccomm.Barrier()
            story = client.acquire_story(CHRONICLE, STORY)
            ccomm.Barrier()
            t_start = time.perf_counter()
            done, samples = _log_loop(story, payload, mode, n, params, rate, sample_every, seconds)
            t_logged = time.perf_counter()
            info = {
                "role": "client",
                "crank": ccomm.Get_rank(),
                "events": done,
                "t_start": t_start,
                "log_s": t_logged - t_start,
                "samples": samples,
                "roles": benchlib.roles_of_client(client),
                "waits": client.n_waits,
                "wait_s": client.wait_s,
            }
    quiet_barrier(comm)
    t_end = time.perf_counter()
    cpu = cpu_seconds() - c0
    if info["role"] == "client":
        info["e2e_s"] = t_end - info["t_start"]
    info["cpu_s"] = cpu
    info["commits"] = list(benchlib.COMMITS)
    info["summary"] = last_summary() if rank == 0 else None
    if offsets is None:
        offsets = benchlib.clock_offsets(comm)
    infos = comm.gather(info, root=0)
    out: dict[str, Any] = {}
    if rank == 0:
        assert infos is not None
        out = _summarise(infos, offsets, payload, mode, root, method, sample_every)
    remove_store(comm, root)
    return dict(comm.bcast(out, root=0))


def _summarise(
    infos: list[dict[str, Any]], offsets: list[int], payload: int, mode: str, root: str, method: str, sample_every: int
) -> dict[str, Any]:
    clients = [i for i in infos if i["role"] == "client"]
    c0 = next(i for i in clients if i["crank"] == 0)
    events = sum(i["events"] for i in clients)
    e2e = c0["e2e_s"]
    log_s = max(i["log_s"] for i in clients)
    cpu = sum(i["cpu_s"] for i in infos)
    roles = c0["roles"]
    summary = infos[0]["summary"] or {}
    graphers = summary.get("roles", {}).get("grapher", [])
    keepers = summary.get("roles", {}).get("keeper", [])
    res: dict[str, Any] = {
        "payload": payload,
        "mode": mode,
        "clients": len(clients),
        "keepers": len(roles["keepers"]),
        "graphers": len(roles["graphers"]),
        "events": events,
        "events_per_client": {str(r): i["events"] for r, i in enumerate(infos) if i["role"] == "client"},
        "bytes": events * payload,
        "seconds": round(e2e, 6),
        "events_per_s": round(events / e2e, 1),
        "mb_per_s": round(events * payload / e2e / 1e6, 3),
        "log_seconds": round(log_s, 6),
        "client_events_per_s": round(events / log_s, 1) if log_s > 0 else None,
        "cpu_s": round(cpu, 4),
        "cpu_s_per_million": round(cpu / events * 1e6, 3) if events else None,
        "events_stored": summary.get("events_stored"),
        "dropped": summary.get("dropped"),
        "backpressure_waits": sum(i.get("waits", 0) for i in clients),
        "backpressure_wait_s": round(sum(i.get("wait_s", 0.0) for i in clients), 4),
        "grapher_write_s": round(sum(g.get("write_s", 0.0) for g in graphers), 4),
        "windows_written": sum(g.get("windows", 0) for g in graphers),
        "keeper_batches": sum(k.get("batches", 0) for k in keepers),
        "cpu_s_by_role": _cpu_by_role(infos, roles),
        "roles": roles,
    }
    if sample_every:
        res.update(_durable(infos, offsets, root, method))
    return res


def _cpu_by_role(infos: list[dict[str, Any]], roles: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r, i in enumerate(infos):
        if r == roles["visor"]:
            role = "visor"
        elif r in roles["keepers"]:
            role = "keeper"
        elif r in roles["graphers"]:
            role = "grapher"
        else:
            role = "client"
        out[role] = round(out.get(role, 0.0) + i["cpu_s"], 4)
    return out


def _durable(infos: list[dict[str, Any]], offsets: list[int], root: str, method: str) -> dict[str, Any]:
    """Time from a sampled event's ``log`` returning to the commit of its window run, on rank 0's clock.

    Primary source: the ``committed`` column of the windows index (written by chronompi's grapher) when
    the store has one; else the benchmark-side writer hook. When both exist both are reported
    (``durable_*`` from the column, ``hook_durable_*`` from the hook) as a cross-check.
    """
    samples = []
    for r, i in enumerate(infos):
        for t, ret in i.get("samples", ()):
            samples.append((CHRONICLE, STORY, int(t), int(ret) + offsets[r]))
    hook = [
        (c, s, w, lo, hi, n, ns + offsets[r])
        for r, i in enumerate(infos)
        for c, s, w, lo, hi, n, ns in i.get("commits", ())
    ]
    out: dict[str, Any] = {}
    column = []
    if benchlib.has_committed_column():
        graphers = infos[0]["roles"]["graphers"] if "roles" in infos[0] else None
        graphers = graphers or next(i["roles"]["graphers"] for i in infos if i["role"] == "client")
        column = [
            (c, s, w, lo, hi, n, ns + offsets[graphers[g]])
            for c, s, w, lo, hi, n, ns, g in benchlib.read_committed(root)
        ]
    if column:
        out.update(benchlib.durability(samples, column))
        out["durable_method"] = "windows.committed"
        if hook:
            out.update({f"hook_{k}": v for k, v in benchlib.durability(samples, hook).items()})
    elif hook:
        out.update(benchlib.durability(samples, hook))
        out["durable_method"] = "writer-hook"
    else:
        out["durable_method"] = None
        out["durable_skipped"] = (
            "time to durable needs commit times: the windows index has no 'committed' column "
            f"and the benchmark-side SegmentWriter.append hook could not be installed ({method!r})"
        )
    return out


def vs(res: dict[str, Any], base: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """chronompi events/s divided by each baseline's events/s."""
    return {k: ratio(res["events_per_s"], b["events_per_s"]) for k, b in base.items()}


def main(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    offsets = benchlib.clock_offsets(comm)
    for payload in [int(p) for p in params.get("payloads", [0, 64, 1024, 65536])]:
        n = per_client_events(params, payload)
        results = []
        for mode in params.get("modes", ["log", "log_many"]):
            res = chronompi_run(
                comm, params, payload, mode, n, sample_every=int(params.get("sample_every", 0)), offsets=offsets
            )
            results.append(res)
        counts = {
            int(r): min(int(x[r]) for x in (res["events_per_client"] for res in results))
            for r in results[0]["events_per_client"]
        }
        counts = comm.bcast(counts, root=0)
        # batches for the storage baseline: the average run chronompi's graphers wrote
        stored = results[-1]
        storage_batch = max(1, stored["events"] // max(1, stored["windows_written"]))
        base = run_all(comm, params, results[0]["roles"], payload, counts, storage_batch)
        for b in base.values():
            rec.emit("baseline", payload=payload, clients=len(counts), **b)
        for res in results:
            rec.emit("chronompi", **res, vs=vs(res, base))


if __name__ == "__main__":
    main_guard(main, "ingest")
