"""Test app: start a session with the config given as JSON; print how it ended on every rank.
With a second argument ``uncaught`` the error is not caught: Python reports it (chronompi's excepthook);
with ``stories=JSON`` the session holds those (chronicle, story) pairs from the start."""

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
held = json.loads(sys.argv[2][8:]) if sys.argv[2:3] and sys.argv[2].startswith("stories=") else []
try:
    with chronompi.session(cfg=json.loads(sys.argv[1]), stories=held) as client:
        if client is not None and held:
            st = client.acquire_story(*held[0])  # held already: no request, the same Story
            assert st.id == 1 and st.seq == 0, (st.id, st.seq)
            st.log(b"x")
except chronompi.ChronoError as exc:
    print(f"RANK {rank} {type(exc).__name__}: {exc}", flush=True)
    sys.exit(3)
print(f"RANK {rank} OK", flush=True)
