"""Per-event client cost of ``story.log`` and what a science code's loop loses to it.

Inside a real session (ticker thread running, batches going to the keeper), every client:

1. times ``calls`` individual ``story.log`` calls with ``perf_counter_ns`` around each, minus the
   median cost of an empty timed region (reported as ``timer_ns``): median, p99, p99.9, max;
2. times blocks of calls as a whole (``block_ns_per_call``: the mean, loop overhead included);
3. runs a synthetic science step (a pure-Python busy loop calibrated to ``science_steps_us``) in a
   loop without and with one ``log`` per step, alternating, and reports the time lost per step and as %.

All clients do this at the same time (as they would in a job), so on an oversubscribed machine the
tails include preemption by the other ranks.

Standalone: ``mpirun -n 8 python perf/bench_client_cost.py '{"client_payloads": [64]}' out.jsonl``
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from benchlib import Recorder, main_guard, pct, quiet_barrier, remove_store, scratch_dir, session_cfg


def _timer_overhead(n: int = 20000) -> float:
    pc = time.perf_counter_ns
    d = np.empty(n, np.int64)
    for i in range(n):
        a = pc()
        b = pc()
        d[i] = b - a
    return float(np.median(d))


def _per_call(story: Any, pool: list[bytes], n: int) -> np.ndarray:
    pc = time.perf_counter_ns
    log = story.log
    d = [0] * n
    for i in range(n):
        p = pool[i & 63]
        a = pc()
        log(p)
        d[i] = pc() - a
    return np.asarray(d, np.int64)


def _block(story: Any, pool: list[bytes], n: int) -> tuple[float, float]:
    """Mean wall ns and process-CPU ns per call over a block of ``n`` calls (loop overhead included)."""
    log = story.log
    t0, c0 = time.perf_counter_ns(), time.process_time_ns()
    for i in range(n):
        log(pool[i & 63])
    return (time.perf_counter_ns() - t0) / n, (time.process_time_ns() - c0) / n


def _busy(k: int) -> int:
    s = 0
    for j in range(k):
        s += j
    return s


def _calibrate(us: float) -> int:
    k = 64
    while True:
        t0 = time.perf_counter()
        for _ in range(20):
            _busy(k)
        dt = (time.perf_counter() - t0) / 20
        if dt > 2e-4 or k > 1 << 24:
            return max(1, int(k * us * 1e-6 / dt))
        k *= 4


def _science(story: Any, pool: list[bytes], us: float, seconds: float) -> dict[str, float]:
    """Science loop without and with one log per step, alternating 5 times; min of each.

    Both wall time and process CPU time (all threads of the rank, so the ticker and the batch sends
    are included) are measured; CPU time is what the loop loses when the rank has a core to itself,
    wall time also includes being preempted by other ranks on an oversubscribed machine.
    """
    k = _calibrate(us)
    steps = max(50, int(seconds / 10 / (us * 1e-6)))
    log = story.log
    wall = time.perf_counter_ns
    cpu = time.process_time_ns
    base_w, base_c, with_w, with_c = [], [], [], []
    for _ in range(5):  # alternate to share drifts (frequency, other ranks) between both variants
        t0, c0 = wall(), cpu()
        for _i in range(steps):
            _busy(k)
        base_w.append((wall() - t0) / steps)
        base_c.append((cpu() - c0) / steps)
        t0, c0 = wall(), cpu()
        for i in range(steps):
            _busy(k)
            log(pool[i & 63])
        with_w.append((wall() - t0) / steps)
        with_c.append((cpu() - c0) / steps)
    bw, ww, bc, wc = min(base_w), min(with_w), min(base_c), min(with_c)
    return {
        "step_us": us,
        "step_ns": bw,
        "step_with_log_ns": ww,
        "lost_ns_per_step": ww - bw,
        "lost_pct": 100.0 * (ww - bw) / bw,
        "cpu_step_ns": bc,
        "cpu_step_with_log_ns": wc,
        "cpu_lost_ns_per_step": wc - bc,
        "cpu_lost_pct": 100.0 * (wc - bc) / bc,
    }


def main(comm: Any, params: dict[str, Any], rec: Recorder) -> None:
    import chronompi

    calls = int(params.get("client_calls", 100000))
    steps_us = [float(x) for x in params.get("science_steps_us", [1, 10, 100])]
    science_s = float(params.get("science_seconds", 0.3))
    for payload in [int(p) for p in params.get("client_payloads", [64])]:
        root = scratch_dir(params, comm, f"client-cost-{payload}")
        info: dict[str, Any] | None = None
        quiet_barrier(comm)
        with chronompi.session(comm, session_cfg(params, root)) as client:
            if client is not None:
                if client.comm.Get_rank() == 0:
                    client.create_chronicle("perf")
                client.comm.Barrier()
                story = client.acquire_story("perf", f"cost{payload}")
                rng = np.random.default_rng(payload)
                pool = [rng.integers(0, 256, payload, dtype=np.uint8).tobytes() for _ in range(64)]
                timer = _timer_overhead()
                _block(story, pool, min(calls, 20000))  # warm up
                client.comm.Barrier()
                d = _per_call(story, pool, calls)
                blocks = [_block(story, pool, max(1, calls // 10)) for _ in range(5)]
                sci = [_science(story, pool, us, science_s) for us in steps_us]
                info = {
                    "timer": timer,
                    "d": d,
                    "blocks": blocks,
                    "science": sci,
                    "batches": client.n_batches,
                    "waits": client.n_waits,
                }
        infos = comm.gather(info, root=0)
        remove_store(comm, root)
        if comm.Get_rank() != 0:
            continue
        assert infos is not None
        got = [i for i in infos if i is not None]
        timer = float(np.median([i["timer"] for i in got]))
        raw = np.concatenate([i["d"] for i in got]).astype(np.float64)
        net = raw - timer
        p50, p99, p999, mx = pct(net, (50, 99, 99.9, 100))
        r50, r99 = pct(raw, (50, 99))
        rec.emit(
            "log_call",
            payload=payload,
            clients=len(got),
            calls=int(raw.size),
            timer_ns=round(timer, 1),
            log_ns_p50=round(p50, 1),
            log_ns_p99=round(p99, 1),
            log_ns_p999=round(p999, 1),
            log_ns_max=round(mx, 1),
            raw_ns_p50=round(r50, 1),
            raw_ns_p99=round(r99, 1),
            block_ns_per_call=round(float(np.median([b[0] for i in got for b in i["blocks"]])), 1),
            block_cpu_ns_per_call=round(float(np.median([b[1] for i in got for b in i["blocks"]])), 1),
            backpressure_waits=sum(i["waits"] for i in got),
        )
        for j, us in enumerate(steps_us):
            rows = [i["science"][j] for i in got]
            rec.emit(
                "science_loop",
                payload=payload,
                clients=len(got),
                step_us=us,
                **{k: round(float(np.median([r[k] for r in rows])), 3) for k in rows[0] if k != "step_us"},
            )


if __name__ == "__main__":
    main_guard(main, "client_cost")
