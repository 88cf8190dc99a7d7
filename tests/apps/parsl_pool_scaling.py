"""Test app: a worker pool's block retired under htex_auto_scale, monitored by ChronompiHub or by Parsl's own hub.

Usage: mpirun -n 5 python parsl_pool_scaling.py HUB OUTDIR STORE   (visor, keeper, grapher, driver, 1 pool rank)
HUB: ``chronompi`` (ChronompiHub, ChronompiPoolRadio) or ``parsl`` (Parsl's MonitoringHub writing
OUTDIR/parsl.db, the workers on HTEX's default radio): the same job, the same pool rank, only the hub differs.

One task on a HighThroughputExecutor whose one block is a pool rank (serve_pools), strategy
``htex_auto_scale`` with a short idle time. The provider's min_blocks equal its max_blocks, so the block
retires at the DataFlowKernel's cleanup: the job status poller scales every block in (Parsl holds the
block's manager, and the interchange sends its last NODE_INFO, ``active`` False, then the provider cancels
the block), and the executor's shutdown terminates the interchange right after. Writes
OUTDIR/result-scaling-HUB.json. No mpi4py/chronompi import at module level (docs/parsl.md, pitfall 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

APPS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, APPS)
# the workers unpickle this module's app by reference: they must find the module too
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (APPS, os.environ.get("PYTHONPATH")) if p)

import parsl  # noqa: E402
from parsl.app.app import python_app  # noqa: E402
from parsl.config import Config  # noqa: E402


@python_app
def square(x: int) -> int:
    return x * x


def run(mode: str, client: Any, provider: Any, outdir: Path) -> dict[str, Any]:
    from parsl.executors import HighThroughputExecutor

    if mode == "chronompi":
        from chronompi.parsl import ChronompiHub, ChronompiPoolRadio

        hub: Any = ChronompiHub(client, workflow_name="wf-scaling", resource_monitoring_interval=0)
        radio: Any = ChronompiPoolRadio()
    else:
        from parsl.monitoring import MonitoringHub
        from parsl.monitoring.radios.htex import HTEXRadio

        db = f"sqlite:///{outdir / 'parsl.db'}"
        hub = MonitoringHub(workflow_name="wf-scaling", logging_endpoint=db, resource_monitoring_interval=0)
        radio = HTEXRadio()
    htex = HighThroughputExecutor(
        label="htex",
        address="127.0.0.1",
        max_workers_per_node=1,
        heartbeat_period=1,
        poll_period=100,
        provider=provider,
        remote_monitoring_radio=radio,
        encrypted=False,
    )
    config = Config(
        executors=[htex],
        monitoring=hub,
        run_dir=str(outdir / f"runinfo-{mode}"),
        strategy="htex_auto_scale",
        strategy_period=0.1,
        max_idletime=0.5,
        initialize_logging=True,  # runinfo-*/000/parsl.log: when the hold and the interchange's end happened
    )
    returned = []  # each cancelled block: its pool's exit code when cancel() returned (None: still running)
    cancel = provider.cancel

    def cancel_and_look(job_ids: Any) -> list[bool]:
        done = cancel(job_ids)
        returned.extend(s.exit_code for s in provider.status(job_ids))
        return done

    provider.cancel = cancel_and_look
    with provider, parsl.load(config):
        out: dict[str, Any] = {"square": square(7).result()}
    out["exit_codes_when_cancel_returned"] = returned
    if mode == "chronompi":
        out.update(hub_counts=hub.counts, hub_errors=hub.errors)
    return out


def main() -> int:
    from _hang import arm
    from parsl_pools import serve_and_run

    arm()
    mode, outdir, store = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    return serve_and_run(store, lambda c, p: run(mode, c, p, outdir), outdir / f"result-scaling-{mode}.json")


if __name__ == "__main__":
    sys.exit(main())
