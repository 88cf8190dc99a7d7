"""What ``MPI_Init`` costs as a job grows, with no chronompi in it: the floor under ``bench_record.py``.

Launches ``chronompi mpirun -n N python -c PROBE`` for each N, the sizes in turn within each round. The
probe is ``from mpi4py import MPI`` (which calls ``MPI_Init``) timed by ``resource.getrusage`` around it,
then one gather: rank 0 writes every rank's CPU seconds in ``MPI_Init``. On an oversubscribed node (more
ranks than cores) that CPU is what the other ranks wait for, so its sum over the ranks bounds the job's
start from below. One JSON line per job (median and sum over the ranks, the job's wall time, the load
average before it); a summary per N. No MPI in this process.

    python perf/bench_mpi_init.py [--ranks 32,64,75] [--rounds 3] [--out perf/out/mpi-init.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import JsonLines

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0 = cpu()
from mpi4py import MPI
spent = cpu() - c0
every = MPI.COMM_WORLD.gather(spent, root=0)
if MPI.COMM_WORLD.Get_rank() == 0:
    print("mpi-init " + json.dumps(every))
"""


def one_job(n: int, timeout: float) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    load = os.getloadavg()[0]
    argv = [sys.executable, "-m", "chronompi", "mpirun", "-n", str(n), "--", sys.executable, "-c", PROBE]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, start_new_session=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"-n {n} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    line = next(x for x in r.stdout.splitlines() if x.startswith("mpi-init "))
    every = json.loads(line.split(" ", 1)[1])
    return {
        "bench": "mpi_init",
        "processes": n,
        "init_cpu_s_median": round(statistics.median(every), 4),
        "init_cpu_s_sum": round(sum(every), 3),
        "wall_s": round(wall, 3),
        "load1": round(load, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="32,64,75")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--out", default=str(ROOT / "perf" / "out" / "mpi-init.jsonl"))
    a = p.parse_args()
    out = JsonLines(a.out)
    rows = out.rows
    sizes = [int(x) for x in a.ranks.split(",")]
    one_job(2, a.timeout)  # not kept: the first job after a while pays cold caches
    for rnd in range(a.rounds):
        for n in sizes[rnd % len(sizes) :] + sizes[: rnd % len(sizes)]:
            out.add({**one_job(n, a.timeout), "round": rnd})
    print(f"\n| processes | MPI_Init CPU s per process | summed | job wall s | (median of {a.rounds}) |")
    print("| --- | --- | --- | --- | --- |")
    for n in sizes:
        rs = [r for r in rows if r["processes"] == n]
        cells = [statistics.median(r[k] for r in rs) for k in ("init_cpu_s_median", "init_cpu_s_sum", "wall_s")]
        print(f"| {n} | {cells[0]:.3f} | {cells[1]:.2f} | {cells[2]:.2f} | |")


if __name__ == "__main__":
    main()
