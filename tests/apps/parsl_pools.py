"""Test app: parsl_workflow.py's HTEX workflow with the worker pools on client ranks (chronompi.parsl.serve_pools).

Usage: mpirun -n 6 python parsl_pools.py OUTDIR STORE [ADDRESS]   (visor, keeper, grapher, driver, 2 pool ranks)
ADDRESS: where the pools reach the driver's interchange (default 127.0.0.1; ``hostname``: the address of this
node's name, for pools on other nodes).

Client rank 0 runs the Parsl driver with a ChronompiHub and a HighThroughputExecutor whose provider is
serve_pools' ChronompiPoolProvider and whose radio is ChronompiPoolRadio; client ranks 1 and 2 run one
process_worker_pool each and record its workers' WORKER_TASK_INFO and RESOURCE_INFO themselves.
The workflow (workflow_name "wf-htex", the same apps, retries and resource interval) is parsl_workflow.py's,
so its reference run (``python parsl_workflow.py parsl OUTDIR htex``) is the comparison.
Writes OUTDIR/result-pools.json. No mpi4py/chronompi import at module level (docs/parsl.md, pitfall 1).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

APPS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, APPS)
# the workers unpickle parsl_workflow's apps by reference: they must find the module too
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (APPS, os.environ.get("PYTHONPATH")) if p)

import parsl  # noqa: E402
from parsl.config import Config  # noqa: E402
from parsl_workflow import workflow  # noqa: E402


def run(client: Any, provider: Any, outdir: Path, address: str) -> dict[str, Any]:
    from parsl.executors import HighThroughputExecutor

    from chronompi.parsl import ChronompiHub, ChronompiPoolRadio

    hub = ChronompiHub(client, workflow_name="wf-htex", resource_monitoring_interval=0.2)
    htex = HighThroughputExecutor(
        label="htex",
        address=address,
        max_workers_per_node=2,
        heartbeat_period=1,
        poll_period=100,
        provider=provider,
        remote_monitoring_radio=ChronompiPoolRadio(),
        encrypted=False,
    )
    config = Config(
        executors=[htex],
        monitoring=hub,
        retries=2,
        run_dir=str(outdir / "runinfo-pools"),
        strategy="none",
        initialize_logging=False,
    )
    t0 = time.monotonic()
    with provider, parsl.load(config):
        out = workflow(str(outdir / "markers-pools"))
    out["seconds"] = round(time.monotonic() - t0, 2)
    out.update(hub_counts=hub.counts, hub_errors=hub.errors, driver_client=client.id, pools=provider.stats)
    return out


def serve_and_run(store: str, run_driver: Callable[[Any, Any], dict[str, Any]], result: Path) -> int:
    """A session in which every client rank but the driver serves a worker pool (serve_pools); the driver calls
    ``run_driver(client, provider)`` and writes what it returns to ``result`` as JSON, or aborts the job."""
    import chronompi  # lazily: see the module docstring
    from chronompi.parsl import serve_pools

    cfg = {"storage": {"root": store}, "client": {"batch_ms": 10}, "keeper": {"window_ms": 20}}
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return 0
        provider = serve_pools(client)
        if provider is None:
            return 0  # a pool rank: its pools ran, its workers' messages are recorded
        try:
            out = run_driver(client, provider)
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(1)  # pitfall 3: do not leave the other ranks waiting
            raise
        result.write_text(json.dumps(out, indent=1, default=str))
    return 0


def main() -> int:
    from _hang import arm

    arm()
    outdir, store = Path(sys.argv[1]), sys.argv[2]
    address = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    if address == "hostname":
        import socket

        address = socket.gethostbyname(socket.gethostname())  # (ZMQ binds to an address, not a name)
    return serve_and_run(store, lambda c, p: run(c, p, outdir, address), outdir / "result-pools.json")


if __name__ == "__main__":
    sys.exit(main())
