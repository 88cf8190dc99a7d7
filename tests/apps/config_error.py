"""Test app: start a session with the config given as JSON; print how it ended on every rank.
With a second argument ``uncaught`` the error is not caught: Python reports it (chronompi's excepthook)."""

from __future__ import annotations

import json
import sys

import _hang  # noqa: E402

_hang.arm(60)

from mpi4py import MPI  # noqa: E402

import chronompi  # noqa: E402

rank = MPI.COMM_WORLD.Get_rank()
if sys.argv[2:] == ["uncaught"]:
    with chronompi.session(cfg=json.loads(sys.argv[1])) as client:
        pass
try:
    with chronompi.session(cfg=json.loads(sys.argv[1])) as client:
        pass
except chronompi.ChronoError as exc:
    print(f"RANK {rank} {type(exc).__name__}: {exc}", flush=True)
    sys.exit(3)
print(f"RANK {rank} OK", flush=True)
