"""Fault injection for crash tests: ``CHRONOMPI_FAULT=<point>[:<n>]`` parks the process there.

When a process reaches the named point for the n-th time (default 1) it creates
``$CHRONOMPI_FAULT_DIR/at-<point>`` and sleeps, so a test can ``kill -9`` the job at
exactly that moment. Unset, a fault point costs one comparison.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_SPEC = os.environ.get("CHRONOMPI_FAULT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_hits = 0


def fault_point(name: str) -> None:
    global _hits
    if _POINT != name:
        return
    _hits += 1
    if _hits >= int(_NTH or 1):
        Path(os.environ.get("CHRONOMPI_FAULT_DIR", "."), f"at-{name}").touch()
        time.sleep(3600)
