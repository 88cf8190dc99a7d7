"""The ratio guard: a short ingest and replay run against the per-rank h5py peer, compared with a reference.

    python perf/guard.py            # measure, compare with the last line of perf/results/guard.jsonl
    python perf/guard.py --record   # measure and print a reference line (append it to guard.jsonl from a clean tree;
                                    # the reference is the median of the last lines of one commit)

Two ratios, each measured in one run against h5py doing the same work, so that a machine slowed down by other
work slows both sides (ratios only, never absolute times):

- ingest: ``chronompi log_many`` events/s over h5py's one-file-per-rank writer fed arrays of the same events,
  in the same MPI job (``perf/run.py benches=[ingest]``: 2 clients x 200,000 events of 64 B, 5 rounds,
  the order rotated each round); the best round's ratio.
- replay: ``replay_raw`` of a whole 1 M-event store (``perf/bench_replay.py``'s) against h5py reading the
  same datasets with no checks, alternating 5 times, each side's fastest.

The best of several readings, because other work can only make a reading worse. A ratio more than
``--margin`` (30 %) below the reference is measured once more; still below, the guard fails (exit 1) and says
which ratio, by how much. tests/test_ratio_guard.py runs it in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import git_commit

PERF = Path(__file__).resolve().parent
REFERENCE = PERF / "results" / "guard.jsonl"
INGEST = [
    "benches=[ingest]",
    "isolate=false",  # (the reference was measured so: rounds in one job)
    "baselines=[]",
    "peers=[h5py]",
    "peer_shapes=[arrays]",
    "layout.clients=2",
    "profiles.quick.payloads=[64]",
    "profiles.quick.modes=[log_many]",
    "profiles.quick.events=200000",
    "profiles.quick.rounds=5",
    "summary=false",
    "timeout_s=120",
]
REPLAY_EVENTS = 1_000_000


def ingest_ratio(scratch: Path) -> float:
    """chronompi log_many / h5py arrays, events/s, the best of the job's rounds."""
    out = scratch / "ingest.jsonl"
    argv = [sys.executable, str(PERF / "run.py"), f"out={out}", f"scratch={scratch / 'scratch'}", *INGEST]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"perf/guard.py: the ingest run failed (exit {r.returncode}):\n{r.stdout[-3000:]}")
    rates: dict[str, list[float]] = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        if row.get("bench") == "ingest" and row.get("system") in ("chronompi log_many", "h5py"):
            rates[row["system"]] = [float(x) for x in row.get("events_per_s_rounds", [])]
    pairs = zip(rates.get("chronompi log_many", []), rates.get("h5py", []))  # round by round: the same round
    ratios = [c / h for c, h in pairs if h > 0]
    if not ratios:
        raise SystemExit(f"perf/guard.py: the ingest run wrote no pair of rows to compare ({out})")
    return max(ratios)


def replay_ratio(scratch: Path, repeats: int = 5) -> float:
    """h5py's read time / ``replay_raw``'s, a whole store of REPLAY_EVENTS events from the page cache: the
    two alternate ``repeats`` times and each side's fastest counts."""
    from bench_replay import build, raw_h5_read

    import chronompi

    store = scratch / f"replay-{time.time_ns()}"
    build(store, REPLAY_EVENTS)
    ours, theirs = [], []
    with chronompi.open_store(store) as st:
        st.replay_raw("bench", "events")  # the page cache, the files opened once
        raw_h5_read(store)
        for _ in range(repeats):
            t0 = time.perf_counter()
            ev, _heap = st.replay_raw("bench", "events")
            ours.append(time.perf_counter() - t0)
            assert len(ev) == REPLAY_EVENTS
            del ev, _heap
            theirs.append(raw_h5_read(store))
    return min(theirs) / min(ours)


MEASURES = {"ingest": ingest_ratio, "replay": replay_ratio}


def reference() -> dict[str, Any]:
    """The reference: the median of each ratio over the last recorded lines of one commit."""
    rows = [json.loads(ln) for ln in REFERENCE.read_text().splitlines() if ln.strip()]
    last = [r for r in rows if r["machine"]["git_commit"] == rows[-1]["machine"]["git_commit"]]
    ref = {f"{k}_ratio": statistics.median(r[f"{k}_ratio"] for r in last) for k in MEASURES}
    return {**ref, "machine": rows[-1]["machine"], "lines": len(last)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--record", action="store_true", help="print a reference line instead of comparing")
    p.add_argument("--margin", type=float, default=0.30, help="how far below the reference a ratio may fall")
    a = p.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="chronompi-guard-") as tmp:
        got = {name: measure(Path(tmp)) for name, measure in MEASURES.items()}
        if a.record:
            row = {"bench": "guard", **{f"{k}_ratio": round(v, 4) for k, v in got.items()}, "load1": round(load, 2)}
            row["machine"] = {"git_commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            print(json.dumps(row))
            return 0
        ref = reference()
        failed = []
        for name, measure in MEASURES.items():
            floor = (1 - a.margin) * float(ref[f"{name}_ratio"])
            if got[name] < floor:  # once more: other work can only have made it worse
                got[name] = max(got[name], measure(Path(tmp)))
            line = f"{name}: chronompi / h5py {got[name]:.3f}, reference {ref[f'{name}_ratio']:.3f} (floor {floor:.3f})"
            print(line + ("" if got[name] >= floor else "  BELOW"), flush=True)
            if got[name] < floor:
                failed.append(name)
    if failed:
        print(
            f"perf/guard.py: {', '.join(failed)} fell more than {a.margin:.0%} below the reference of "
            f"{ref['machine']['git_commit'][:10]} ({REFERENCE}); load average {load:.1f} at the start",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
