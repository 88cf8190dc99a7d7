"""A 1-D Jacobi solver written as any mpi4py user would: collectives on MPI.COMM_WORLD, logging, print.

It never imports chronompi. Usage: jacobi.py N_PER_RANK ITERATIONS
"""

import argparse
import logging
import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
size = comm.Get_size()
log = logging.getLogger("jacobi")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("n", type=int)
    p.add_argument("iterations", type=int)
    p.add_argument("--timing", action="store_true", help="print the start and end times (perf/bench_record.py)")
    args = p.parse_args()
    if args.timing and rank == 0:
        print(f"jacobi-timing start {time.time():.6f}", flush=True)
    logging.basicConfig(level=logging.INFO, format=f"[{rank}] %(levelname)s %(message)s")
    n = comm.bcast(args.n if rank == 0 else None, root=0)
    u = np.zeros(n + 2)
    if rank == 0:
        u[0] = 1.0  # a hot left wall
    left = rank - 1 if rank > 0 else MPI.PROC_NULL
    right = rank + 1 if rank < size - 1 else MPI.PROC_NULL
    for it in range(args.iterations):
        comm.Sendrecv(u[1:2], dest=left, recvbuf=u[n + 1 : n + 2], source=right)
        comm.Sendrecv(u[n : n + 1], dest=right, recvbuf=u[0:1], source=left)
        if rank == 0:
            u[0] = 1.0
        new = 0.5 * (u[:-2] + u[2:])
        local = float(np.abs(new - u[1:-1]).sum())
        u[1:-1] = new
        residual = comm.allreduce(local, op=MPI.SUM)
        log.info("iteration %d rank %d of %d residual %.6e", it, rank, size, residual)
    total = comm.reduce(float(u[1:-1].sum()), op=MPI.SUM, root=0)
    sizes = comm.gather(size, root=0)
    if rank == 0:
        assert sizes == [size] * size
        print(f"jacobi: {size} ranks, heat {total:.6f}", flush=True)
        log.warning("finished %d iterations on %d ranks", args.iterations, size)
        if args.timing:
            print(f"jacobi-timing end {time.time():.6f}", flush=True)


if __name__ == "__main__":
    main()
