"""Replay speed of the store (the player, offline): ``python perf/bench_replay.py [EVENTS] [OUT.jsonl]``.

Builds a store of EVENTS events (default 10 million; 64 B payloads, 5 clients, 100 k events/s
of simulated time, 100 ms windows, 256 MiB segments) with the real segment writer, then times:

- a 1-second time range: ``replay_raw`` (arrays) and ``replay`` (bytes objects), 20 random ranges;
- a full replay from the page cache: ``replay_raw`` of everything, and ``iter_replay`` /
  ``iter_replay_raw`` in 1 M batches (with and without a bytes object per event).

Targets (issue 3): a 1-second range from a 10 M-event store under 50 ms; full replay at least
5 M events/s. One process, no MPI. Baselines in the same run: the raw h5py read of the same bytes
and, when ``adios2`` is installed (``pip install 'chronompi[perf]'``), ADIOS2's reader on the same
events written as one BP5 output with one step per window (``time``, ``offset``, ``payload``): a
1-second range selects its steps from ADIOS2's own per-block min/max of ``time`` (read once at open,
like the store's index) and reads them with one ``Get`` per variable; the full read takes every step.
With ``duckdb`` and ``pyarrow`` installed, DuckDB on the store's Parquet export (``chronompi export
--format parquet``, timed as well: row groups of 1 M events) answers the same ranges with
``SELECT time, client, seq, payload ... WHERE time >= a AND time < b ORDER BY time, client, seq`` into an
Arrow table, and the full read the same without the WHERE.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import git_commit  # noqa: E402

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


def adios2_copy(st: Any, path: Path) -> str | None:
    """Write the store's events into one BP5 output, a step per 100 k-event batch; None, or why not."""
    try:
        from adios2 import bindings as ab
    except ImportError as exc:
        return f"adios2 is not importable ({exc}); pip install 'chronompi[perf]'"
    adios = ab.ADIOS()  # must outlive its IO and engine (a temporary one crashes)
    io = adios.DeclareIO("replay")
    io.SetEngine("BP5")
    engine = io.Open(str(path), ab.Mode.Write)
    v_t = io.DefineVariable("time", np.empty(1, np.int64), [], [], [1], False)
    v_o = io.DefineVariable("offset", np.empty(1, np.uint64), [], [], [1], False)
    v_p = io.DefineVariable("payload", np.empty(1, np.uint8), [], [], [1], False)
    base = 0
    for ev, heap in st.iter_replay_raw("bench", "events", batch_events=RATE * WINDOW_NS // 10**9):
        lengths = ev["length"].astype(np.uint64)
        off = base + np.cumsum(lengths) - lengths  # absolute: into the whole payload stream
        base += int(lengths.sum())
        t = np.ascontiguousarray(ev["time"])
        engine.BeginStep()
        for var, arr in ((v_t, t), (v_o, off), (v_p, np.ascontiguousarray(heap))):
            var.SetSelection([[], [len(arr)]])
            engine.Put(var, arr)
        engine.EndStep()
    engine.Close()
    return None


class Adios2Reader:
    """ADIOS2's reader over :func:`adios2_copy`'s output: step selection from the ``time`` blocks' min/max."""

    def __init__(self, path: Path) -> None:
        import adios2

        self.f = adios2.FileReader(str(path))
        info = [step[0] for step in self.f.all_blocks_info("time")]  # per step: the block's min/max
        self.count = np.array([int(b["Count"]) for b in info], np.int64)
        self.t_min = np.array([int(b["Min"]) for b in info], np.int64)
        self.t_max = np.array([int(b["Max"]) for b in info], np.int64)

    def replay_raw(self, a: int | None = None, b: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(times, payload heap) of the events with a <= time < b (everything when a and b are None)."""
        s0 = 0 if a is None else int(np.searchsorted(self.t_max, a))
        s1 = len(self.t_min) if b is None else int(np.searchsorted(self.t_min, b))
        if s1 <= s0:
            return np.empty(0, np.int64), np.empty(0, np.uint8)
        t, off, heap = (self._read(name, s0, s1) for name in ("time", "offset", "payload"))
        if a is None and b is None:
            return t, heap
        lo, hi = np.searchsorted(t, [a, b])
        first = int(off[0])
        end = int(off[hi]) - first if hi < len(off) else len(heap)
        return t[lo:hi], heap[int(off[lo]) - first : end] if hi > lo else heap[:0]

    def _read(self, name: str, s0: int, s1: int) -> np.ndarray:
        """Steps s0..s1-1 of a local array: one read when their blocks have one size, else one a step
        (a multi-step read of a local array takes every step's block to be the size of the first)."""
        if (self.count[s0:s1] == self.count[s0]).all():
            return self.f.read(name, block_id=0, step_selection=[s0, s1 - s0])
        return np.concatenate([self.f.read(name, block_id=0, step_selection=[s, 1]) for s in range(s0, s1)])

    def close(self) -> None:
        self.f.close()


def adios2_rows(st: Any, tmp: Path, ranges: list[int], n_events: int) -> dict[str, Any]:
    """The ADIOS2 reader's numbers for the same ranges and the full read (or why it was skipped)."""
    t0 = time.perf_counter()
    why = adios2_copy(st, tmp / "events.bp")
    if why:
        return {"adios2_skipped": why}
    write_s = time.perf_counter() - t0
    r = Adios2Reader(tmp / "events.bp")
    try:
        r.replay_raw(ranges[0], ranges[0] + 10**9)
        ms, counts = [], []
        for a in ranges:
            t0 = time.perf_counter()
            t, _heap = r.replay_raw(a, a + 10**9)
            ms.append((time.perf_counter() - t0) * 1e3)
            counts.append(len(t))
        r.replay_raw()  # warm the page cache
        t0 = time.perf_counter()
        t, heap = r.replay_raw()
        full = time.perf_counter() - t0
        assert len(t) == n_events and len(heap) == n_events * PAYLOAD
    finally:
        r.close()
    import adios2

    return {
        "adios2": adios2.__version__,
        "adios2_write_s": round(write_s, 2),
        "adios2_range_1s_events": int(np.median(counts)),
        "adios2_range_1s_ms": {"p50": round(float(np.median(ms)), 2), "max": round(max(ms), 2)},
        "adios2_full_events_s": round(n_events / full),
    }


def duckdb_rows(st: Any, tmp: Path, ranges: list[int], n_events: int) -> dict[str, Any]:
    """Export the story to Parquet with chronompi's exporter, then time DuckDB's answers (or why skipped)."""
    try:
        import duckdb
    except ImportError as exc:
        return {"duckdb_skipped": f"duckdb is not importable ({exc}); pip install 'chronompi[perf]'"}
    from chronompi.export import ParquetWriter, have_pyarrow, stream

    if not have_pyarrow():
        return {"duckdb_skipped": "pyarrow is not installed (the Parquet export needs it)"}
    path = tmp / "events.parquet"
    t0 = time.perf_counter()
    pw = ParquetWriter(path)
    try:
        stream(st, [("bench", "events")], pw, batch_events=1 << 20)
    finally:
        pw.close()
    export_s = time.perf_counter() - t0
    con = duckdb.connect()
    select = f"SELECT time, client, seq, payload FROM read_parquet('{path}')"
    order = " ORDER BY time, client, seq"
    where = " WHERE time >= make_timestamp_ns(?)::TIMESTAMPTZ_NS AND time < make_timestamp_ns(?)::TIMESTAMPTZ_NS"

    def query(a: int | None) -> int:
        if a is None:
            return int(con.sql(select + order).to_arrow_table().num_rows)
        return int(con.sql(select + where + order, params=[a, a + 10**9]).to_arrow_table().num_rows)

    query(ranges[0])
    ms, counts = [], []
    for a in ranges:
        t0 = time.perf_counter()
        counts.append(query(a))
        ms.append((time.perf_counter() - t0) * 1e3)
    query(None)  # warm the page cache
    t0 = time.perf_counter()
    n = query(None)
    full = time.perf_counter() - t0
    assert n == n_events, (n, n_events)
    return {
        "duckdb": duckdb.__version__,
        "parquet_export_s": round(export_s, 2),
        "parquet_export_events_s": round(n_events / export_s),
        "duckdb_range_1s_events": int(np.median(counts)),
        "duckdb_range_1s_ms": {"p50": round(float(np.median(ms)), 2), "max": round(max(ms), 2)},
        "duckdb_full_events_s": round(n_events / full),
    }


def main() -> None:
    n_events = int(float(sys.argv[1])) if len(sys.argv) > 1 else 10_000_000
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    load0, commit = os.getloadavg(), git_commit()  # before the runs: what was measured
    (HERE / "out").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="chronompi-replay-", dir=HERE / "out"))
    try:
        t_build = time.perf_counter()
        t_first, t_last = build(tmp / "store", n_events)
        t_build = time.perf_counter() - t_build
        size = sum(p.stat().st_size for p in (tmp / "store" / "segments").glob("*.h5"))
        rng = np.random.default_rng(1)
        with chronompi.open_store(tmp / "store") as st:
            st.replay_raw("bench", "events", t_first, t_first + 10**9)  # open the files once
            raw_ms, obj_ms, counts = [], [], []
            ranges = [int(rng.integers(t_first, max(t_first + 1, t_last - 10**9))) for _ in range(20)]
            for a in ranges:
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
            peer = adios2_rows(st, tmp, ranges, n_events) | duckdb_rows(st, tmp, ranges, n_events)
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
            **peer,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load_avg_before": [round(x, 2) for x in load0],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "git_commit": commit,
        }
        print(json.dumps(rec, indent=1))
        if out is not None:
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
