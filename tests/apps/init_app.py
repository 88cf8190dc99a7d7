"""Test app: the one-line start. chronompi.init() at the top, then plain mpi4py on MPI.COMM_WORLD,
chronompi.story() from two threads per rank, a logging record per rank. Usage: init_app.py STORE"""

import logging
import sys
import threading

import _hang  # noqa: E402

_hang.arm(100)

import chronompi  # noqa: E402

client = chronompi.init(cfg={"storage": {"root": sys.argv[1]}})

from mpi4py import MPI  # noqa: E402

comm = MPI.COMM_WORLD
assert comm.Get_size() == client.comm.Get_size(), "MPI.COMM_WORLD is not the clients' communicator"
total = comm.allreduce(1)


def work(t: int) -> None:
    st = chronompi.story("app", "events")
    for i in range(100):
        st.log(f"{comm.Get_rank()} {t} {i}".encode())


threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
for th in threads:
    th.start()
for th in threads:
    th.join()
logging.getLogger("init_app").warning("rank %d of %d done", comm.Get_rank(), total)
print(f"init_app rank {comm.Get_rank()} of {total}", flush=True)
