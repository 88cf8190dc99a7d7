"""An ingest measurement written the way a user would write it, outside the harness (issue 19).

It shares no code with ``perf/harness.py``, ``perf/bench_ingest.py``, ``perf/events.py`` or ``perf/peers/``:
its only purpose is to check that the harness's figures are what a user measuring by hand would see.

Each system is its own ``mpirun`` job, as a user would run them one after the other:

- ``chronompi-log-many`` / ``chronompi-log``: ``chronompi.session()`` with 1 keeper + 1 grapher, the other
  ranks clients; every client makes its events inside the timed loop (a ``bytes`` object each, its index
  and rank in the first bytes) and hands them over in lists of ``--many`` (``log_many``) or one at a time
  (``log``). The clock starts at the clients' first log call (after a barrier of the clients) and stops when
  the session has returned on every rank, i.e. when every event is in the store and every file closed.
- ``adios2``: ADIOS2 BP5, one output per rank, in a job of as many ranks as chronompi had clients; every
  rank makes its events in the loop, stamps each with ``time.time_ns()``, and puts one step of ``--many``
  events (time, offset, payload). The clock runs from a barrier of the writers to every
  output closed.
- ``h5py``: the same with one HDF5 file per rank and three resizable datasets.

Rate = events of all writers / (latest stop - earliest start), wall clock (``time.time()``) across ranks.
By default the timed run is the job's first (cold, as a one-off script measures); ``--warm K`` runs the same
work K times untimed first in the same job, as the harness's warm-up does.

    chronompi mpirun -n 8 -- python perf/user_ingest.py --system chronompi-log-many --payload 64 --events 200000

``--drive``: run every system in turn, ``--rounds`` times (the order rotated each round), each as its own
``chronompi mpirun`` job, and append one JSON line per job to ``--out`` (default
``perf/out/user-ingest.jsonl``), with the load average before each job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchlib import git_commit  # bookkeeping only: nothing of the measurement is shared with the harness

SYSTEMS = ("chronompi-log-many", "chronompi-log", "adios2", "h5py")
SERVICE_RANKS = 3  # the visor, one keeper, one grapher


def make(rank: int, i: int, size: int) -> bytes:
    """Event ``i`` of ``rank``: its index and rank first, padded to ``size`` bytes."""
    return (b"%010d %05d " % (i, rank)).ljust(size, b"~")[:size]


def batches(args: argparse.Namespace, rank: int) -> Iterator[tuple[int, int, list[int], bytes]]:
    """(first, end, time stamps, payloads back to back) of each step of a peer: every event made and stamped
    in the loop, one at a time, as an application makes its messages."""
    now = time.time_ns
    for a in range(0, args.events, args.many):
        b = min(args.events, a + args.many)
        stamps, items = [], []
        for i in range(a, b):
            items.append(make(rank, i, args.payload))
            stamps.append(now())
        yield a, b, stamps, b"".join(items)


def run_chronompi(args: argparse.Namespace, store: Path) -> tuple[float, float, int]:
    import chronompi

    cfg = {"storage": {"root": str(store)}, "layout": {"keepers": 1, "graphers": 1}}
    start, n = float("nan"), 0  # (service ranks log nothing: one_job leaves them out by n == 0)
    with chronompi.session(cfg=cfg) as client:
        if client is not None:
            rank = client.comm.Get_rank()
            if rank == 0:  # as README's example does
                client.create_chronicle("user")
            client.comm.Barrier()
            with client.acquire_story("user", "ingest") as story:
                client.comm.Barrier()
                start = time.time()
                if args.system == "chronompi-log-many":
                    for a in range(0, args.events, args.many):
                        story.log_many([make(rank, i, args.payload) for i in range(a, min(args.events, a + args.many))])
                else:
                    for i in range(args.events):
                        story.log(make(rank, i, args.payload))
            n = args.events
    stop = time.time()  # the session has returned: everything is stored
    return start, stop, n


def run_adios2(args: argparse.Namespace, comm, root: Path) -> tuple[float, float, int]:  # noqa: ANN001
    import numpy as np
    from adios2 import bindings

    rank = comm.Get_rank()
    adios = bindings.ADIOS()
    io = adios.DeclareIO("user")
    io.SetEngine("BP5")
    v_time = io.DefineVariable("time", np.zeros(1, np.int64), [], [], [1], False)
    v_off = io.DefineVariable("offset", np.zeros(1, np.uint64), [], [], [1], False)
    v_pay = io.DefineVariable("payload", np.zeros(1, np.uint8), [], [], [1], False)
    comm.Barrier()
    start = time.time()
    engine = io.Open(str(root / f"rank{rank}.bp"), bindings.Mode.Write)
    for a, b, stamps, joined in batches(args, rank):
        t = np.array(stamps, np.int64)
        off = np.arange(b - a, dtype=np.uint64) * np.uint64(args.payload)
        heap = np.frombuffer(bytearray(joined), np.uint8)  # (adios2's Put wants a writable array)
        engine.BeginStep()
        v_time.SetSelection([[], [b - a]])
        v_off.SetSelection([[], [b - a]])
        v_pay.SetSelection([[], [len(heap)]])
        engine.Put(v_time, t)
        engine.Put(v_off, off)
        engine.Put(v_pay, heap)
        engine.EndStep()
    engine.Close()
    return start, time.time(), args.events


def run_h5py(args: argparse.Namespace, comm, root: Path) -> tuple[float, float, int]:  # noqa: ANN001
    import h5py
    import numpy as np

    rank = comm.Get_rank()
    comm.Barrier()
    start = time.time()
    with h5py.File(root / f"rank{rank}.h5", "w") as f:
        times = f.create_dataset("time", (0,), maxshape=(None,), dtype=np.int64, chunks=(args.many,))
        offs = f.create_dataset("offset", (0,), maxshape=(None,), dtype=np.uint64, chunks=(args.many,))
        pay = f.create_dataset("payload", (0,), maxshape=(None,), dtype=np.uint8, chunks=(args.many * args.payload,))
        for a, b, stamps, joined in batches(args, rank):
            times.resize((b,))
            times[a:b] = stamps
            offs.resize((b,))
            offs[a:b] = np.arange(a, b, dtype=np.uint64) * np.uint64(args.payload)
            pay.resize((b * args.payload,))
            pay[a * args.payload :] = np.frombuffer(joined, np.uint8)
    return start, time.time(), args.events


def run_one(args: argparse.Namespace, world, root: Path) -> tuple[float, float, int]:  # noqa: ANN001
    if args.system.startswith("chronompi"):
        return run_chronompi(args, root / "store")
    return (run_adios2 if args.system == "adios2" else run_h5py)(args, world, root)


def one_job(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    root = Path(args.dir)
    for warm in range(args.warm):  # untimed runs of the same work first (--warm): first-use costs out
        (root / f"warm{warm}").mkdir(exist_ok=True)
        run_one(args, world, root / f"warm{warm}")
    start, stop, n = run_one(args, world, root)
    got = world.gather((start, stop, n), root=0)
    if world.Get_rank() == 0:
        starts = [s for s, _, k in got if k]
        stops = [e for _, e, k in got if k]
        total = sum(k for _, _, k in got)
        span = max(stops) - min(starts)
        if args.system.startswith("chronompi"):  # (after the clock) everything logged is in the store
            import chronompi

            stored = len(chronompi.open_store(root / "store").replay_raw("user", "ingest")[0])
            assert stored == total, f"{stored} events stored of {total} logged"
        print(json.dumps({"events": total, "seconds": round(span, 4), "events_per_s": round(total / span, 1)}))


def drive(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = git_commit()  # (the code's commit, "+dirty" when anything but perf/results differs)
    systems = list(args.systems or SYSTEMS)
    for r in range(args.rounds):
        order = systems[r % len(systems) :] + systems[: r % len(systems)]
        for system in order:
            scratch = Path(tempfile.mkdtemp(prefix="user-ingest-", dir=args.scratch))
            # the peers run on as many ranks as chronompi has clients, and on no more (an idle rank waiting in
            # MPI would take a core from the writers)
            ranks = args.ranks if system.startswith("chronompi") else args.ranks - SERVICE_RANKS
            cmd = [sys.executable, "-m", "chronompi", "mpirun", "-n", str(ranks), "--", sys.executable]
            cmd += [__file__, "--system", system, "--payload", str(args.payload), "--events", str(args.events)]
            cmd += ["--many", str(args.many), "--dir", str(scratch), "--warm", str(args.warm)]
            load = os.getloadavg()
            try:
                job = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            lines = [ln for ln in job.stdout.splitlines() if ln.startswith("{")]
            if job.returncode != 0 or not lines:
                sys.exit(f"user_ingest: {system} failed (exit {job.returncode}):\n{job.stdout}\n{job.stderr}")
            rec = {
                "bench": "user_ingest",
                "system": system,
                "round": r,
                "ranks": ranks,
                "payload": args.payload,
                "events_per_rank": args.events,
                "many": args.many,
                "warm": args.warm,
                **json.loads(lines[-1]),
                "load_avg_before": [round(x, 2) for x in load],
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "git_commit": commit,
            }
            print(json.dumps(rec), flush=True)
            with open(out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", choices=SYSTEMS)
    p.add_argument("--payload", type=int, default=64)
    p.add_argument("--events", type=int, default=200_000, help="events per writing rank")
    p.add_argument("--many", type=int, default=1000, help="events per log_many call / peer step")
    p.add_argument("--dir", help="scratch directory (one job)")
    p.add_argument("--warm", type=int, default=0, help="untimed runs of the same work first, in the same job")
    p.add_argument("--drive", action="store_true", help="run every system in turn, each its own mpirun job")
    p.add_argument("--systems", nargs="*", choices=SYSTEMS)
    p.add_argument("--ranks", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--scratch", default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "out" / "user-ingest.jsonl"))
    args = p.parse_args()
    if args.drive:
        drive(args)
    elif args.system and args.dir:
        one_job(args)
    else:
        p.error("give --system and --dir (one job), or --drive")


if __name__ == "__main__":
    main()
