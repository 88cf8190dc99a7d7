"""Parsl monitoring with HTEX worker pools on client ranks: rate and lag at 1, 2 and 4 pools vs Parsl's own sink.

``python perf/bench_parsl_pool.py '{"tasks": 20000}' [out.jsonl]`` (no mpirun: it launches the jobs) runs
(``python perf/bench_parsl_pool.py quick``: parts 1 and 2 at reduced size, 1 and 2 pools, under 2 minutes)

1. ``channel`` (no MPI): messages/s through the local channel (one Unix datagram socket, 1/2/4 sender
   processes), encoding in the sender included and not; a multiprocessing queue (pickled, what HTEX
   workers use towards their manager) beside it.
2. ``job`` per pool count P, ``mpirun -n 4+P`` (visor, keeper, grapher, driver, P pool ranks), on
   bench_parsl.py's stream (per task 3 TASK_INFO, 2 WORKER_TASK_INFO, 1 RESOURCE_INFO; NODE_INFO and
   BLOCK_INFO): first Parsl's ``DatabaseManager`` -> SQLite gets the whole stream through its queue,
   timed from the first put to ``close()`` (as in bench_parsl.py); then chronompi: the driver's
   ChronompiHub gets the DFK's part (TASK, WORKFLOW, NODE, BLOCK) through its queue while each pool
   rank, started through ChronompiPoolProvider like an HTEX block, runs ``W`` sender processes that send
   its share of the worker messages (WORKER_TASK_INFO, RESOURCE_INFO) through ChronompiPoolRadio, as
   workers do; timed from a common start to the pools' and the hub's close. Each message is stamped
   when it is sent; its lag is the time from that stamp to the commit of the window holding it
   (the store's windows index, ``committed``).
3. ``workflow`` (2 pools, one worker each): a real HTEX workflow of no-op tasks, with resource
   monitoring every 0.2 s and without (interval 0: no monitor fork per task, so more tasks/s): the
   rate at which the DFK produced messages against the time the hub's thread spent recording them,
   and the lag of every message (its stamp -> commit).

Writes JSON lines (default perf/results/parsl_pool.jsonl) and perf/results/parsl_pool.png.
mpi4py and chronompi are imported inside the functions: spawned processes re-import this module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pickle
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DFK_KINDS = {"WORKFLOW_INFO", "TASK_INFO", "NODE_INFO", "BLOCK_INFO"}
#: ``python perf/bench_parsl_pool.py quick``: the ratio to Parsl's sink at reduced size, in under 2 minutes
#: (20,000 tasks = 120,442 messages, 1 and 2 pools, no workflow part; ~45 s on the 2-core VM)
QUICK = {"tasks": 20000, "pools": [1, 2], "workflow_tasks": 0, "workflow_tasks_fast": 0, "channel_messages": 20000}
WORKER_KINDS = {"WORKER_TASK_INFO", "RESOURCE_INFO"}


# -- 1. the channel, without MPI ------------------------------------------------------------------------------
def _channel_sender(path: str, msgs: list[Any], raw: bool, go: Any) -> None:
    from chronompi.parsl.channel import ChannelSender
    from chronompi.parsl.sink import encode_tagged

    sender = ChannelSender(path)
    if raw:
        datagrams = [k.encode() + b"\n" + p for k, p in (encode_tagged(m) for m in msgs)]
        go.wait()
        for d in datagrams:
            sender.sock.send(d)
    else:
        go.wait()
        for m in msgs:
            sender.send(m)


def _queue_sender(q: Any, msgs: list[Any], go: Any) -> None:
    go.wait()
    for m in msgs:
        q.put(m)


def bench_channel(n: int) -> list[dict[str, Any]]:
    import multiprocessing as mp

    from bench_parsl import make_stream

    from chronompi.parsl.channel import ChannelReceiver

    worker = [m for m in make_stream(n // 3 + 1) if m[0].name in ("WORKER_TASK_INFO", "RESOURCE_INFO")][:n]
    ctx = mp.get_context("fork")
    out = []
    for how in ("dgram, encode in sender", "dgram, pre-encoded", "multiprocessing.Queue (pickle)"):
        for senders in (1, 2, 4):
            go = ctx.Event()
            share = [worker[i::senders] for i in range(senders)]
            if how.startswith("dgram"):
                rx = ChannelReceiver()
                got = [0]

                def count(_k: str, _p: bytes, got: list[int] = got) -> None:
                    got[0] += 1

                th = threading.Thread(target=rx.serve, args=(count,))
                th.start()
                procs = [ctx.Process(target=_channel_sender, args=(rx.path, s, "pre" in how, go)) for s in share]
            else:
                q = ctx.Queue()
                procs = [ctx.Process(target=_queue_sender, args=(q, s, go)) for s in share]
            for p in procs:
                p.start()
            time.sleep(0.5)  # senders ready (encoded, connected)
            t0 = time.perf_counter()
            go.set()
            if how.startswith("dgram"):
                for p in procs:
                    p.join()
                rx.stop()
                th.join()
                rx.close()
                received = got[0]
            else:
                for _ in range(len(worker)):
                    q.get()
                received = len(worker)
                for p in procs:
                    p.join()
            t = time.perf_counter() - t0
            r = {"part": "channel", "channel": how, "senders": senders, "messages": received, "seconds": t}
            r["msgs_per_s"] = received / t
            print(f"channel {how:34} {senders} sender(s): {r['msgs_per_s']:>10,.0f} msg/s")
            out.append(r)
    return out


# -- 2. the job: Parsl's sink, then chronompi with P pool ranks --------------------------------------------------
def send_share(spec_path: str) -> int:
    """A pool's worker processes (started by the pool rank like process_worker_pool): send its share."""
    import multiprocessing as mp

    spec = json.loads(Path(spec_path).read_text())
    msgs = pickle.loads(Path(spec["messages"]).read_bytes())
    workers = int(spec["workers"])
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_send_stamped, args=(msgs[i::workers], spec["go"])) for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return max(p.exitcode or 0 for p in procs)


