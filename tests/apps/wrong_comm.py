"""Test app: a program that keeps ``comm = MPI.COMM_WORLD`` from before the session.

Usage: wrong_comm.py STORE MODE [SLEEP_S]
- "world": every client logs its events, then calls ``comm.Barrier()`` on MPI.COMM_WORLD, which
  includes the service ranks: it never returns; the watchdog must end the job with one message.
- "recv": every client logs, then waits in ``comm.recv(source=0)`` on MPI.COMM_WORLD (rank 0 is the
  visor, which never sends there): once every client is blocked, the job must end the same way.
- "slow": client 0 sleeps SLEEP_S seconds before ``client.comm.Barrier()`` (the others wait for it
  there): a legit wait, never flagged; every client logs one more event after it.
"""

from __future__ import annotations

import sys
import time

N_EVENTS = 60  # (tests import this module: nothing here may start MPI or arm the hang guard)


def payload(rank: int, i: int) -> bytes:
    return bytes([rank, i % 256, 0, 255]) * (1 + i % 7) + b"ev-%d-%d" % (rank, i)


if __name__ == "__main__":
    import _hang

    _hang.arm(150)

    from mpi4py import MPI

    import chronompi

    comm = MPI.COMM_WORLD  # kept from before the session, as the programs this test stands for do
    store, mode = sys.argv[1], sys.argv[2]
    sleep_s = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    cfg = {"storage": {"root": store}, "service": {"summary": False}}
    with chronompi.session(cfg=cfg) as client:
        if client is not None:
            r = client.comm.Get_rank()
            if r == 0:
                client.create_chronicle("c")
            client.comm.Barrier()
            st = client.acquire_story("c", f"s{r}")
            for i in range(N_EVENTS):
                st.log(payload(r, i))
            if mode in ("world", "recv"):
                print(f"HANG-START {r} {time.time():.3f}", flush=True)
            if mode == "world":
                comm.Barrier()
            elif mode == "recv":
                comm.recv(source=0, tag=7)
            else:
                if r == 0:
                    time.sleep(sleep_s)
                client.comm.Barrier()
                st.log(b"after")
