"""Does the harness read what a user's own script reads? Medians of the same workload, measured both ways.

    python perf/agreement.py --harness OUT.ingest-runs.jsonl [MORE ...] --script user-ingest.jsonl [--out FILE]

``--harness``: the ``kind=run`` lines ``perf/run.py`` (``isolate=true``) writes beside its results; ``--script``:
the lines of ``perf/user_ingest.py --drive``. Best taken alternately (a harness run, a script drive, again), so
that a machine that drifts between batches drifts for both. Pairs, each as a user logs (events made inside the
timed loop): chronompi ``log_many_made`` / ``chronompi-log-many``, ``log_made`` / ``chronompi-log``, ``adios2
made`` / ``adios2``, ``h5py made`` / ``h5py``. chronompi's harness rate is from the first log call to the session
returned (``events_per_s_from_first_log``), as the script times it; a peer's from a barrier to every file closed
on both sides. Prints the table; ``--out`` appends the input lines and one ``bench=agreement`` line per pair
(medians, run counts, ratio, within 15 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

PAIRS = {
    "chronompi log_many_made": "chronompi-log-many",
    "chronompi log_made": "chronompi-log",
    "adios2 made": "adios2",
    "h5py made": "h5py",
}
BAR = 0.15


def load(paths: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]


def agreement(harness: list[dict[str, Any]], script: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (pair, payload) present on both sides."""
    ours: dict[tuple[str, int], list[float]] = {}
    for r in harness:
        if r.get("kind") == "run" and r.get("system") in PAIRS:
            rate = r.get("events_per_s_from_first_log") or r["events_per_s"]
            ours.setdefault((r["system"], int(r["payload"])), []).append(float(rate))
    theirs: dict[tuple[str, int], list[float]] = {}
    for r in script:
        if r.get("bench") == "user_ingest":
            theirs.setdefault((r["system"], int(r["payload"])), []).append(float(r["events_per_s"]))
    commits = sorted({r.get("git_commit") or r.get("machine", {}).get("git_commit", "") for r in harness + script})
    out = []
    for (system, payload), rates in sorted(ours.items(), key=lambda kv: (kv[0][1], list(PAIRS).index(kv[0][0]))):
        other = theirs.get((PAIRS[system], payload))
        if not other:
            continue
        h, s = statistics.median(rates), statistics.median(other)
        out.append(
            {
                "bench": "agreement",
                "system": system,
                "script_system": PAIRS[system],
                "payload": payload,
                "harness_events_per_s": round(h, 1),
                "script_events_per_s": round(s, 1),
                "harness_runs": len(rates),
                "script_runs": len(other),
                "ratio": round(h / s, 3),
                "within": abs(h / s - 1) <= BAR,
                "git_commit": ",".join(c for c in commits if c),
            }
        )
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| system | payload | harness | script | harness / script |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['payload']} B | {r['harness_events_per_s'] / 1e6:.3f} M/s ({r['harness_runs']}) | "
            f"{r['script_events_per_s'] / 1e6:.3f} M/s ({r['script_runs']}) | {r['ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--harness", nargs="+", required=True)
    p.add_argument("--script", nargs="+", required=True)
    p.add_argument("--out")
    a = p.parse_args()
    harness, script = load(a.harness), load(a.script)
    rows = agreement(harness, script)
    print(table(rows))
    print(f"{sum(r['within'] for r in rows)} of {len(rows)} within {BAR:.0%}")
    if a.out:
        with open(a.out, "a") as f:
            for r in [*(r for r in harness if r.get("kind") == "run"), *(r for r in script if r.get("bench")), *rows]:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
