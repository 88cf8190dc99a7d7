"""``sync()`` latency on several nodes for each place a sync can be confirmed: node-local staging or the store.

On a job of several nodes ``storage.staging=auto`` (the default) commits into the shared store, so that a
confirmed sync outlives the loss of any one node; ``storage.staging=local`` commits on the grapher's
node-local disk (faster, lost with that node). This runs ``perf/bench_sync.py`` on a cluster in a box
(tests/cluster.py: network namespaces, Open MPI over TCP, each node's TMPDIR a tmpfs of its own, the store on
this machine's disk) for both, alternating within each round, and appends bench_sync's rows, each with
``staging`` and the load average before the job, to the output file. Root only (namespaces).

    python perf/bench_sync_nodes.py [--nodes 2] [--ranks 8] [--rounds 3] [--out perf/results/sync-nodes.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sync-count", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "perf" / "out" / "sync-nodes.jsonl"))
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    from cluster import Cluster

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "perf" / "out" if (ROOT / "perf" / "out").is_dir() else None) as tmp:
        cluster = Cluster(a.nodes, Path(tmp) / "cluster", slots=-(-a.ranks // a.nodes))
        try:
            for rnd in range(a.rounds):
                for staging in ("auto", "local") if rnd % 2 == 0 else ("local", "auto"):
                    rows = Path(tmp) / f"rows-{rnd}-{staging}.jsonl"
                    params = {
                        "sync_count": a.sync_count,
                        "scratch": str(Path(tmp) / "scratch"),  # on the shared file system (this machine's disk)
                        "layout": {"keepers": 0, "graphers": 0},  # the default rule: a keeper per node
                        "chronompi": {"storage": {"staging": staging}},
                    }
                    argv = [sys.executable, "-m", "chronompi", "mpirun", "-n", str(a.ranks), *cluster.mpirun_args()]
                    argv += ["--", sys.executable, str(ROOT / "perf" / "bench_sync.py"), json.dumps(params), str(rows)]
                    load = os.getloadavg()[0]
                    r = cluster.on("head", argv, timeout=a.timeout, cwd=Path(tmp))
                    if r.returncode != 0:
                        tail = f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
                        raise SystemExit(f"staging={staging}: exit {r.returncode}\n{tail}")
                    with out.open("a") as f:
                        for line in rows.read_text().splitlines():
                            row = json.loads(line)
                            row.update(staging=staging, nodes=a.nodes, ranks=a.ranks, round=rnd, load_before=load)
                            f.write(json.dumps(row) + "\n")
                            ph = row.get("phase") or row.get("name")
                            ms = {k: v for k, v in row.items() if k.startswith("ms_")}
                            print(staging, rnd, ph, row.get("until"), ms, f"load {load:.1f}")
                    time.sleep(1)
        finally:
            cluster.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
