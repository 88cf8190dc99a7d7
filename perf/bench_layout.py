"""The default layout against the fixed 1 keeper + 1 grapher, on the demo workload, in the same run.

A driver, not an MPI program: each round runs ``chronompi mpirun -n RANKS chronompi run`` once per
variant (the order rotated every round), each into a fresh store, and reads the run record the visor
wrote (``STORE/runs/r*.json``):

- ``wait_s``: the clients' total backpressure wait (sum of ``wait_s`` over the clients: time spent with
  ``client.max_inflight`` batches in flight);
- ``events_per_s``: events stored / (last event's time - first event's time), the clients' logging span;
- ``job_s``: wall time of the whole ``mpirun`` (start-up and shut-down included);
- ``rss_mib``: peak RSS of the visor, and the largest of the keepers and of the graphers (getrusage);
- the 1-minute load average before and after each run.

Variants: ``fixed`` = ``layout=single`` (1 keeper, 1 grapher: the layout before the rule), ``default``
= no layout override (conf/layout/auto.yaml: the rule of chronompi/layout.py); more with
``--variant NAME=OVERRIDE,OVERRIDE``. Extra overrides for every run (e.g. ``workload.events=5000``) go
after ``--``.

Usage: ``python perf/bench_layout.py [--ranks 64] [--rounds 3] [--timeout 600] [--out FILE.jsonl]
[--variant NAME=OVR,...] [-- OVERRIDES...]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"fixed": ["layout=single"], "default": []}


def one(name: str, overrides: list[str], ranks: int, common: list[str], timeout: float, tmp: Path) -> dict[str, Any]:
    store = tmp / f"store-{name}"
    shutil.rmtree(store, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "chronompi", "mpirun", "-n", str(ranks),
        "chronompi", "run", *overrides, f"storage.root={store}", "workload.progress=false", "service.summary=false",
        *common,
    ]  # fmt: skip
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True)
        failed = r.returncode != 0 and f"exit {r.returncode}: {(r.stderr or r.stdout)[-2000:]}"
    except subprocess.TimeoutExpired:
        failed = f"timed out after {timeout} s"
    job_s = time.perf_counter() - t0
    row: dict[str, Any] = {"variant": name, "overrides": overrides + common, "ranks": ranks, "job_s": round(job_s, 2)}
    row["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    records = sorted((store / "runs").glob("r*.json")) if store.exists() else []
    if failed or not records:
        row["error"] = failed or "no run record"
        return row
    rec = json.loads(records[-1].read_text())
    roles = rec.get("roles", {})
    clients = roles.get("client", [])
    span = ((rec.get("last_time") or 0) - (rec.get("first_time") or 0)) / 1e9
    epoch0 = (rec.get("epochs") or [{}])[0]
    row.update(
        status=rec.get("status"),
        keepers=len(epoch0.get("keepers", roles.get("keeper", []))),
        graphers=len(epoch0.get("graphers", roles.get("grapher", []))),
        clients=len(clients),
        spares=rec.get("config", {}).get("layout", {}).get("spares"),
        epochs=len(rec.get("epochs") or []),
        events=rec.get("events_stored"),
        events_ok=rec.get("events_stored") == rec.get("events_logged"),
        wait_s=round(sum(c.get("wait_s", 0.0) for c in clients), 3),
        waits=sum(c.get("waits", 0) for c in clients),
        events_per_s=round(rec["events_stored"] / span) if span > 0 else None,
        rss_mib={
            "visor": rec.get("visor_max_rss_mib"),
            "keeper": max((s.get("max_rss_mib", 0) for s in roles.get("keeper", [])), default=None),
            "grapher": max((s.get("max_rss_mib", 0) for s in roles.get("grapher", [])), default=None),
        },
    )
    shutil.rmtree(store, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    ap.add_argument("--out", type=Path, default=None, help="append JSON lines here (default perf/out/layout.jsonl)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVR,OVR")
    ap.add_argument("overrides", nargs="*", help="chronompi run overrides for every run (after --)")
    args = ap.parse_args()
    variants = dict(VARIANTS)
    for v in args.variant:
        name, _, ovr = v.partition("=")
        variants[name] = [o for o in ovr.split(",") if o]
    out = args.out or ROOT / "perf" / "out" / "layout.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(variants)
    rows: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="chronompi-layout-") as tmp:
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for name in order:
                row = one(name, variants[name], args.ranks, args.overrides, args.timeout, Path(tmp))
                row.update(bench="layout", round=rnd, started=started, time=time.time())
                rows.append(row)
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print(f"\n{args.ranks} ranks, {args.rounds} round(s), overrides {' '.join(args.overrides) or '(none)'}")
    print(
        "variant   layout (k+g, clients)   wait_s median [rounds]          events/s median   job_s   max RSS MiB v/k/g"
    )
    for name in names:
        ok = [r for r in rows if r["variant"] == name and "error" not in r]
        bad = [r["error"] for r in rows if r["variant"] == name and "error" in r]
        if not ok:
            print(f"{name:9s} failed: {bad[:1]}")
            continue
        last = ok[-1]
        waits = [r["wait_s"] for r in ok]
        rates = [r["events_per_s"] or 0 for r in ok]
        rss = "/".join(str(max((r["rss_mib"][k] or 0) for r in ok)) for k in ("visor", "keeper", "grapher"))
        print(
            f"{name:9s} {last['keepers']}+{last['graphers']}, {last['clients']:3d} clients     "
            f"{statistics.median(waits):8.2f} {waits!s:22s} {statistics.median(rates):12,.0f}   "
            f"{statistics.median(r['job_s'] for r in ok):6.1f}   {rss}" + (f"  ({len(bad)} failed)" if bad else "")
        )
    fixed = [r["wait_s"] for r in rows if r["variant"] == "fixed" and "error" not in r]
    new = [r["wait_s"] for r in rows if r["variant"] == "default" and "error" not in r]
    if fixed and new:
        f, n = statistics.median(fixed), statistics.median(new)
        print(f"backpressure wait, fixed / default: {f:.2f} s / {n:.2f} s = {f / n if n else float('inf'):.1f}x")


if __name__ == "__main__":
    main()
