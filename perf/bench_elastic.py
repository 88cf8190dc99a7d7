"""Membership changes under a load that steps up and down: what clients feel, how long a change takes.

One session with ``layout.spares`` spare ranks. Every client logs 64 B events (distinct payloads)
following the load schedule ``elastic_schedule`` ([seconds, events/s per client], 0 = as fast as
it can), timing one ``log()`` call in ``elastic_sample`` and recording, per 100 ms bucket, the
events it logged and the time it was blocked (backpressure). Client 0 changes the membership
at the times of ``elastic_changes`` ([at_s, keepers, graphers]). Results: one line per bucket
(over all clients), one line per epoch (requested -> announced -> in force -> complete, from the
run record), the log() p50/p99 inside and outside changes, and every rank's CPU seconds.
``python perf/plot.py`` draws ``elastic.png``; standalone:

    chronompi mpirun -n 10 python perf/bench_elastic.py '{}' perf/results/elastic.jsonl
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import Recorder, main_guard, pct, quiet_barrier, remove_store, scratch_dir

import chronompi

BUCKET_S = 0.1


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def client_run(client: Any, params: dict[str, Any]) -> dict[str, Any]:
    cc = client.comm
    me = cc.Get_rank()
    schedule = params.get("elastic_schedule", [[2.0, 2000], [4.0, 0], [3.0, 2000]])
    changes = params.get("elastic_changes", [[1.0, 2, 1], [3.0, 2, 2], [5.5, 1, 1]])
    sample = int(params.get("elastic_sample", 50))
    if me == 0:
        client.create_chronicle("bench")
    quiet_barrier(cc)
    st = client.acquire_story("bench", f"s{me % 4}")
    total = sum(s for s, _ in schedule)
    n_buckets = int(total / BUCKET_S) + 2
    events = np.zeros(n_buckets, np.int64)
    blocked = np.zeros(n_buckets)
    lat: list[tuple[float, float]] = []  # (t, seconds) of sampled log() calls
    requests: list[dict[str, Any]] = []
    quiet_barrier(cc)
    t0 = time.perf_counter()
    pending = list(changes) if me == 0 else []
    i = 0
    wait0 = client.wait_s
    for seconds, rate in schedule:
        p0 = time.perf_counter()
        done = 0
        while (now := time.perf_counter()) - p0 < seconds:
            if pending and now - t0 >= pending[0][0]:
                _, k, g = pending.pop(0)
                r0 = time.time_ns()
                state = client.scale(keepers=k, graphers=g, wait=False)
                requests.append({"at_s": round(now - t0, 3), "keepers": k, "graphers": g, "requested": r0, **state})
            if rate and done >= rate * (now - p0):
                time.sleep(min(0.001, done / rate - (now - p0) + 1e-6))
                continue
            payload = i.to_bytes(8, "little") + me.to_bytes(8, "little") + b"x" * 48
            b = int((now - t0) / BUCKET_S)
            if i % sample == 0:
                s0 = time.perf_counter()
                st.log(payload)
                lat.append((now - t0, time.perf_counter() - s0))
            else:
                st.log(payload)
            i += 1
            done += 1
            events[b] += 1
            w = client.wait_s
            blocked[b] += w - wait0
            wait0 = w
    return {
        "events": events.tolist(),
        "blocked": blocked.tolist(),
        "lat": lat,
        "requests": requests,
        "logged": i,
    }


def main(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    root = scratch_dir(params, comm, "elastic")
    lay = params.get("layout", {})
    cfg = {
        "layout": {"keepers": 1, "graphers": 1, "spares": int(params.get("spares", 2)), **lay},
        "storage": {"root": root},
        "service": {"summary": False},
        **{k: v for k, v in params.get("chronompi", {}).items() if k != "layout"},
    }
    out: dict[str, Any] | None = None
    role = "?"
    with chronompi.session(comm, cfg=cfg) as client:
        if client is not None:
            out = client_run(client, params)
            role = "client"
    cpu = comm.gather((comm.Get_rank(), role, cpu_s()), root=0)
    outs = comm.gather(out, root=0)
    if comm.Get_rank() == 0:
        record = json.loads(sorted((Path(root) / "runs").glob("*.json"))[-1].read_text())
        clients = [o for o in outs if o is not None]
        n = max(len(c["events"]) for c in clients)
        ev = np.zeros(n)
        bl = np.zeros(n)
        for c in clients:
            ev[: len(c["events"])] += c["events"]
            bl[: len(c["blocked"])] += c["blocked"]
        for b in range(n):
            rec.emit(
                "bucket",
                t_s=round(b * BUCKET_S, 2),
                events_per_s=ev[b] / BUCKET_S,
                blocked_fraction=round(bl[b] / (BUCKET_S * len(clients)), 4),
            )
        t_job0 = min(r["requested"] for c in clients for r in c["requests"]) if clients[0]["requests"] else 0
        reqs = clients[0]["requests"]
        windows = []  # (start_s, end_s) of each change, relative to the first request
        for e in record.get("epochs", [])[1:]:
            r = next((q for q in reqs if q["epoch"] == e["epoch"]), None)
            row = {
                "epoch": e["epoch"],
                "keepers": len(e["keepers"]),
                "graphers": len(e["graphers"]),
                "reason": e["reason"],
                "announce_ms": round((e["announced"] - e["requested"]) / 1e6, 1),
                "in_force_ms": round((e["in_force"] - e["requested"]) / 1e6, 1),
                "complete_ms": round((e["complete"] - e["requested"]) / 1e6, 1),
                "at_s": r["at_s"] if r else None,
            }
            rec.emit("epoch", **row)
            if r:
                windows.append((r["at_s"], r["at_s"] + row["complete_ms"] / 1e3))
        lat_in, lat_out = [], []
        for c in clients:
            for t, s in c["lat"]:
                (lat_in if any(a <= t <= b for a, b in windows) else lat_out).append(s * 1e9)
        p_in, p_out = pct(lat_in, (50, 99)), pct(lat_out, (50, 99))
        rec.emit(
            "log_latency",
            during_changes_ns_p50=round(p_in[0]),
            during_changes_ns_p99=round(p_in[1]),
            otherwise_ns_p50=round(p_out[0]),
            otherwise_ns_p99=round(p_out[1]),
            samples_during=len(lat_in),
            samples_otherwise=len(lat_out),
            events_logged=sum(c["logged"] for c in clients),
            events_stored=record.get("events_stored"),
            t0_ns=t_job0,
        )
        served: dict[int, set[str]] = {}
        for e in record.get("epochs", []):
            for k in e["keepers"]:
                served.setdefault(k, set()).add("keeper")
            for g in e["graphers"]:
                served.setdefault(g, set()).add("grapher")
        rows = []
        for r, ro, c in cpu:
            name = "visor" if r == 0 else ro if ro == "client" else "+".join(sorted(served.get(r, {"spare"})))
            rows.append({"rank": r, "role": name, "cpu_s": round(c, 3)})
        rec.emit("cpu", ranks=rows)
    remove_store(comm, root)


if __name__ == "__main__" and "--plot" not in __import__("sys").argv:
    main_guard(main, "elastic")


def plot(results: str, png: str) -> None:
    """``python perf/bench_elastic.py --plot RESULTS.jsonl OUT.png``: rate and blocked time over time,
    membership changes marked (request, in force)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(results).read_text().splitlines() if line.strip()]
    job = [r for r in rows if r.get("bench") == "elastic"][-1]["job"]
    rows = [r for r in rows if r.get("job") == job]
    buckets = [r for r in rows if r["kind"] == "bucket"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    t = [b["t_s"] for b in buckets]
    fig, (a1, a2) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    a1.plot(t, [b["events_per_s"] / 1e6 for b in buckets], lw=1)
    a1.set_ylabel("M events/s (all clients)")
    a1.set_ylim(bottom=0)
    a2.plot(t, [100 * b["blocked_fraction"] for b in buckets], lw=1, color="tab:red")
    a2.set_ylabel("clients blocked (%)")
    a2.set_xlabel("s")
    a2.set_ylim(bottom=0)
    for e in epochs:
        if e["at_s"] is None:
            continue
        for ax in (a1, a2):
            ax.axvline(e["at_s"], color="grey", ls=":", lw=1)
            ax.axvline(e["at_s"] + e["in_force_ms"] / 1e3, color="black", ls="--", lw=1)
        a1.annotate(f"{e['keepers']}k {e['graphers']}g", (e["at_s"] + e["in_force_ms"] / 1e3, 0), fontsize=8)
    a1.set_title("membership changes under a stepped load (dotted: request, dashed: in force)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__" and len(__import__("sys").argv) > 1 and __import__("sys").argv[1] == "--plot":
    import sys

    plot(sys.argv[2], sys.argv[3])
