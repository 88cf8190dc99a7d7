"""An unmodified program with and without ``chronompi record``: what the whole job costs, as a user times it.

Launches, in turn within each round (each system first in one round of three), the same third-party-style
mpi4py program (the Jacobi solver of ``tests/apps/unmodified/jacobi.py``, which never imports chronompi) on
N ranks

- ``plain``:  ``chronompi mpirun -n N -- python jacobi.py SIZE ITERS``
- ``plain-procs``: the same on N + S ranks, S being the service ranks ``record -n N`` adds: as many
  processes as ``record`` starts (the program then sees N + S ranks). On an oversubscribed node every
  process's start-up (Python, MPI_Init, whose cost grows with the job's process count) takes CPU from
  the others, so this row is the floor that any layout with S service ranks pays, chronompi or not
- ``record``: ``chronompi record -n N storage.root=SCRATCH -- python jacobi.py SIZE ITERS`` (N + S ranks)

and times the whole job from outside (``time.perf_counter`` around the launcher), like ``time mpirun ...``.
The program sees N ranks either way and does the same work; with ``record`` its logging records (one per
rank and iteration) are recorded. Each job's program prints its own start and end times (``--timing``),
so the table splits the job into start (launch to the program's first line), the program, and end (its
last line to the job's exit). The load average is read before every job. One untimed job of each kind
comes first and the jobs run without ``PYTHONDONTWRITEBYTECODE``: Python's bytecode caches are written,
as they are for a user after their first run (without them every rank compiles chronompi's modules).
One JSON line per job, then a summary per (N, system): median, min, max over the rounds. No MPI in this
process.

    python perf/bench_record.py [--ranks 8,16] [--rounds 5] [--iterations 200] [--out perf/out/record.jsonl]
    python perf/bench_record.py --nodes 2 --ranks 8,16   # on 2 nodes made of network namespaces (root)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import JsonLines

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "apps" / "unmodified" / "jacobi.py"


SYSTEMS = ("plain", "plain-procs", "record")


def services(n: int, cluster: Any = None) -> int:
    """The service ranks ``chronompi record -n n`` adds (the default layout on the cluster's nodes)."""
    from chronompi.config import LayoutConfig
    from chronompi.layout import service_ranks

    return service_ranks(n, len(cluster.nodes) if cluster is not None else 1, LayoutConfig())


def one_job(
    system: str, n: int, size: int, iterations: int, scratch: Path, timeout: float, cluster: Any = None
) -> dict[str, Any]:
    store = scratch / f"store-{system}-{n}"
    program = ["python", str(APP), str(size), str(iterations), "--timing"]
    where = cluster.mpirun_args() if cluster is not None else []  # hostfile, ssh stand-in, TCP on its subnet
    procs = n + services(n, cluster)
    if system in ("plain", "plain-procs"):
        np = n if system == "plain" else procs
        argv = [sys.executable, "-m", "chronompi", "mpirun", "-n", str(np), *where, "--", *program]
    else:
        argv = [sys.executable, "-m", "chronompi", "record", "-n", str(n), f"storage.root={store}", *where]
        argv += ["--", *program]
    load = os.getloadavg()[0]
    t_launch = time.time()
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # a user's Python caches bytecode
    if cluster is not None:  # mpirun on the cluster's head node (every node shares this machine's clock)
        r = cluster.on("head", argv, timeout=timeout, env=env, cwd=scratch)
    else:
        r = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=scratch, start_new_session=True, env=env
        )
    wall = time.perf_counter() - t0
    t_exit = time.time()
    if r.returncode != 0:
        raise RuntimeError(f"{system} -n {n} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    marks = dict(
        line.split()[1:3] for line in r.stdout.splitlines() if line.startswith("jacobi-timing ")
    )  # jacobi-timing start|end EPOCH_S
    start, end = float(marks["start"]), float(marks["end"])
    events = None
    if system == "record":
        import chronompi

        with chronompi.open_store(store) as st:
            events = len(st.replay("jacobi", "log"))
        shutil.rmtree(store, ignore_errors=True)
    return {
        "bench": "record",
        "system": system,
        "ranks": n,
        "processes": n if system == "plain" else procs,
        "size": size,
        "iterations": iterations,
        "wall_s": round(wall, 3),
        "start_s": round(start - t_launch, 3),
        "program_s": round(end - start, 3),
        "end_s": round(t_exit - end, 3),
        "events": events,
        "load1": round(load, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="8,16")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=20000)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", default=str(ROOT / "perf" / "out" / "record.jsonl"))
    p.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="run on a cluster in a box of this many nodes (tests/cluster.py: network namespaces, Open MPI over "
        "TCP, node-local TMPDIR; root), ranks spread evenly; 0: this machine as one node",
    )
    a = p.parse_args()
    out = JsonLines(a.out)
    rows = out.rows
    sizes = [int(x) for x in a.ranks.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        for system in ("plain", "record"):  # not timed: writes the bytecode caches, as any earlier run has
            one_job(system, 2, a.size, 1, Path(tmp), a.timeout)
        # on a cluster, one per job size (its hostfile's slots: the ranks per node); rounds alternate inside
        for group in [sizes] if not a.nodes else [[n] for n in sizes]:
            cluster = None
            if a.nodes:
                sys.path.insert(0, str(ROOT / "tests"))
                from cluster import Cluster

                cluster = Cluster(a.nodes, Path(tmp) / f"cluster-{group[0]}", slots=-(-group[0] // a.nodes))
            try:
                for rnd in range(a.rounds):
                    for n in group:
                        order = SYSTEMS[rnd % 3 :] + SYSTEMS[: rnd % 3]  # each first in turn
                        for system in order:
                            job = one_job(system, n, a.size, a.iterations, Path(tmp), a.timeout, cluster)
                            out.add({**job, "nodes": a.nodes or 1, "round": rnd})
            finally:
                if cluster is not None:
                    cluster.down()
    print(f"\nnodes: {a.nodes or 1}")
    print(f"| ranks | system | wall s | start s | program s | end s | load | (median [min-max] of {a.rounds}) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in sorted({r["ranks"] for r in rows}):
        for system in SYSTEMS:
            rs = [r for r in rows if r["ranks"] == n and r["system"] == system]

            def cell(key: str, rs: list[dict[str, Any]] = rs) -> str:
                v = [r[key] for r in rs]
                return f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"

            load = f"{min(r['load1'] for r in rs):.1f}-{max(r['load1'] for r in rs):.1f}"
            cells = " | ".join(cell(k) for k in ("wall_s", "start_s", "program_s", "end_s"))
            print(f"| {n} | {system} | {cells} | {load} | |")


if __name__ == "__main__":
    main()
