"""The end of a session: what the last client waits for after its last ``log_many`` (issue 19).

A run of ``--events`` 64-byte events per client, logged as lists of 1,000 ``bytes`` made in the loop, 5 clients,
1 keeper and 1 grapher (``mpirun -n 8``), with the two levers on the session's end switched on or off:

- ``write_behind``: with ``storage.fsync=sync`` (the default) the grapher asks the kernel to start writing a
  segment every ``WRITE_BEHIND_BYTES`` (``store/writer.py``); off: only the fsync that closes the segment
  writes it, on the way to every client's release;
- ``poll``: a client waiting for its release polls at most every ``progress.wait_poll_cap`` (5 ms for 8
  ranks on 2 cores); off: every 20 ms, as before.

Each variant is its own ``chronompi mpirun`` job of ``--sessions`` sessions, the first untimed (a warm-up);
the variants alternate, ``--rounds`` times, the order rotated each round. Per session: ``wall`` (the first
client's first log call to the last client's session returned, every clock put on rank 0's by
``benchlib.clock_offsets``), ``tail`` (the last client's last ``log_many`` returned to the last client's session
returned), the grapher's ``fsync_s`` and ``writebacks``. One JSON line per job to ``--out`` (default
``perf/out/session-end.jsonl``), with the commit and the load average before the job.

    python perf/bench_session_end.py [--rounds 4] [--sessions 4] [--events 200000] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: variant -> (write-behind, scaled release poll)
VARIANTS = {
    "both": (True, True),
    "no_write_behind": (False, True),
    "poll_20ms": (True, False),
    "neither": (False, False),
}


def job(args: argparse.Namespace) -> None:
    import shutil

    import benchlib
    from mpi4py import MPI

    import chronompi
    import chronompi.client
    import chronompi.store.writer
    from chronompi.session import last_summary

    write_behind, poll = VARIANTS[args.variant]
    if not write_behind:
        chronompi.store.writer.WRITE_BEHIND_BYTES = 1 << 62
    if not poll:
        chronompi.client.wait_poll_cap = lambda ranks_here, cores: 0.02  # type: ignore[assignment]
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    # what to add to this rank's clock to read rank 0's (benchlib: Cristian, best of 8 pings)
    offset = benchlib.clock_offsets(comm)[rank] / 1e9
    rows = []
    for s in range(args.sessions):
        store = Path(args.scratch) / f"s{s}"
        cfg = {
            "storage": {"root": str(store)},
            "layout": {"keepers": 1, "graphers": 1},
            "service": {"summary": "none"},
        }
        comm.Barrier()
        start = logged = float("nan")
        with chronompi.session(cfg=cfg) as client:
            if client is not None:
                crank = client.comm.Get_rank()
                if crank == 0:
                    client.create_chronicle("end")
                client.comm.Barrier()
                story = client.acquire_story("end", "s")
                client.comm.Barrier()
                start = time.time()
                for a in range(0, args.events, 1000):
                    story.log_many([b"%010d %05d " % (i, crank) + b"~" * 47 for i in range(a, a + 1000)])
                logged = time.time()
        done = time.time()
        got = comm.gather((start + offset, logged + offset, done + offset), root=0)
        if rank == 0:
            assert got is not None
            clients = [g for g in got if g[0] == g[0]]  # (service ranks: nan)
            summary = last_summary() or {}
            graphers = summary.get("roles", {}).get("grapher", [])
            rows.append(
                {
                    "session": s,
                    "events": summary.get("events_stored"),
                    "wall": round(max(g[2] for g in clients) - min(g[0] for g in clients), 6),
                    "tail": round(max(g[2] for g in clients) - max(g[1] for g in clients), 6),
                    "fsync_s": sum(g.get("fsync_s", 0.0) for g in graphers),
                    "writebacks": sum(g.get("writebacks", 0) for g in graphers),
                }
            )
            shutil.rmtree(store, ignore_errors=True)
    if rank == 0:
        with open(args.rows, "w") as f:
            json.dump(rows, f)


def drive(args: argparse.Namespace) -> int:
    from benchlib import git_commit

    from chronompi.launch import run_mpi

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(VARIANTS)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            with tempfile.TemporaryDirectory(prefix="bench-end-") as scratch:
                rows = Path(scratch) / "rows.json"
                load = [round(x, 2) for x in os.getloadavg()]
                cmd = [sys.executable, __file__, "--job", "--variant", name, "--scratch", scratch, "--rows", str(rows)]
                cmd += ["--sessions", str(args.sessions), "--events", str(args.events)]
                p = run_mpi(8, cmd, timeout=300, capture_output=True)
                if p.returncode != 0:
                    print(f"{name}: job failed ({p.returncode}):\n{p.stdout}{p.stderr}", file=sys.stderr)
                    return 1
                sessions = json.loads(rows.read_text())
            line = {
                "bench": "session-end",
                "variant": name,
                "write_behind": VARIANTS[name][0],
                "scaled_poll": VARIANTS[name][1],
                "round": r,
                "clients": 5,
                "events_per_client": args.events,
                "payload": 64,
                "loadavg": load,
                "git_commit": git_commit(),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "sessions": sessions[1:],  # (the first: a warm-up)
            }
            with out.open("a") as f:
                f.write(json.dumps(line) + "\n")
            timed = sessions[1:]
            print(
                f"round {r} {name:16} wall {[s['wall'] for s in timed]} tail {[s['tail'] for s in timed]} "
                f"fsync {[round(s['fsync_s'], 3) for s in timed]} (load {load[0]})"
            )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--out", default=str(HERE / "out" / "session-end.jsonl"))
    ap.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        job(args)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
