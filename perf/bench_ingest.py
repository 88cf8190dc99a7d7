"""End-to-end ingest: chronompi's ``log`` and ``log_many`` against the peers an HPC user would pick
instead (ADIOS2 BP5 and h5py, one file per client rank; ``peers/``), on the same events, over several
rounds; then the baselines of ``bench_baselines`` once per payload. ``run.py`` runs every timed run as a
job of its own (``only``: :func:`one_run`) and aggregates them in a last job (``finish``); run alone (or
``isolate=false``), this one job runs them all in rounds.

Every client rank holds a fixed number of distinct events (``events.py``), made before any timing (the
ceiling: ``log`` with ready ``bytes``, ``log_many`` with rows of an array), or makes each event in the timed
loop as an application does (``log_made``: one ``bytes`` a call; ``log_many_made``: lists of ``many`` of
them; the peers' ``made`` shape; ``events.made``, the bytes ``perf/user_ingest.py`` makes). A
chronompi run is timed from a barrier of all ranks before ``chronompi.session()`` is entered until
``session()`` has returned on every rank (every event in HDF5, every window index row written, every
segment closed): ``seconds`` / ``events_per_s``. The same run also reports the time from the clients'
barrier just before their first ``log`` (``seconds_from_first_log``). A peer run is timed from a barrier
to every file closed. ``harness.run_rounds`` alternates the systems over ``rounds`` rounds; each system's
row has the median, min and max events/s and the load average before and after.

Standalone: ``mpirun -n 8 python perf/bench_ingest.py '{"payloads": [64], "events": 20000}' out.jsonl``
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import benchlib
from bench_baselines import run_all
from benchlib import Recorder, cpu_seconds, main_guard, quiet_barrier, remove_store, scratch_dir, session_cfg
from events import Events, made, make_events
from harness import aggregate, loadavg, peer_of, peer_run, ratios, run_rounds, system_names, writers_comm

CHRONICLE, STORY = "perf", "ingest"
LABELS = {
    "log_many": "chronompi log_many (1000 per call)",
    "log_made": "chronompi log, each event made in the loop",
    "log_many_made": "chronompi log_many, lists of 1000 events made in the loop",
}


def per_client_events(params: dict[str, Any], payload: int, events: int | None = None) -> int:
    """Events per client for a payload size: ``events``, but at most ``max_bytes`` of payload per client."""
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
    story: Any, events: Events, mode: str, params: dict[str, Any], rate: float, sample_every: int, seconds: float
) -> tuple[int, list[tuple[int, int]]]:
    """Log every event of ``events`` (or until ``seconds`` passed); every ``sample_every``-th is timed.

    Returns (events logged, [(event timestamp, wall ns when its log call returned)]).
    """
    n = events.n
    many = max(1, int(params.get("many", 1000)))
    samples: list[tuple[int, int]] = []
    now = time.time_ns
    chunk = max(1, sample_every) if sample_every else 4096
    t0 = time.perf_counter()
    deadline = t0 + seconds
    done = 0
    rank, w = events.rank, events.payload
    if mode in ("log", "log_made"):
        # log: the events' bytes made before timing (cached on the Events); log_made: each made in the loop
        items = events.as_bytes() if mode == "log" else None
        log = story.log
        while done < n:
            m = min(chunk, n - done)
            first = done
            if sample_every:
                samples.append((log(items[done] if items is not None else made(rank, done, w)), now()))
                first += 1
            if items is not None:
                for p in items[first : done + m]:
                    log(p)
            else:
                for i in range(first, done + m):
                    log(made(rank, i, w))
            done += m
            if _pace(done, rate, t0, deadline):
                break
    else:
        rows = events.rows
        log_many = story.log_many
        step = 0
        while done < n:
            m = min(many, n - done)
            if mode == "log_many":
                ts = log_many(rows[done : done + m])
            else:  # log_many_made: lists of events made in the loop
                ts = log_many([made(rank, i, w) for i in range(done, done + m)])
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
    events: Events | None = None,
    rate: float = 0.0,
    sample_every: int = 0,
    seconds: float | None = None,
    offsets: list[int] | None = None,
) -> dict[str, Any]:
    """One chronompi session over ``comm``: every client logs ``n`` events (``rate`` events/s per client if > 0).

    ``events`` (this rank's, made by the caller) or else made here before the timing starts. ``seconds``
    caps the logging time (paced runs); None takes ``params["seconds"]``, and when that is absent or 0 the
    clients log all ``n`` events. Collective. Returns the result on every rank (computed on rank 0).
    """
    import chronompi
    from chronompi.session import last_summary

    cap = params.get("seconds") if seconds is None else seconds
    cap = float(cap) if cap else math.inf
    rank = comm.Get_rank()
    if events is None or events.n != n or events.payload != payload:
        events = make_events(rank, payload, n)
    if mode == "log":
        events.as_bytes()
    root = scratch_dir(params, comm, f"{mode}-{payload}")
    method = benchlib.install_commit_hook() if sample_every else ""
    benchlib.COMMITS.clear()
    cfg = session_cfg(params, root)
    info: dict[str, Any] = {"role": "service"}
    la0 = loadavg()
    quiet_barrier(comm)
    c0, t0 = cpu_seconds(), time.perf_counter()
    with chronompi.session(comm, cfg) as client:
        if client is not None:
            ccomm = client.comm
            if ccomm.Get_rank() == 0:
                client.create_chronicle(CHRONICLE)
            ccomm.Barrier()
            story = client.acquire_story(CHRONICLE, STORY)
            ccomm.Barrier()
            t_start, t_start_ns = time.perf_counter(), time.time_ns()
            done, samples = _log_loop(story, events, mode, params, rate, sample_every, cap)
            t_logged = time.perf_counter()
            info = {
                "role": "client",
                "crank": ccomm.Get_rank(),
                "events": done,
                "t_start": t_start,
                "t_start_ns": t_start_ns,
                "log_s": t_logged - t_start,
                "samples": samples,
                "roles": benchlib.roles_of_client(client),
                "waits": client.n_waits,
                "wait_s": client.wait_s,
            }
    info["t_end_ns"] = time.time_ns()  # session() has returned here: every event stored, every file closed
    quiet_barrier(comm)
    t_end = time.perf_counter()
    cpu = cpu_seconds() - c0
    info["session_s"] = t_end - t0
    info["cpu_s"] = cpu
    info["commits"] = list(benchlib.COMMITS)
    info["summary"] = last_summary() if rank == 0 else None
    info["loadavg"] = [la0, loadavg()]
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
    # from the first client's first log call to the last client's session() returned, on rank 0's clock (client
    # 0's clock alone started late: it can leave the barrier after other clients have begun)
    on0 = [
        (i["t_start_ns"] + offsets[r], i["t_end_ns"] + offsets[r]) for r, i in enumerate(infos) if i["role"] == "client"
    ]
    e2e = (max(b for _, b in on0) - min(a for a, _ in on0)) / 1e9
    session_s = infos[0]["session_s"]  # rank 0: barrier before session() .. barrier after it, all ranks
    log_s = max(i["log_s"] for i in clients)
    cpu = sum(i["cpu_s"] for i in infos)
    roles = c0["roles"]
    summary = infos[0]["summary"] or {}
    graphers = summary.get("roles", {}).get("grapher", [])
    keepers = summary.get("roles", {}).get("keeper", [])
    res: dict[str, Any] = {
        "system": f"chronompi {mode}",
        "label": LABELS.get(mode, f"chronompi {mode}"),
        "payload": payload,
        "mode": mode,
        "clients": len(clients),
        "keepers": len(roles["keepers"]),
        "graphers": len(roles["graphers"]),
        "events": events,
        "events_per_client": {str(r): i["events"] for r, i in enumerate(infos) if i["role"] == "client"},
        "bytes": events * payload,
        "seconds": round(session_s, 6),
        "events_per_s": round(events / session_s, 1),
        "mb_per_s": round(events * payload / session_s / 1e6, 3),
        "seconds_from_first_log": round(e2e, 6),
        "events_per_s_from_first_log": round(events / e2e, 1),
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
        "cpu_s_by_role": (by_role := _cpu_by_role(infos, roles)),
        "cpu_s_per_million_by_role": {k: round(v / events * 1e6, 3) for k, v in by_role.items()} if events else None,
        "roles": roles,
        "loadavg_start": infos[0]["loadavg"][0],
        "loadavg_end": infos[0]["loadavg"][1],
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


def warm_up(comm: Any, params: dict[str, Any], mode: str = "log_many") -> tuple[dict[str, Any], Events]:
    """A short untimed chronompi session (``mode``, 2,000 64 B events a client): first-use costs out of the
    timed runs. Returns the session's layout as the clients saw it (which ranks are clients) and its events.
    """
    ev = make_events(comm.Get_rank(), 64, 2000)
    res = chronompi_run(comm, params, 64, mode, ev.n, events=ev, offsets=[0] * comm.Get_size())
    return dict(res["roles"]), ev


def _peer_batch(params: dict[str, Any]) -> int:
    """Events per write of a peer: ``peer_batch``, else as many as a ``log_many`` call gets."""
    return int(params.get("peer_batch", params.get("many", 1000)))


def _ready_bytes(names: list[str]) -> bool:
    """Whether any of these systems is fed ready ``bytes`` objects (``log``, a peer's ``events`` shape)."""
    return any(name == "chronompi log" or name.endswith(" events") for name in names)


def _systems(
    comm: Any,
    wcomm: Any,
    params: dict[str, Any],
    names: list[str],
    payload: int,
    events: Events,
    offsets: list[int],
) -> list[tuple[str, Any]]:
    """(name, collective callable running it once) for each system of ``names`` on ``events``."""
    batch = _peer_batch(params)
    sample_every = int(params.get("sample_every", 0))
    out: list[tuple[str, Any]] = []
    for name in names:
        if name.startswith("chronompi "):
            run = functools.partial(
                chronompi_run, comm, params, payload, name.split(" ", 1)[1], events.n, events=events, offsets=offsets
            )
            out.append((name, functools.partial(run, sample_every=sample_every)))
        else:
            peer, shape = peer_of(name, params)
            out.append((name, functools.partial(peer_run, comm, wcomm, params, peer, events, batch, shape)))
    return out


def _emit_rows(
    comm: Any,
    params: dict[str, Any],
    rec: Recorder,
    payload: int,
    runs: dict[str, list[dict[str, Any]]],
    roles: dict[str, Any],
    skipped: dict[str, str],
    jobs: str,
) -> None:
    """One payload's rows: each system's rounds aggregated, the baselines run once, ratios. Collective.

    ``jobs``: how the runs were launched, in every row: ``one`` (all in this job) or ``one per run``."""
    modes = [name.split(" ", 1)[1] for name in runs if name.startswith("chronompi ")]
    rows = {name: aggregate(rs) for name, rs in runs.items()}
    counts = {int(r): per_client_events(params, payload) for r in roles["clients"]}
    # batches for the storage baseline: the average run chronompi's graphers wrote
    stored = rows[f"chronompi {modes[-1]}"]
    storage_batch = max(1, stored["events"] // max(1, stored["windows_written"]))
    base = run_all(comm, params, roles, payload, counts, storage_batch)
    for b in base.values():
        rec.emit("baseline", payload=payload, clients=len(counts), **b)
    peer_rows = {name: row for name, row in rows.items() if not name.startswith("chronompi ")}
    for name, why in skipped.items():
        rec.emit("peer", system=name, payload=payload, skipped=why)
    for row in peer_rows.values():
        rec.emit("peer", **row, vs=ratios(row, peer_rows), jobs=jobs)
    for mode in modes:
        row = rows[f"chronompi {mode}"]
        rec.emit("chronompi", **row, vs={**ratios(row, base), **ratios(row, peer_rows)}, jobs=jobs)


def one_run(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    """A job of one system (``params["only"]``) and one payload, as ``run.py`` launches them by default: one timed
    run, its result a ``run`` line. The run is the job's first, as in a one-off run of a user's (and by default
    in ``perf/user_ingest.py``): it pays the first session's start-up (the service ranks load numpy and h5py
    while the clients log); ``warm_runs`` K > 0 runs the same system on 2,000 small events K times first.

    A chronompi system runs on the whole layout; a peer on as many ranks as chronompi has clients (``run.py``
    starts its job so), every rank a writer, as a user runs ADIOS2 or h5py (``perf/user_ingest.py``)."""
    name, payload = str(params["only"]), int(params["payloads"][0])
    rank = comm.Get_rank()
    warm = int(params.get("warm_runs", 0))
    if name.startswith("chronompi "):
        offsets = benchlib.clock_offsets(comm)
        for _ in range(warm):
            warm_up(comm, params, name.split(" ", 1)[1])
    else:  # every rank of a peer's job writes
        offsets = [0] * comm.Get_size()
        peer, shape = peer_of(name, params)
        for _ in range(warm):
            peer_run(comm, comm, params, peer, make_events(rank, 64, 2000), _peer_batch(params), shape)
    events = make_events(rank, payload, per_client_events(params, payload))
    if _ready_bytes([name]):
        events.as_bytes()
    ((_, run),) = _systems(comm, comm, params, [name], payload, events, offsets)
    quiet_barrier(comm)
    res = run()
    rec.emit("run", **res, round=int(params.get("round", 0)), tag=params.get("runs_tag"))


def finish(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    """After the one-system jobs of a payload: their ``run`` lines (``params["finish"]``, a file) aggregated into
    the rows and ratios, and the baselines, run here once on chronompi's layout."""
    import json

    payload = int(params["payloads"][0])
    runs: dict[str, list[dict[str, Any]]] = {}
    if comm.Get_rank() == 0:
        with open(params["finish"]) as f:
            for line in f:
                r = json.loads(line)
                if r.get("kind") == "run" and r.get("payload") == payload and r.get("tag") == params.get("runs_tag"):
                    for key in ("bench", "kind", "job", "machine", "tag"):  # the job's; its rows get this job's
                        r.pop(key, None)
                    runs.setdefault(r.pop("system"), []).append(r)
    runs = comm.bcast(runs, root=0)
    names, skipped = system_names(params)
    runs = {name: [{**r, "system": name} for r in runs[name]] for name in names if name in runs}
    roles = next(r["roles"] for name, rs in runs.items() if name.startswith("chronompi ") for r in rs)
    _emit_rows(comm, params, rec, payload, runs, roles, skipped, "one per run")


def main(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    if params.get("only"):
        return one_run(comm, params, rec)
    if params.get("finish"):
        return finish(comm, params, rec)
    # every system in rounds in this one job (run.py with isolate=false; standalone)
    offsets = benchlib.clock_offsets(comm)
    rank = comm.Get_rank()
    names, skipped = system_names(params)
    roles, warm = warm_up(comm, params)
    wcomm = writers_comm(comm, roles["clients"])
    batch = _peer_batch(params)
    used = {p.name: p for p, _ in (peer_of(name, params) for name in names if not name.startswith("chronompi "))}
    for peer in used.values():  # untimed too
        peer_run(comm, wcomm, params, peer, warm, batch)
    for payload in [int(p) for p in params.get("payloads", [64, 1024])]:
        n = per_client_events(params, payload)
        events = make_events(rank, payload, n)  # every rank (only clients write): the same events for all
        if _ready_bytes(names):
            events.as_bytes()
        systems = _systems(comm, wcomm, params, names, payload, events, offsets)
        runs = run_rounds(comm, systems, int(params.get("rounds", 3)))
        del events, systems  # free this payload's events before the baselines
        _emit_rows(comm, params, rec, payload, runs, roles, skipped, "one")
    from mpi4py import MPI

    if wcomm != MPI.COMM_NULL:
        wcomm.Free()


if __name__ == "__main__":
    main_guard(main, "ingest")
