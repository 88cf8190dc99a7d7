"""Scaling: throughput and time to durable as clients, keepers and graphers grow.

One MPI job per layout (``1 visor + keepers + graphers + clients`` ranks; ``perf/run.py`` launches one job
per entry of ``scaling.configs``). In each job:

- ``weak``: every client logs ``weak_events`` events (events per client fixed);
- ``strong``: the clients share ``strong_total`` events (total fixed);
- ``durable`` (when ``durable_seconds`` > 0): a paced run at ``durable_fraction`` of the weak run's rate.

Both unpaced runs also sample time to durable (at saturation, so it includes queueing). Runs log a
fixed number of distinct events; ``scaling.seconds`` (if set) caps the logging time. On a machine with
fewer cores than ranks the sweep oversubscribes; results record the machine, so compare only rows of
the same machine.

Standalone: ``mpirun -n 8 python perf/bench_scaling.py '{"layout": {"keepers": 1, "graphers": 1}}' out.jsonl``
"""

from __future__ import annotations

from typing import Any

import benchlib
from bench_ingest import chronompi_run
from benchlib import Recorder, main_guard


def main(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    sc = dict(params.get("scaling", {}))
    payload = int(sc.get("payload", 64))
    mode = str(sc.get("mode", "log"))
    seconds = float(sc.get("seconds") or 0)  # 0: no cap, every client logs all its events
    every = int(params.get("sample_every", 100)) or 100
    lay = params.get("layout", {})
    clients = comm.Get_size() - 1 - int(lay.get("keepers", 1)) - int(lay.get("graphers", 1))
    offsets = benchlib.clock_offsets(comm)
    weak_rate = 0.0
    for kind, n in (
        ("weak", int(sc.get("weak_events", 20000))),
        ("strong", max(1, int(sc.get("strong_total", 100000)) // max(clients, 1))),
    ):
        res = chronompi_run(comm, params, payload, mode, n, sample_every=every, offsets=offsets, seconds=seconds)
        res.pop("events_per_client", None)
        rec.emit(kind, **res, per_client_target=n)
        if kind == "weak":
            weak_rate = res["events_per_s"]
    dur_s = float(sc.get("durable_seconds", 0) or 0)
    if dur_s > 0 and weak_rate > 0:
        frac = float(sc.get("durable_fraction", params.get("durable_fraction", 0.5)))
        per_client = frac * weak_rate / max(clients, 1)
        res = chronompi_run(
            comm,
            params,
            payload,
            "log",
            max(1, int(per_client * dur_s)),
            rate=per_client,
            sample_every=every,
            offsets=offsets,
            seconds=dur_s * 3 + 5,
        )
        res.pop("events_per_client", None)
        rec.emit(
            "durable", **res, fraction_of_peak=frac, peak_events_per_s=weak_rate, target_rate=round(frac * weak_rate, 1)
        )


if __name__ == "__main__":
    main_guard(main, "scaling")