def _send_stamped(msgs: list[Any], go: str) -> None:
    from chronompi.parsl import ChronompiPoolRadio

    radio = ChronompiPoolRadio()
    radio.create_sender()  # connect before the start
    Path(f"{go}.ready.{os.getpid()}").touch()
    while not os.path.exists(go):
        time.sleep(0.001)
    now = dt.datetime.now
    for kind, body in msgs:
        body["timestamp"] = now()
        radio.create_sender().send((kind, body))  # per message, as Parsl's monitor_wrapper does
    Path(f"{go}.done.{os.getpid()}").write_text(repr(time.time()))


def push_stamped(q: Any, msgs: list[Any], puts: list[float] | None = None) -> None:
    """Put every message into the hub's queue, each stamped now; ``puts``: put times of status makers."""
    now, clock = dt.datetime.now, time.perf_counter
    for kind, body in msgs:
        for b in body if isinstance(body, list) else [body]:
            if "timestamp" in b:
                b["timestamp"] = now()
        q.put((kind, body))
        if puts is not None and kind.name in ("TASK_INFO", "WORKER_TASK_INFO"):
            puts.append(clock())


def push_parsl(hub: Any, msgs: list[Any], db: Path) -> dict[str, Any]:
    """Parsl's own sink: put everything, wait until SQLite holds every status row, then close().

    (bench_parsl.py calls close() at once: Parsl then gives its database manager 30 s before it
    terminates it, and with a large backlog the queue's feeder then never finishes.) A poller counts
    the status rows every 0.1 s: the k-th status row's lag is when the count reached k minus the put
    of the k-th message that makes one (TASK_INFO, WORKER_TASK_INFO): approximate, to 0.1 s.
    """
    import sqlite3

    import benchlib

    run_dir = str(db.parent / "ri-parsl")
    hub.start(run_dir, run_dir, None)
    q = hub.resource_msgs
    want = sum(m[0].name in ("TASK_INFO", "WORKER_TASK_INFO") for m in msgs)
    puts: list[float] = []
    t0 = time.perf_counter()
    push_stamped(q, msgs, puts)
    seen: list[tuple[float, int]] = []
    while not seen or seen[-1][1] < want:
        time.sleep(0.1)
        try:
            con = sqlite3.connect(db, timeout=5)
            try:
                n = con.execute("SELECT count(*) FROM status").fetchone()[0]
            finally:
                con.close()
        except sqlite3.OperationalError:
            continue  # the table is not there yet
        seen.append((time.perf_counter(), n))
    hub.close()
    total = time.perf_counter() - t0
    lags, j = [], 0
    for k, put in enumerate(puts, 1):
        while seen[j][1] < k:
            j += 1
        lags.append((seen[j][0] - put) * 1e3)
    p50, p99, mx = benchlib.pct(lags)
    return {
        "sink": "parsl DatabaseManager -> SQLite",
        "seconds": total,
        "msgs_per_s": len(msgs) / total,
        "bytes_per_msg": os.path.getsize(db) / len(msgs),
        "lag_ms_p50": round(p50, 1),
        "lag_ms_p99": round(p99, 1),
        "lag_ms_max": round(mx, 1),
    }


