"""Test app: sessions on a user's sub-communicator, two at once, then a second session in the same job.

The world is split in two halves (even / odd ranks); each half runs its own session on its
own communicator, with its own store, at the same time; then every rank takes part in a
second session over the whole world. Usage: sessions.py DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import _hang  # noqa: E402
from mpi4py import MPI

import chronompi

_hang.arm(100)

out = Path(sys.argv[1])
world = MPI.COMM_WORLD
half = world.Split(world.Get_rank() % 2, world.Get_rank())
color = world.Get_rank() % 2
cfg = {"storage": {"root": str(out / f"half{color}")}, "service": {"summary": False}}
with chronompi.session(half, cfg) as client:
    if client is not None:
        if client.comm.Get_rank() == 0:
            client.create_chronicle("c")
        client.comm.Barrier()
        with client.acquire_story("c", "s") as st:
            for i in range(500):
                st.log(b"half%d-rank%d-%d" % (color, world.Get_rank(), i))
half.Free()
# the user's communicator still works and was never used by chronompi
assert world.allreduce(1) == world.Get_size()
with chronompi.session(cfg={"storage": {"root": str(out / "whole")}, "service": {"summary": False}}) as client:
    if client is not None:
        if client.comm.Get_rank() == 0:
            client.create_chronicle("c")
        client.comm.Barrier()
        with client.acquire_story("c", "s") as st:
            st.log_many([b"whole-%d-%d" % (world.Get_rank(), i) for i in range(300)])
print(f"RANK {world.Get_rank()} DONE", flush=True)
