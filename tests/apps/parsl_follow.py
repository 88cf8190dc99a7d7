"""Test app: an HTEX workflow whose tasks come in waves, for ``chronompi export parsl --follow`` to watch.

Usage: mpirun -n 4 python parsl_follow.py OUTDIR STORE [WAVES] [PER_WAVE] [GAP_S]
Client rank 0 runs Parsl (HTEX, resource monitoring every 0.5 s, retries=1, one app failing on its first
try per wave) with ChronompiHub; a wave of tasks every GAP_S seconds. Writes OUTDIR/workflow-done when
the workflow (parsl.load's block) has ended, then the session ends.
Parsl is imported at module level, mpi4py/chronompi only in main() (docs/parsl.md, pitfall 1).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import parsl
from parsl.app.app import python_app

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parsl_workflow import make_config  # noqa: E402  (the driver only: apps must live in __main__)


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


def main() -> int:
    outdir, store = Path(sys.argv[1]), sys.argv[2]
    waves = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    per_wave = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    gap = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    import chronompi

    with chronompi.session(cfg={"storage": {"root": store}}) as client:
        if client is None or client.comm.Get_rank() != 0:
            return 0
        try:
            from chronompi.parsl import ChronompiHub

            hub = ChronompiHub(client, workflow_name="follow", resource_monitoring_interval=0.5)
            markers = str(outdir / "markers")
            os.makedirs(markers, exist_ok=True)
            futs = []
            with parsl.load(make_config("htex", hub, str(outdir / "runinfo"))):
                for w in range(waves):
                    futs += [square(w * per_wave + i) for i in range(per_wave)] + [flaky(w, markers)]
                    time.sleep(gap)
                results = [f.result() for f in futs]
            (outdir / "workflow-done").write_text(json.dumps({"results": len(results), "counts": hub.counts}))
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(1)  # pitfall 3: do not leave the other ranks waiting
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
