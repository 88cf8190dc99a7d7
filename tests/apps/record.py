"""Test app: every client logs random payloads and writes what it logged to expected-<id>.npz.

Usage: record.py STORE OUTDIR SPEC_JSON
spec keys: cfg (session config overrides), chronicles, stories, shared, events, threads,
sizes (list of payload sizes to draw from), mode (log|log_many|mixed), stall_ms (hold the
client lock this long mid-run on client 0, making its later-sent events late), sync_every (each
thread calls sync() after every that many log calls, alternating until="committed"/"received";
the returned point must be at or after every timestamp the thread logged before), scale (a list of
[keepers, graphers] that client 0 asks for one after another from a thread while everyone logs;
the memberships it got back go to OUTDIR/scaled.json), min_seconds (log at least this long), rate
(events/s per thread, paced), schedule (a list of [seconds, events/s per thread, 0 = as fast as
possible]: the load steps through it, then the client ends), seed.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from pathlib import Path

import _hang  # noqa: E402
import numpy as np

_hang.arm(100)

import chronompi  # noqa: E402


def main() -> None:
    store, outdir, spec = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    cfg = spec.get("cfg", {})
    cfg.setdefault("storage", {})["root"] = store
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return
        comm = client.comm
        rank = client.rank
        if comm.Get_rank() == 0:
            for c in range(spec.get("chronicles", 1)):
                client.create_chronicle(f"c{c}", {"test": True})
        comm.Barrier()
        names = []
        for c in range(spec.get("chronicles", 1)):
            for s in range(spec.get("stories", 1)):
                names.append((f"c{c}", f"s{s}" if spec.get("shared", True) else f"s{s}_r{rank}"))
        stories = [client.acquire_story(c, s) for c, s in names]
        sizes = spec.get("sizes", [64])
        mode = spec.get("mode", "log")
        n_threads = spec.get("threads", 1)
        per_thread = spec.get("events", 1000)
        lock = threading.Lock()
        rows: list[tuple[int, int, int, bytes]] = []  # (time, story index, length, digest)
        t_start = time.monotonic()
        min_seconds = spec.get("min_seconds", 0)
        scaled: list[dict] = []

        failed: list[BaseException] = []
        # every client logs until client 0's scaler is done (a client that ends first fixes the membership,
        # and the scaler's next request is rightly refused): client 0 enters an Ibarrier once it is done
        scaling = threading.Event()
        scaling_over = threading.Event()
        if spec.get("scale"):
            scaling.set()
        over_req = comm.Ibarrier() if spec.get("scale") and comm.Get_rank() != 0 else None

        def scaler() -> None:
            try:
                for k, g in spec["scale"]:
                    scaled.append(client.scale(keepers=k, graphers=g))
                    time.sleep(spec.get("scale_pause", 0.1))
            except BaseException as exc:  # re-raised on the main thread
                failed.append(exc)
            finally:
                scaling.clear()

        def still_scaling(tid: int) -> bool:
            if comm.Get_rank() == 0:
                return scaling.is_set()
            if over_req is None or scaling_over.is_set():
                return False
            if tid == 0 and over_req.Test():  # (one thread tests the request)
                scaling_over.set()
            return not scaling_over.is_set()

        def work(tid: int) -> None:
            rng = np.random.default_rng([spec.get("seed", 0), rank, tid])
            mine = []
            done = 0
            k = 0
            stalled: list[bool] = []
            schedule = spec.get("schedule")
            phase_end, phase, phase_done, phase_t0 = 0.0, -1, 0, 0.0
            while done < per_thread or time.monotonic() - t_start < min_seconds or schedule or still_scaling(tid):
                if schedule:  # a stepped load: [seconds, rate] after another
                    now = time.monotonic() - t_start
                    if now >= phase_end:
                        phase += 1
                        if phase == len(schedule):
                            break
                        phase_end, phase_done, phase_t0 = now + schedule[phase][0], 0, now
                    rate = schedule[phase][1]
                    if rate:
                        ahead = phase_done / rate - (now - phase_t0)
                        if ahead > 0:
                            time.sleep(min(ahead, 0.05))
                            continue
                    phase_done += 1
                si = int(rng.integers(len(stories)))
                st = stories[si]
                use_many = mode == "log_many" or (mode == "mixed" and k % 2)
                k += 1
                if use_many:
                    m = int(min(max(per_thread - done, 1), rng.integers(1, 300)))
                    pl = [rng.bytes(int(rng.choice(sizes))) for _ in range(m)]
                    times = st.log_many(pl)
                    mine += [
                        (int(t), si, len(p), hashlib.blake2b(p, digest_size=16).digest()) for t, p in zip(times, pl)
                    ]
                    done += m
                else:
                    p = rng.bytes(int(rng.choice(sizes)))
                    t = st.log(p)
                    mine.append((t, si, len(p), hashlib.blake2b(p, digest_size=16).digest()))
                    done += 1
                if spec.get("rate"):  # events/s per thread
                    ahead = done / spec["rate"] - (time.monotonic() - t_start)
                    if ahead > 0:
                        time.sleep(ahead)
                every = spec.get("sync_every", 0)
                if every and k % every == 0:
                    until = "received" if (k // every) % 3 == 2 else "committed"
                    point = st.sync(timeout=60, until=until)
                    assert point >= mine[-1][0], f"sync point {point} before the last event logged {mine[-1][0]}"
                if spec.get("stall_ms") and tid == 0 and comm.Get_rank() == 0 and done >= per_thread // 2:
                    with client._lock:  # a stuck client: nothing leaves it, not even heartbeats
                        if len(client._batch) and not stalled:  # with events waiting to be sent
                            time.sleep(spec["stall_ms"] / 1000)
                            stalled.append(True)
            with lock:
                rows.extend(mine)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(1, n_threads)]
        if spec.get("scale") and comm.Get_rank() == 0:
            threads.append(threading.Thread(target=scaler))
        for th in threads:
            th.start()
        work(0)
        for th in threads:
            th.join()
        if spec.get("scale") and comm.Get_rank() == 0:
            comm.Ibarrier().Wait()  # the others stop logging now
        elif over_req is not None:
            over_req.Wait()
        if failed:
            raise failed[0]
        if scaled:
            (outdir / "scaled.json").write_text(json.dumps(scaled))
        for st in stories:
            st.release()
        arr = np.array(rows, dtype=[("time", "<i8"), ("story", "<u4"), ("length", "<u4"), ("digest", "V16")])
        np.save(outdir / f"expected-{client.id:016x}.npy", arr)
        (outdir / f"names-{client.id:016x}.json").write_text(json.dumps(names))


if __name__ == "__main__":
    main()
