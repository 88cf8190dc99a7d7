"""Hang guard for test apps: dump every thread's traceback, then exit, before the test's timeout.

Dumping and exiting are separated by a few seconds so that every rank gets to dump
before mpirun kills the job on the first exit.
"""

from __future__ import annotations

import faulthandler
import os
import threading
import time


def arm(default_s: float = 100.0) -> None:
    """Arm the guard in an app process (never call it at import time of a module tests import)."""
    limit = float(os.environ.get("CHRONOMPI_TEST_HANG_S", default_s))
    faulthandler.dump_traceback_later(limit, exit=False)

    def _exit() -> None:
        time.sleep(limit + 4)
        os._exit(70)

    threading.Thread(target=_exit, daemon=True, name="hang-guard").start()
