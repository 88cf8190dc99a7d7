"""Time to durable at a fixed rate: from ``log`` returning to the event's window run being committed
(its index row written) in HDF5; p50, p99, max over sampled events.

In one job: first a short unpaced run measures the peak end-to-end rate (``log``, ``durable_payload``),
then every client logs at ``durable_fraction`` of that peak (split evenly over the clients) for
``durable_seconds``, timing every ``durable_sample_every``-th event.

Commit times come from the ``committed`` column of the windows index when chronompi writes one, and
from a benchmark-side wrapper of ``SegmentWriter.append`` (see ``benchlib.install_commit_hook``);
all clocks are mapped to rank 0's with a ping-pong offset estimate made in the same job.

Standalone: ``mpirun -n 8 python perf/bench_durable.py '{"durable_seconds": 3}' out.jsonl``
"""

from __future__ import annotations

from typing import Any

import benchlib
from bench_ingest import chronompi_run, per_client_events
from benchlib import Recorder, main_guard

TARGET_P99_MS = 1000.0


def main(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    offsets = benchlib.clock_offsets(comm)
    payload = int(params.get("durable_payload", 64))
    frac = float(params.get("durable_fraction", 0.5))
    seconds = float(params.get("durable_seconds", 3.0))
    every = int(params.get("durable_sample_every", 100))
    peak_rate = float(params.get("durable_rate", 0) or 0)
    peak_info: dict[str, Any] = {}
    if peak_rate <= 0:
        n = per_client_events(params, payload)
        peak = chronompi_run(
            comm,
            params,
            payload,
            "log",
            n,
            sample_every=every,
            offsets=offsets,
            seconds=float(params.get("seconds") or 0),  # 0: no cap
        )
        peak_rate = peak["events_per_s"]
        peak_info = {
            k: peak.get(k)
            for k in ("events", "seconds", "durable_ms_p50", "durable_ms_p99", "durable_ms_max", "durable_method")
        }
        rec.emit("peak", **{k: v for k, v in peak.items() if k != "events_per_client"})
    clients = len(peak_info and peak["roles"]["clients"] or [])
    rate_total = frac * peak_rate
    if not clients:
        clients = (
            comm.Get_size()
            - 1
            - int(params.get("layout", {}).get("keepers", 1))
            - int(params.get("layout", {}).get("graphers", 1))
        )
    per_client = rate_total / max(clients, 1)
    n = max(1, int(per_client * seconds))
    res = chronompi_run(
        comm, params, payload, "log", n, rate=per_client, sample_every=every, offsets=offsets, seconds=seconds * 3 + 5
    )
    res = {k: v for k, v in res.items() if k != "events_per_client"}
    p99 = res.get("durable_ms_p99")
    rec.emit(
        "durable",
        **res,
        target_rate=round(rate_total, 1),
        fraction_of_peak=frac,
        peak_events_per_s=peak_rate,
        achieved_fraction=round(res["client_events_per_s"] / peak_rate, 3)
        if peak_rate and res.get("client_events_per_s")
        else None,
        target_p99_ms=TARGET_P99_MS,
        target_met=(p99 is not None and p99 < TARGET_P99_MS) if res.get("durable_method") else None,
    )


if __name__ == "__main__":
    main_guard(main, "durable")
