"""Test app: Parsl tasks executed on *other* client ranks of the job, recording through ChronompiRadio.

Usage: mpirun -n 5 python parsl_ranks.py OUTDIR STORE   (visor, keeper, grapher, 2 clients)

Client rank 0 runs the Parsl driver with a ChronompiHub; client rank 1 serves tasks through
mpi4py.futures.MPICommExecutor over client.comm (serialised with dill, which Parsl installs), with its own
chronompi client registered: the WORKER_TASK_INFO messages of those tasks are recorded by rank 1 itself,
via ChronompiRadio, without going back to the driver. Writes OUTDIR/result-ranks.json.
No mpi4py/chronompi import at module level (docs/parsl.md, pitfall 1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import parsl
from parsl.app.app import python_app
from parsl.config import Config
from parsl.executors.threads import ThreadPoolExecutor


class RankPoolExecutor(ThreadPoolExecutor):
    """A Parsl executor whose tasks run on the other ranks of an MPI communicator (mpi4py.futures)."""

    def __init__(self, comm: Any, label: str = "ranks", **kw: Any) -> None:
        super().__init__(label=label, **kw)
        self.comm = comm

    def start(self) -> None:
        from mpi4py.futures import MPICommExecutor

        self._ctx = MPICommExecutor(self.comm, root=0)
        self.executor = self._ctx.__enter__()

    def shutdown(self, block: bool = True) -> None:
        self._ctx.__exit__(None, None, None)
        self.executor = _Done()
        super().shutdown(block)


class _Done:
    def shutdown(self, wait: bool = True) -> None:
        pass


@python_app
def where(x: int) -> tuple[int, int]:
    import os

    return x, os.getpid()


@python_app
def flaky(x: int, marker_dir: str) -> int:
    import os

    marker = os.path.join(marker_dir, f"flaky-{x}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError(f"first try of flaky({x}) fails")
    return x


def main() -> int:
    outdir, store = Path(sys.argv[1]), sys.argv[2]
    import dill
    from mpi4py import MPI

    import chronompi
    from chronompi.parsl import ChronompiHub, ChronompiRadio, register_client

    MPI.pickle.__init__(dill.dumps, dill.loads)  # Parsl's task wrappers are closures
    cfg = {"storage": {"root": store}, "client": {"batch_ms": 10}, "keeper": {"window_ms": 20}}
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return 0
        comm = client.comm
        if comm.Get_rank() != 0:
            register_client(client)  # this rank's tasks record their worker messages themselves
            from mpi4py.futures import MPICommExecutor

            with MPICommExecutor(comm, root=0):
                pass  # serves tasks until the driver shuts the executor down
            register_client(None)
            return 0
        try:
            hub = ChronompiHub(client, workflow_name="wf-ranks", resource_monitoring_interval=0)
            ex = RankPoolExecutor(comm, remote_monitoring_radio=ChronompiRadio())
            config = Config(
                executors=[ex],
                monitoring=hub,
                retries=2,
                run_dir=str(outdir / "runinfo"),
                strategy="none",
                initialize_logging=False,
            )
            markers = outdir / "markers"
            markers.mkdir(exist_ok=True)
            with parsl.load(config):
                pids = [where(i) for i in range(12)]
                flakies = [flaky(i, str(markers)) for i in range(3)]
                result = {"pids": [f.result()[1] for f in pids], "flaky": [f.result() for f in flakies]}
            import os

            result.update(driver_pid=os.getpid(), hub_counts=hub.counts, driver_client=client.id)
            (outdir / "result-ranks.json").write_text(json.dumps(result))
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(1)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
