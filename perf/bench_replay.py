"""Replay speed of the store (the player, offline): ``python perf/bench_replay.py [EVENTS] [OUT.jsonl]``.

Builds a store of EVENTS events (default 10 million; 64 B payloads, 5 clients, 100 k events/s
of simulated time, 100 ms windows, 256 MiB segments) with the real segment writer, then times:

- a 1-second time range: ``replay_raw`` (arrays) and ``replay`` (bytes objects), 20 random ranges;
- a full replay from the page cache: ``replay_raw`` of everything, and ``iter_replay`` /
  ``iter_replay_raw`` in 1 M batches (with and without a bytes object per event).

Targets (issue 3): a 1-second range from a 10 M-event store under 50 ms; full replay at least
5 M events/s. One process, no MPI: nothing else to compare against in the same run but the raw
h5py read of the same bytes, which is reported as the baseline.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chronompi  # noqa: E402
from chronompi.codec import EVENT  # noqa: E402
from chronompi.config import StorageConfig  # noqa: E402
from chronompi.merge import is_sorted  # noqa: E402
from chronompi.store.format import init_store, write_run  # noqa: E402
from chronompi.store.writer import Run, SegmentWriter  # noqa: E402

RATE = 100_000  # simulated events per second
WINDOW_NS = 100_000_000
CLIENTS = 5
PAYLOAD = 64


def build(root: Path, n_events: int) -> tuple[int, int]:
    init_store(root)
    cfg = StorageConfig(root=str(root), staging="none", segment_bytes=256 << 20)
    writer = SegmentWriter(root, 0xBE, 0, cfg)
    t_start = 1_700_000_000 * 10**9
    per_window = RATE * WINDOW_NS // 10**9
    base = np.frombuffer((b"chronompi-replay-benchmark-payload-" * 4)[:PAYLOAD], np.uint8)
    seqs = np.zeros(CLIENTS, np.uint64)
    done = 0
    w0 = t_start // WINDOW_NS
    w = w0
    while done < n_events:
        n = min(per_window, n_events - done)
        ev = np.empty(n, EVENT)
        step = WINDOW_NS // per_window  # strictly increasing times with jitter: a valid sorted run
        jitter = np.random.default_rng(int(w)).integers(0, step, n)
        ev["time"] = w * WINDOW_NS + np.arange(n, dtype=np.int64) * step + jitter
        ev["client"] = np.arange(n) % CLIENTS + 1
        for c in range(CLIENTS):
            mine = ev["client"] == c + 1
            k = int(mine.sum())
            ev["seq"][mine] = seqs[c] + np.arange(k, dtype=np.uint64)
            seqs[c] += k
        ev["length"] = PAYLOAD
        ev["offset"] = np.arange(n, dtype=np.uint64) * PAYLOAD
        heap = np.tile(base, n)
        writer.append("bench", "events", [Run(int(w), ev, heap)])
        done += n
        w += 1
    writer.close()
    write_run(root, {"run": f"{0xBE:016x}", "status": "complete", "start": t_start, "end": w * WINDOW_NS})
    return t_start, w * WINDOW_NS


def raw_h5_read(root: Path) -> float:
    """Baseline: read every events row and payload byte of every segment with plain h5py (seconds)."""
    t0 = time.perf_counter()
    for p in sorted((root / "segments").glob("*.h5")):
        with h5py.File(p, "r") as f:
            g = f["bench/events"]
            g["events"][...]
            g["payload"][...]
    return time.perf_counter() - t0


def main() -> None:
    n_events = int(float(sys.argv[1])) if len(sys.argv) > 1 else 10_000_000
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    tmp = Path(tempfile.mkdtemp(prefix="chronompi-replay-", dir=HERE / "results"))
    try:
        t_build = time.perf_counter()
        t_first, t_last = build(tmp / "store", n_events)
        t_build = time.perf_counter() - t_build
        size = sum(p.stat().st_size for p in (tmp / "store" / "segments").glob("*.h5"))
        rng = np.random.default_rng(1)
        with chronompi.open_store(tmp / "store") as st:
            st.replay_raw("bench", "events", t_first, t_first + 10**9)  # open the files once
            raw_ms, obj_ms, counts = [], [], []
            for _ in range(20):
                a = int(rng.integers(t_first, max(t_first + 1, t_last - 10**9)))
                t0 = time.perf_counter()
                ev, _heap = st.replay_raw("bench", "events", a, a + 10**9)
                raw_ms.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                st.replay("bench", "events", a, a + 10**9)
                obj_ms.append((time.perf_counter() - t0) * 1e3)
                counts.append(len(ev))
            st.replay_raw("bench", "events")  # warm the page cache
            t0 = time.perf_counter()
            ev, heap = st.replay_raw("bench", "events")
            full_raw = time.perf_counter() - t0
            assert len(ev) == n_events and is_sorted(ev)
            del ev, heap
            t0 = time.perf_counter()
            n_iter = sum(len(b) for b in st.iter_replay("bench", "events", batch_events=1 << 20))
            full_iter = time.perf_counter() - t0
            assert n_iter == n_events
            t0 = time.perf_counter()
            n_iter = sum(len(e) for e, _h in st.iter_replay_raw("bench", "events", batch_events=1 << 20))
            full_iter_raw = time.perf_counter() - t0
            assert n_iter == n_events
        baseline = raw_h5_read(tmp / "store")
        rec = {
            "bench": "replay",
            "kind": "replay",
            "events": n_events,
            "store_bytes": size,
            "segments": len(list((tmp / "store" / "segments").glob("*.h5"))),
            "build_s": round(t_build, 2),
            "range_1s_events": int(np.median(counts)),
            "range_1s_raw_ms": {"p50": round(float(np.median(raw_ms)), 2), "max": round(max(raw_ms), 2)},
            "range_1s_bytes_ms": {"p50": round(float(np.median(obj_ms)), 2), "max": round(max(obj_ms), 2)},
            "full_raw_events_s": round(n_events / full_raw),
            "full_iter_events_s": round(n_events / full_iter),
            "full_iter_raw_events_s": round(n_events / full_iter_raw),
            "baseline_h5py_read_events_s": round(n_events / baseline),
            "full_raw_vs_h5py": round(baseline / full_raw, 3),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        print(json.dumps(rec, indent=1))
        if out is not None:
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
