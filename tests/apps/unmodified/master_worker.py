"""Master/worker with point-to-point messages, as any mpi4py user writes it. It never imports chronompi.

Rank 0 hands out tasks (ANY_SOURCE receives), workers square numbers and log each task; a worker
thread logs too. Usage: master_worker.py TASKS
"""

import logging
import sys
import threading

from mpi4py import MPI

TASK, STOP = 1, 2
comm = MPI.COMM_WORLD
log = logging.getLogger("mw")


def master(tasks: int) -> None:
    status = MPI.Status()
    results = {}
    next_task = 0
    active = comm.Get_size() - 1
    for w in range(1, comm.Get_size()):
        if next_task < tasks:
            comm.send(next_task, dest=w, tag=TASK)
            next_task += 1
        else:
            comm.send(None, dest=w, tag=STOP)
            active -= 1
    while active:
        task, value = comm.recv(source=MPI.ANY_SOURCE, tag=TASK, status=status)
        results[task] = value
        if next_task < tasks:
            comm.send(next_task, dest=status.Get_source(), tag=TASK)
            next_task += 1
        else:
            comm.send(None, dest=status.Get_source(), tag=STOP)
            active -= 1
    assert results == {t: t * t for t in range(tasks)}, "wrong results"
    print(f"master: {tasks} tasks done by {comm.Get_size() - 1} workers", flush=True)


def worker() -> None:
    status = MPI.Status()
    done = 0
    beat = threading.Thread(target=lambda: log.warning("worker %d heartbeat thread", comm.rank))
    beat.start()
    while True:
        task = comm.recv(source=0, tag=MPI.ANY_TAG, status=status)
        if status.Get_tag() == STOP:
            break
        log.warning("worker %d task %d", comm.rank, task)
        comm.send((task, task * task), dest=0, tag=TASK)
        done += 1
    beat.join()
    print(f"worker {comm.rank}: {done} tasks")


if __name__ == "__main__":
    if comm.Get_size() < 2:
        sys.exit("master_worker needs at least 2 ranks")
    if comm.rank == 0:
        master(int(sys.argv[1]))
    else:
        worker()
    MPI.Finalize()  # some programs end MPI themselves
