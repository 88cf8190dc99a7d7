"""What checksums cost (issue 18): ``python perf/bench_checksum.py [EVENTS] [OUT.jsonl] [ROUNDS]``.

Builds one store of EVENTS events (default 1 M; 64 B payloads, 5 clients, 100 ms windows of 10 k
events, like ``bench_replay.py``) per checksum mode of the segment writer (``none``: schema 1 as
before checksums; ``fletcher32``: HDF5's filter on every chunk; ``xxh3``: XXH3-64 hashes per run and
per index row in the index, schema 2, the default; ``both``: the two), timing the writes, then times a
full ``replay_raw`` (page cache warm) and a 1-second-range ``replay_raw`` of each, the modes interleaved
round after round so that the load of other work falls on all of them alike; ``xxh3-unverified`` is the
``xxh3`` store read with the hash checks switched off, in turn before and after the checked read
(``verify_cost_xxh3``: what the checks cost, from the two medians; ``verify_cost_xxh3_paired``: the
median of the rounds' own ratios). One
process, no MPI. Appends one JSON line with the load average before and after to OUT (default
``perf/results/checksum.jsonl``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from benchlib import git_commit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import chronompi  # noqa: E402
from chronompi.codec import EVENT  # noqa: E402
from chronompi.config import StorageConfig  # noqa: E402
from chronompi.store import reader  # noqa: E402
from chronompi.store.format import init_store, write_run  # noqa: E402
from chronompi.store.writer import Run, SegmentWriter  # noqa: E402

MODES = ("none", "fletcher32", "xxh3", "both")
PER_WINDOW = 10_000  # 100 k events/s, 100 ms windows
WINDOW_NS = 100_000_000
CLIENTS = 5
PAYLOAD = 64


def build(root: Path, n_events: int, mode: str) -> float:
    """A store of ``n_events`` written with ``checksums=mode``; returns the seconds spent in append()."""
    init_store(root)
    writer = SegmentWriter(root, 0xC5, 0, StorageConfig(root=str(root), staging="none"), checksums=mode)
    base = np.frombuffer((b"chronompi-checksum-benchmark-payload-" * 4)[:PAYLOAD], np.uint8)
    seqs = np.zeros(CLIENTS, np.uint64)
    w = 1_700_000_000 * 10**9 // WINDOW_NS
    done, spent = 0, 0.0
    while done < n_events:
        n = min(PER_WINDOW, n_events - done)
        ev = np.empty(n, EVENT)
        step = WINDOW_NS // PER_WINDOW
        ev["time"] = w * WINDOW_NS + np.arange(n, dtype=np.int64) * step + np.random.default_rng(w).integers(0, step, n)
        ev["client"] = np.arange(n) % CLIENTS + 1
        for c in range(CLIENTS):
            mine = ev["client"] == c + 1
            ev["seq"][mine] = seqs[c] + np.arange(int(mine.sum()), dtype=np.uint64)
            seqs[c] += int(mine.sum())
        ev["length"] = PAYLOAD
        ev["offset"] = np.arange(n, dtype=np.uint64) * PAYLOAD
        heap = np.tile(base, n)
        t0 = time.perf_counter()
        writer.append("bench", "events", [Run(int(w), ev, heap)])
        spent += time.perf_counter() - t0
        done += n
        w += 1
    t0 = time.perf_counter()
    writer.close()
    spent += time.perf_counter() - t0
    write_run(root, {"run": f"{0xC5:016x}", "status": "complete", "start": 0})
    return spent


class _Unchecked(reader._Check):
    """A run check that checks nothing."""

    def give_heap(self, heap: np.ndarray) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def advance_events(self, n: int) -> None:
        pass

    def wait(self) -> None:
        pass


@contextlib.contextmanager
def unverified() -> Iterator[None]:
    """The reader without its hash checks (for the measurement only)."""
    saved = reader.check_sums, reader.row_sum
    reader.check_sums = lambda r, ev, b0, threaded=False: _Unchecked(r, ev, b0, False)  # type: ignore[assignment]
    reader.row_sum = lambda row: int(row["row_checksum"][0])  # type: ignore[assignment]
    try:
        yield
    finally:
        reader.check_sums, reader.row_sum = saved


def main() -> None:
    n_events = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "results" / "checksum.jsonl"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    load0 = os.getloadavg()
    commit = git_commit()  # before the runs: what was measured
    tmp = Path(tempfile.mkdtemp(prefix="chronompi-checksum-"))
    try:
        write: dict[str, list[float]] = {m: [] for m in MODES}
        full: dict[str, list[float]] = {m: [] for m in MODES}
        rng1s: dict[str, list[float]] = {m: [] for m in MODES}
        size: dict[str, int] = {}
        for r in range(2):  # two builds each, interleaved
            for m in MODES:
                root = tmp / f"{m}-{r}"
                write[m].append(build(root, n_events, m))
                size[m] = sum(p.stat().st_size for p in (root / "segments").glob("*.h5"))
                if r:
                    shutil.rmtree(root)
        t_first = 1_700_000_000 * 10**9
        span = n_events // PER_WINDOW * WINDOW_NS
        starts = np.random.default_rng(1).integers(t_first, t_first + max(span - 10**9, 1), rounds)
        stores = {m: chronompi.open_store(tmp / f"{m}-0") for m in MODES}
        for m in MODES:  # warm the page cache and the open files
            stores[m].replay_raw("bench", "events")
        full["xxh3-unverified"] = []
        for r in range(rounds):
            for m in MODES:
                # xxh3: the same store and reader with the hash checks switched off too (their cost alone), the
                # two in turn first (the second read of a pair tends to be the faster one)
                pair = [False, True] if m == "xxh3" else [False]
                for off in pair if r % 2 == 0 else pair[::-1]:
                    with unverified() if off else contextlib.nullcontext():
                        t0 = time.perf_counter()
                        ev, _heap = stores[m].replay_raw("bench", "events")
                        full["xxh3-unverified" if off else m].append(time.perf_counter() - t0)
                assert len(ev) == n_events
                a = int(starts[r])
                t0 = time.perf_counter()
                stores[m].replay_raw("bench", "events", a, a + 10**9)
                rng1s[m].append(time.perf_counter() - t0)
        for st in stores.values():
            st.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {m: statistics.median(v) for m, v in full.items()}
    rec = {
        "bench": "checksum",
        "events": n_events,
        "payload": PAYLOAD,
        "rounds": rounds,
        "write_s": {m: round(min(write[m]), 3) for m in MODES},
        "write_vs_none": {m: round(min(write[m]) / min(write["none"]) - 1, 3) for m in MODES},
        "replay_raw_full_s_p50": {m: round(v, 4) for m, v in med.items()},
        "replay_raw_full_vs_none": {m: round(v / med["none"] - 1, 3) for m, v in med.items()},
        "verify_cost_xxh3": round(med["xxh3"] / med["xxh3-unverified"] - 1, 3),
        # the median of each round's own ratio: a slow spell of the machine falls on both reads of a round
        "verify_cost_xxh3_paired": round(
            statistics.median(a / b - 1 for a, b in zip(full["xxh3"], full["xxh3-unverified"])), 3
        ),
        "verify_cost_xxh3_rounds": [round(a / b - 1, 3) for a, b in zip(full["xxh3"], full["xxh3-unverified"])],
        "replay_raw_1s_ms_p50": {m: round(1000 * statistics.median(rng1s[m]), 2) for m in MODES},
        "store_bytes": size,
        "h5py": __import__("h5py").__version__,
        "hdf5": __import__("h5py").version.hdf5_version,
        "load_avg_before": [round(x, 2) for x in load0],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": commit,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
