"""Latency of ``sync()``: at idle and under full load, for both levels (committed, received).

One session, default chronompi config (plus ``chronompi.*`` overrides from the params). Client 0
logs one event and syncs, ``sync_count`` times per phase or for ``sync_seconds`` (whichever ends
first: a loaded store grows by about 100 MB/s here), with a short pause between syncs:

- ``idle``: the other clients only send heartbeats;
- ``load``: the other clients log as fast as they can (``log_many`` of ``sync_load_many`` distinct
  64 B payloads a call) until client 0 is done; their rate is reported beside the latencies.

A last phase, ``all``, has every client log at full speed and sync after every ``sync_every``
events (the checkpointing pattern): latencies of all clients' syncs, and the rate kept.

Standalone: ``chronompi mpirun -n 8 python perf/bench_sync.py '{"sync_count": 200}' out.jsonl``
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from benchlib import Recorder, main_guard, pct, quiet_barrier, remove_store, scratch_dir, session_cfg

import chronompi


def _payloads(rank: int, n: int, size: int = 64) -> np.ndarray:
    """``n`` distinct payloads of ``size`` bytes (rank and a counter in the first 16 bytes)."""
    out = np.random.default_rng(rank).integers(0, 256, (n, size), dtype=np.uint8)
    out[:, :8] = np.frombuffer(np.full(n, rank, "<u8").tobytes(), np.uint8).reshape(n, 8)
    out[:, 8:16] = np.frombuffer(np.arange(n, dtype="<u8").tobytes(), np.uint8).reshape(n, 8)
    return out


def _ms(lat: list[float]) -> dict[str, Any]:
    p50, p99, mx = pct(np.asarray(lat) * 1e3)
    return {"syncs": len(lat), "ms_p50": round(p50, 3), "ms_p99": round(p99, 3), "ms_max": round(mx, 3)}


def _quiet_wait(req: Any) -> None:
    while not req.Test():
        time.sleep(0.001)


def phases(client: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    cc = client.comm
    me = cc.Get_rank()
    n_sync = int(params.get("sync_count", 200))
    limit = float(params.get("sync_seconds", 3.0))
    pause = float(params.get("sync_pause_ms", 5)) / 1e3
    many = int(params.get("sync_load_many", 1000))
    every = int(params.get("sync_every", 10000))
    seconds = float(params.get("sync_all_seconds", 2.0))
    if me == 0:
        client.create_chronicle("bench")
    quiet_barrier(cc)
    st = client.acquire_story("bench", f"s{me}")
    block = _payloads(me, many)
    out = []
    for phase in ("idle", "load"):
        for until in ("committed", "received"):
            quiet_barrier(cc)
            t0 = time.perf_counter()
            logged = 0
            lat: list[float] = []
            if me == 0:
                for i in range(n_sync):
                    if time.perf_counter() - t0 > limit:
                        break
                    st.log(block[i % many].tobytes())
                    s0 = time.perf_counter()
                    st.sync(until=until)
                    lat.append(time.perf_counter() - s0)
                    time.sleep(pause)
                _quiet_wait(cc.Ibarrier())
            else:
                req = cc.Ibarrier()
                if phase == "load":
                    while not req.Test():
                        st.log_many(block)
                        logged += many
                else:
                    _quiet_wait(req)
            took = time.perf_counter() - t0
            lat_all = cc.gather(lat, root=0)
            rate = cc.reduce(logged, root=0)
            if me == 0:
                out.append(
                    {"phase": phase, "until": until, **_ms(lat_all[0]), "load_events_per_s": round(rate / took, 1)}
                )
    # every client logs at full speed and syncs every `every` events
    quiet_barrier(cc)
    lat = []
    logged = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        st.log_many(block)
        logged += many
        if logged % every < many:
            s0 = time.perf_counter()
            st.sync()
            lat.append(time.perf_counter() - s0)
    took = time.perf_counter() - t0
    lat_all = cc.gather(lat, root=0)
    rate = cc.reduce(logged / took, root=0)
    if me == 0:
        flat = [x for part in lat_all for x in part]
        out.append(
            {"phase": "all", "until": "committed", "sync_every": every, **_ms(flat), "events_per_s": round(rate, 1)}
        )
    return out


def main(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    root = scratch_dir(params, comm, "sync")
    cfg = session_cfg(params, root)
    results: list[dict[str, Any]] | None = None
    with chronompi.session(comm, cfg=cfg) as client:
        if client is not None:
            res = phases(client, params)
            results = res if client.comm.Get_rank() == 0 else None
    results = next(r for r in comm.allgather(results) if r is not None)
    for r in results:
        rec.emit("sync", **r, config=cfg)
    remove_store(comm, root)


if __name__ == "__main__":
    main_guard(main, "sync")
