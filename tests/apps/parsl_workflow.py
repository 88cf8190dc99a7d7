"""Test app: the same small Parsl workflow, monitored by chronompi (under mpirun) or by Parsl's own SQLite.

Usage:
  mpirun -n 4 python parsl_workflow.py chronompi OUTDIR STORE [EXECUTORS]   # client rank 0 runs Parsl
  python parsl_workflow.py parsl OUTDIR [EXECUTORS]                         # reference: Parsl's MonitoringHub
  python parsl_workflow.py dropin OUTDIR STORE [EXECUTORS]   # a plain driver: ChronompiHub(store=STORE), no mpirun
EXECUTORS: comma-separated, of "threads" (ThreadPoolExecutor) and "htex" (HighThroughputExecutor); one
workflow run (workflow_name "wf-<executor>") per executor. With chronompi, the threads run uses
ChronompiRadio: its workers' WORKER_TASK_INFO messages are logged directly, not through the hub.
Writes OUTDIR/result-<mode>.json (task results and, for chronompi, the hub's message counts per type).

Nothing here imports mpi4py (or chronompi) at module level: Parsl's spawned processes re-import this
module, and MPI_Init there would hang (docs/parsl.md, pitfall 1).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import parsl
from parsl.app.app import python_app
from parsl.config import Config

N_SQUARES = 16
N_FLAKY = 5
N_DOOMED = 2


@python_app
def square(x: int) -> int:
    return x * x


@python_app
def flaky(x: int, marker_dir: str) -> int:
    """Fails on its first try, succeeds on the retry."""
    import os

    marker = os.path.join(marker_dir, f"flaky-{x}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError(f"first try of flaky({x}) fails")
    return x


@python_app
def doomed(x: int) -> int:
    raise RuntimeError(f"doomed({x}) always fails")


@python_app
def total(*xs: int) -> int:
    return sum(xs)


@python_app
def nap(s: float) -> float:
    import time

    time.sleep(s)
    return s


def make_config(executor: str, monitoring: Any, run_dir: str, radio: Any = None) -> Config:
    if executor == "threads":
        from parsl.executors.threads import ThreadPoolExecutor

        ex: Any = ThreadPoolExecutor(label="threads", max_threads=4, remote_monitoring_radio=radio)
    else:
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        ex = HighThroughputExecutor(
            label="htex",
            address="127.0.0.1",
            max_workers_per_node=2,
            heartbeat_period=1,
            poll_period=100,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            encrypted=False,
        )
    return Config(
        executors=[ex],
        monitoring=monitoring,
        retries=2,
        run_dir=run_dir,
        strategy="none",
        initialize_logging=False,
    )


def workflow(marker_dir: str) -> dict[str, Any]:
    os.makedirs(marker_dir, exist_ok=True)
    squares = [square(i) for i in range(N_SQUARES)]
    flakies = [flaky(i, marker_dir) for i in range(N_FLAKY)]
    doom = [doomed(i) for i in range(N_DOOMED)]
    s = total(*squares)
    naps = [nap(0.5)]
    out: dict[str, Any] = {"total": s.result(), "flaky": [f.result() for f in flakies]}
    out["naps"] = [n.result() for n in naps]
    out["doomed"] = [type(d.exception()).__name__ for d in doom]
    return out


def run(mode: str, executor: str, outdir: Path, client: Any = None) -> dict[str, Any]:
    markers = str(outdir / f"markers-{mode}-{executor}")
    run_dir = str(outdir / f"runinfo-{mode}")
    interval = 0.2 if executor == "htex" else 0  # threads: no per-task monitor fork inside an MPI process
    radio = None
    if mode == "parsl":
        from parsl.monitoring import MonitoringHub

        hub: Any = MonitoringHub(
            workflow_name=f"wf-{executor}",
            logging_endpoint=f"sqlite:///{outdir / 'reference.db'}",
            resource_monitoring_interval=interval,
        )
    elif mode == "dropin":  # the one line a Parsl user changes: no client, no mpirun, no radio; the hub's own session
        from chronompi.parsl import ChronompiHub

        hub = ChronompiHub(
            store=client,
            workflow_name=f"wf-{executor}",
            logging_endpoint=f"sqlite:///{outdir / 'dropin.db'}",  # Parsl's database too, as Parsl's hub writes it
            resource_monitoring_interval=interval,
        )
    else:
        from chronompi.parsl import ChronompiHub, ChronompiRadio

        hub = ChronompiHub(client, workflow_name=f"wf-{executor}", resource_monitoring_interval=interval)
        if executor == "threads":
            radio = ChronompiRadio()
    t0 = time.monotonic()
    with parsl.load(make_config(executor, hub, run_dir, radio)):
        out = workflow(markers)
    out["seconds"] = round(time.monotonic() - t0, 2)
    if mode in ("chronompi", "dropin"):
        out["hub_counts"] = hub.counts
        out["hub_errors"] = hub.errors
    return out


def main() -> int:
    mode, outdir = sys.argv[1], Path(sys.argv[2])
    if mode == "parsl":
        executors = (sys.argv[3] if len(sys.argv) > 3 else "threads,htex").split(",")
        result = {ex: run(mode, ex, outdir) for ex in executors}
        (outdir / "result-parsl.json").write_text(json.dumps(result, indent=1))
        return 0
    store = sys.argv[3]
    executors = (sys.argv[4] if len(sys.argv) > 4 else "threads,htex").split(",")
    if mode == "dropin":
        result = {ex: run(mode, ex, outdir, store) for ex in executors}
        (outdir / "result-dropin.json").write_text(json.dumps(result, indent=1))
        return 0
    import chronompi  # lazily: see the module docstring

    cfg = {"storage": {"root": store}, "client": {"batch_ms": 10}, "keeper": {"window_ms": 20}}
    with chronompi.session(cfg=cfg) as client:
        if client is None or client.comm.Get_rank() != 0:
            return 0  # service ranks, and client ranks other than the Parsl driver
        try:
            result = {ex: run(mode, ex, outdir, client) for ex in executors}
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(1)  # pitfall 3: do not leave the other ranks waiting
            raise
        (outdir / "result-chronompi.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