def lag_ms(store: Path, per_story: int = 5000) -> dict[str, Any]:
    """Message stamp -> commit of its window, for a sample of every story's events."""
    import benchlib

    import chronompi
    from chronompi.parsl import decode_message

    commits = [c[:7] for c in benchlib.read_committed(str(store))]
    samples = []
    with chronompi.open_store(store) as st:
        for story in st.stories("parsl"):
            ev = st.replay("parsl", story)
            step = max(1, len(ev) // per_story)
            for e in ev[::step]:
                _kind, body = decode_message(e["payload"])
                bodies = body if isinstance(body, list) else [body]
                ts = bodies[0].get("timestamp") if bodies and isinstance(bodies[0], dict) else None
                if isinstance(ts, dt.datetime):
                    samples.append(("parsl", story, int(e["time"]), int(ts.timestamp() * 1e9)))
    out: dict[str, Any] = {}
    for group, stories in (("", None), ("workers_", WORKER_KINDS), ("dfk_", DFK_KINDS)):
        some = [x for x in samples if stories is None or x[1] in stories]
        d = benchlib.durability(some, commits)
        out.update({f"{group}{k.replace('durable_', 'lag_')}": v for k, v in d.items()})
    return out


@contextlib.contextmanager
def driver_session(prefix: str) -> Iterator[tuple[Path, Any, Any]]:
    """A session in a fresh directory (rank 0's) with pool ranks: (directory, client, provider or None)."""
    from mpi4py import MPI

    import chronompi
    from chronompi.parsl import serve_pools

    work = Path(MPI.COMM_WORLD.bcast(tempfile.mkdtemp(prefix=prefix), root=0))
    with chronompi.session(cfg={"storage": {"root": str(work / "store")}}) as client:
        yield work, client, None if client is None else serve_pools(client)


def job(params: dict[str, Any], out: Path) -> None:
    from chronompi.parsl import ChronompiHub

    tasks, workers = int(params["tasks"]), int(params.get("workers", 2))
    with driver_session("bench-pool-") as (work, client, provider):
        if provider is None:
            return  # service ranks, pool ranks
        store = work / "store"
        from bench_parsl import make_stream
        from parsl.monitoring import MonitoringHub

        pools = len(provider.ranks)
        msgs = make_stream(tasks)
        db = work / "parsl.db"
        parsl_hub = MonitoringHub(logging_endpoint=f"sqlite:///{db}", resource_monitoring_enabled=False)
        base = push_parsl(parsl_hub, msgs, db)
        dfk = [m for m in msgs if m[0].name in DFK_KINDS]
        wrk = [m for m in msgs if m[0].name not in DFK_KINDS]
        go = work / "go"
        provider.script_dir = str(work)
        for p in range(pools):
            (work / f"share{p}.pkl").write_bytes(pickle.dumps(wrk[p::pools]))
            spec = {"messages": str(work / f"share{p}.pkl"), "workers": workers, "go": str(go)}
            (work / f"spec{p}.json").write_text(json.dumps(spec))
            provider.submit(f"{sys.executable} {__file__} send {work / f'spec{p}.json'}", 1, f"bench-{p}")
        hub = ChronompiHub(client, resource_monitoring_enabled=False, register=False)
        hub.start(str(work / "ri-c"), str(work / "ri-c"), None)
        while len(list(work.glob("go.ready.*"))) < pools * workers:  # the senders imported, loaded, connected
            time.sleep(0.05)
        t0 = time.perf_counter()
        wall0 = time.time()
        go.touch()
        push_stamped(hub.resource_msgs, dfk)
        t_put = time.perf_counter() - t0
        hub.close()
        t_hub = time.perf_counter() - t0
        jobs = list(provider._jobs)
        while any(s.state.name not in ("COMPLETED", "FAILED") for s in provider.status(jobs)):
            time.sleep(0.002)
        provider.close()
        t_all = time.perf_counter() - t0
        stats = provider.stats
        sent_s = max(float(p.read_text()) for p in work.glob("go.done.*")) - wall0
    recorded = sum(sum(s["counts"].values()) for s in stats.values()) + sum(hub.counts.values())
    seg = sum(p.stat().st_size for p in (store / "segments").glob("*.h5"))
    res = {
        "part": "job",
        "pools": pools,
        "workers_per_pool": workers,
        "tasks": tasks,
        "messages": len(msgs),
        "recorded": recorded,
        "parsl": base,
        "seconds": t_all,
        "msgs_per_s": len(msgs) / t_all,
        "hub": {"messages": len(dfk), "seconds": t_hub, "put_s": t_put, "busy_s": hub.busy_s},
        "pool_ranks": {r: {"counts": s["counts"], "busy_s": s["busy_s"]} for r, s in stats.items()},
        "worker_msgs_per_s": len(wrk) / t_all,
        "workers_sent_s": sent_s,
        "bytes_per_msg": seg / len(msgs),
        **lag_ms(store),
    }
    res["vs_parsl"] = res["msgs_per_s"] / base["msgs_per_s"]
    print(
        f"{pools} pool(s): {res['msgs_per_s']:,.0f} msg/s ({res['vs_parsl']:.1f}x Parsl's {base['msgs_per_s']:,.0f}); "
        f"hub {len(dfk) / t_hub:,.0f} msg/s; lag p50 {res['lag_ms_p50']} ms, p99 {res['lag_ms_p99']} ms"
    )
    with out.open("a") as f:
        f.write(json.dumps(res) + "\n")


# -- 3. a real workflow ------------------------------------------------------------------------------------------
def noop() -> int:
    return 0


def workflow(params: dict[str, Any], out: Path) -> None:
    import parsl
    from parsl.app.app import python_app
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor

    from chronompi.parsl import ChronompiHub, ChronompiPoolRadio

    tasks = int(params.get("workflow_tasks", 300))
    interval = float(params.get("interval", 0.2))
    with driver_session("bench-pool-wf-") as (work, client, provider):
        if provider is None:
            return
        store = work / "store"
        hub = ChronompiHub(client, workflow_name="bench", resource_monitoring_interval=interval)
        htex = HighThroughputExecutor(
            address="127.0.0.1", max_workers_per_node=1, provider=provider, remote_monitoring_radio=ChronompiPoolRadio()
        )
        app = python_app(noop, executors="all")
        run_dir = str(work / "ri")
        config = Config(executors=[htex], monitoring=hub, run_dir=run_dir, strategy="none", initialize_logging=False)
        with provider, parsl.load(config):
            [app().result() for _ in range(2)]  # warm: the pools are up
            t0 = time.perf_counter()
            [f.result() for f in [app() for _ in range(tasks)]]
            t = time.perf_counter() - t0
        stats = provider.stats
    dfk_msgs = sum(hub.counts.values())
    res = {
        "part": "workflow",
        "pools": len(stats),
        "resource_monitoring_interval": interval,
        "tasks": tasks,
        "seconds": t,
        "tasks_per_s": tasks / t,
        "dfk_msgs": dfk_msgs,
        "dfk_msgs_per_s": dfk_msgs / t,
        "hub_busy_s": hub.busy_s,
        "hub_busy_fraction": hub.busy_s / t,
        "worker_msgs": sum(sum(s["counts"].values()) for s in stats.values()),
        "pool_busy_s": [s["busy_s"] for s in stats.values()],
        **lag_ms(store),
    }
    print(
        f"workflow (resource interval {interval} s): {tasks} tasks in {t:.1f} s; "
        f"the DFK made {res['dfk_msgs_per_s']:,.0f} msg/s, the hub's thread was busy "
        f"{100 * res['hub_busy_fraction']:.1f} % of the time; lag p50 {res['lag_ms_p50']} ms"
    )
    with out.open("a") as f:
        f.write(json.dumps(res) + "\n")


# -- the orchestrator --------------------------------------------------------------------------------------------
def plot(rows: list[dict[str, Any]], png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    jobs = sorted((r for r in rows if r["part"] == "job"), key=lambda r: r["pools"])
    if not jobs:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    p = [r["pools"] for r in jobs]
    a.plot(p, [r["msgs_per_s"] for r in jobs], "o-", label="chronompi (hub + pool ranks)")
    a.plot(p, [r["worker_msgs_per_s"] for r in jobs], "s--", label="  of which pool ranks")
    a.plot(p, [r["parsl"]["msgs_per_s"] for r in jobs], "x-", label="Parsl DatabaseManager -> SQLite")
    a.set(xlabel="pools (client ranks)", ylabel="messages/s", title=f"{jobs[0]['messages']:,} messages", xticks=p)
    a.legend()
    for key, style, label in (
        ("workers_lag_ms", "o", "worker messages (pool ranks)"),
        ("dfk_lag_ms", "s", "DFK messages (hub)"),
    ):
        b.plot(p, [r[f"{key}_p50"] for r in jobs], f"{style}-", label=f"{label} p50")
        b.plot(p, [r[f"{key}_p99"] for r in jobs], f"{style}:", label=f"{label} p99")
    b.plot(p, [r["parsl"]["lag_ms_p50"] for r in jobs], "x-", label="Parsl status rows p50")
    b.set(xlabel="pools (client ranks)", ylabel="ms (log)", yscale="log", xticks=p)
    b.set_title("lag: sent -> committed (whole stream queued at once)", fontsize=10)
    b.legend(fontsize=7)
    fig.suptitle(f"Parsl monitoring with HTEX pools on client ranks ({os.cpu_count()} cores)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "{}"
    if mode == "send":
        return send_share(sys.argv[2])
    if mode == "plot":
        path = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "results" / "parsl_pool.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        last = rows[-1]["date"]
        plot([r for r in rows if r["date"] == last], path.with_suffix(".png"))
        return 0
    if mode in ("job", "workflow"):
        params, out = json.loads(sys.argv[2]), Path(sys.argv[3])
        (job if mode == "job" else workflow)(params, out)
        return 0
    from benchlib import launcher_machine

    from chronompi.launch import run_mpi

    params = QUICK if mode == "quick" else json.loads(mode)
    load_start = [round(x, 2) for x in os.getloadavg()]
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "results" / "parsl_pool.jsonl"
    new = Path(tempfile.mkdtemp()) / "rows.jsonl"
    rows = bench_channel(int(params.get("channel_messages", 100_000)))
    with new.open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    timeout = float(params.get("timeout_s", 600))
    for pools in params.get("pools", [1, 2, 4]):
        r = run_mpi(4 + pools, [sys.executable, __file__, "job", json.dumps(params), str(new)], timeout=timeout)
        if r.returncode != 0:
            print(f"job with {pools} pools failed ({r.returncode})")
    for interval, tasks in ((0.2, params.get("workflow_tasks", 300)), (0.0, params.get("workflow_tasks_fast", 1000))):
        if tasks:
            wf = json.dumps({**params, "interval": interval, "workflow_tasks": tasks})
            r = run_mpi(6, [sys.executable, __file__, "workflow", wf, str(new)], timeout=timeout)
            if r.returncode != 0:
                print(f"workflow (interval {interval}) failed ({r.returncode})")
    rows = [json.loads(line) for line in new.read_text().splitlines()]
    stamp = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cores": os.cpu_count(),
        "params": params,
        "machine": launcher_machine(),
        "loadavg_start": load_start,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    with out.open("a") as f:
        for r in rows:
            f.write(json.dumps({"bench": "parsl_pool", **stamp, **r}) + "\n")
    plot(rows, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
