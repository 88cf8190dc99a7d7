"""Unmodified programs under ``chronompi record``, the one-line ``chronompi.init()``, and a session without mpirun.

The programs in tests/apps/unmodified never import chronompi: they are written as any mpi4py user writes
them (collectives on MPI.COMM_WORLD, point-to-point master/worker, logging, print). Every test checks what
the store holds, event by event, read with plain h5py (storecheck.read_h5) and with open_store.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import rank_lines
from storecheck import read_h5

import chronompi
from chronompi.launch import _die_with_parent

APPS = Path(__file__).parent / "apps"
UNMODIFIED = APPS / "unmodified"
pytestmark = [pytest.mark.mpi]


def run(argv: list[str], timeout: float = 180, cwd: Path | None = None, env: dict | None = None):
    """Run a command in its own process group (killed whole on timeout; it dies with this process)."""
    e = dict(os.environ) if env is None else dict(env)
    p = subprocess.Popen(
        argv,
        cwd=cwd,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"{' '.join(argv)} hung for {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def record(n: int, *args: str, **kw):
    return run([sys.executable, "-m", "chronompi", "record", "-n", str(n), *args], **kw)


def check_stream(events: list[tuple[int, int, int, bytes]]) -> dict[int, list[bytes]]:
    """Total order, seq dense from 0 per client; the payloads of each client in seq order."""
    keys = [(t, c, s) for t, c, s, _ in events]
    assert keys == sorted(keys), "events are not in total order (time, client, seq)"
    by_client: dict[int, list[tuple[int, bytes]]] = collections.defaultdict(list)
    for _, c, s, p in events:
        by_client[c].append((s, p))
    out = {}
    for c, rows in by_client.items():
        rows.sort()
        assert [s for s, _ in rows] == list(range(len(rows))), f"client {c:x}: seq not dense from 0"
        out[c] = [p for _, p in rows]
    return out


def same_as_reader(store: Path, chronicle: str, story: str, events: list) -> None:
    """open_store serves what plain h5py reads, in total order."""
    ev = chronompi.open_store(store).replay(chronicle, story)
    got = list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist(), list(ev["payload"])))
    assert got == sorted(events)


def test_record_runs_an_unmodified_solver_on_n_ranks(tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = record(4, f"storage.root={store}", "--", "python", str(UNMODIFIED / "jacobi.py"), "50", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "jacobi: 4 ranks" in r.stdout  # the program saw 4 ranks, not 4 minus the services
    assert r.stderr.count(" INFO iteration ") == 4 * 30  # its own console logging is untouched
    got = read_h5(store)
    events = got[("jacobi", "log")]
    per_client = check_stream(events)
    assert len(per_client) == 4
    seen = collections.Counter()
    residual: dict[int, set[str]] = collections.defaultdict(set)
    for payloads in per_client.values():
        docs = [json.loads(p) for p in payloads]
        for d in docs:
            if d["level"] == "INFO":
                words = d["message"].split()  # iteration IT rank R of 4 residual X
                it, rank, size = int(words[1]), int(words[3]), int(words[5])
                assert size == 4
                seen[(it, rank)] += 1
                residual[it].add(words[7])
                assert d["logger"] == "jacobi" and d["file"].endswith("jacobi.py")
    assert seen == collections.Counter({(it, rank): 1 for it in range(30) for rank in range(4)})
    assert all(len(v) == 1 for v in residual.values()), "ranks disagree on an allreduce: not one communicator"
    warnings = [json.loads(p) for ps in per_client.values() for p in ps if b'"WARNING"' in p]
    assert [w["message"] for w in warnings] == ["finished 30 iterations on 4 ranks"]
    same_as_reader(store, "jacobi", "log", events)
    runs = chronompi.open_store(store).runs()
    assert len(runs) == 1 and runs[0]["status"] == "complete"


def test_record_master_worker_with_output_lines(tmp_path: Path) -> None:
    store = tmp_path / "store"
    tasks = 40
    r = record(
        4,
        "--output",
        "--chronicle",
        "mw",
        f"storage.root={store}",
        "--",
        "python",
        str(UNMODIFIED / "master_worker.py"),
        str(tasks),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"master: {tasks} tasks done by 3 workers" in r.stdout
    got = read_h5(store)
    logs = check_stream(got[("mw", "log")])
    messages = collections.Counter(json.loads(p)["message"] for ps in logs.values() for p in ps)
    tasks_seen = collections.Counter(int(m.split()[3]) for m in messages.elements() if " task " in m)
    assert tasks_seen == collections.Counter(range(tasks)), "each task logged exactly once"
    assert sum(1 for m in messages.elements() if "heartbeat thread" in m) == 3  # from the workers' threads
    # every line the program printed is in the stdout story, exactly once, bytes identical. The lines are
    # derived from what the workers logged, not split out of mpirun's output: MPICH's launcher forwards a
    # line and its newline separately, so two ranks' lines can arrive joined ("...workersworker 1: ...").
    per_worker = collections.Counter(int(m.split()[1]) for m in messages.elements() if " task " in m)
    expected = collections.Counter(
        [f"master: {tasks} tasks done by 3 workers"] + [f"worker {w}: {per_worker[w]} tasks" for w in (1, 2, 3)]
    )
    stored = collections.Counter(p.decode() for ps in check_stream(got[("mw", "stdout")]).values() for p in ps)
    assert stored == expected
    assert all(line in r.stdout for line in stored), "a stored line the program did not print"
    stderr_lines = collections.Counter(p.decode() for ps in check_stream(got[("mw", "stderr")]).values() for p in ps)
    assert sum(stderr_lines.values()) == tasks + 3  # logging's lastResort lines (no handler configured)


SHUTDOWN_APP = """
import atexit, gc, logging, pickle, sys
from mpi4py import MPI

rank = MPI.COMM_WORLD.Get_rank()
out = open(sys.argv[1] + f".{rank}", "w")  # never closed: Python's shutdown flushes it
out.write("x" * 5000)


class Cycle:  # only the cycle collector can free it, at shutdown
    def __init__(self, path):
        self.me = self
        self.f = open(path, "w")
        self.f.write("y" * 5000)


held = Cycle(sys.argv[1] + f".cycle.{rank}")
logging.warning("rank %d wrote its files", rank)


def report():  # keeps this namespace alive until the end
    main = sys.modules["__main__"]
    print(f"at exit rank {rank}: main is the program {main.__file__ == __file__} frozen {gc.get_freeze_count() > 0} "
          f"pickles {pickle.loads(pickle.dumps(Cycle)) is Cycle}", flush=True)


atexit.register(report)
"""


@pytest.mark.parametrize("freeze", [True, False])
def test_record_shuts_the_program_down_as_python_does(tmp_path: Path, freeze: bool) -> None:
    """The program is ``__main__`` to its end (pickle finds its classes in its atexit functions) and what
    its shutdown flushes is flushed: an open file in its globals, kept alive by an atexit function, and
    one held by a cycle. Before the program runs, what exists is frozen (the job's end, measured in
    perf/bench_record.py); ``--no-freeze`` leaves that out."""
    store = tmp_path / "store"
    app = tmp_path / "app.py"
    app.write_text(SHUTDOWN_APP)
    flags = [] if freeze else ["--no-freeze"]
    r = record(2, f"storage.root={store}", *flags, "--", "python", str(app), str(tmp_path / "out"), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in range(2):
        assert f"at exit rank {rank}: main is the program True frozen {freeze} pickles True" in r.stdout, r.stdout
        assert (tmp_path / f"out.{rank}").read_text() == "x" * 5000, "an open file of the program was not flushed"
        assert (tmp_path / f"out.cycle.{rank}").read_text() == "y" * 5000, "a file held by a cycle was not flushed"
    events = read_h5(store)[("app", "log")]
    assert len(check_stream(events)) == 2
    assert sorted(json.loads(p)["message"] for _, _, _, p in events) == [f"rank {k} wrote its files" for k in range(2)]


@pytest.mark.parametrize("program,status", [("import sys; sys.exit(3)", 3), ("raise ValueError('bad input 42')", 1)])
def test_record_passes_on_the_programs_exit_status(tmp_path: Path, program: str, status: int) -> None:
    store = tmp_path / "store"
    app = tmp_path / "app.py"
    app.write_text("import logging\nlogging.warning('before the end')\n" + program + "\n")
    r = record(2, f"storage.root={store}", "service.summary=false", "--", "python", str(app), timeout=240)
    assert r.returncode == status, r.stdout + r.stderr
    if status == 1:
        assert r.stderr.count("ValueError: bad input 42") >= 2  # each rank's traceback, as python prints it
        assert 'File "' + str(app) in r.stderr and "runpy" not in r.stderr
    events = read_h5(store)[("app", "log")]
    assert len(check_stream(events)) == 2 and len(events) == 2  # what was logged before the end is kept


@pytest.mark.parametrize(
    "args,says",
    [
        (["-n", "2", "--", "ls", "-l"], "runs Python programs"),
        (["--", "python", "x.py"], "-n N"),
        (["-n", "2", "--", "python", "no_such_program.py"], "not found"),
        (["-n", "2", "--", "python", "-c", "print(1)"], "-c CODE is not supported"),
        (["-n", "2", "layout.keepers=-1", "--", "python", str(UNMODIFIED / "jacobi.py"), "1", "1"], "layout.keepers"),
        (
            ["-n", "2", "storage.root=/proc/no", "--", "python", str(UNMODIFIED / "jacobi.py"), "1", "1"],
            "cannot create",
        ),
    ],
)
def test_record_bad_usage_is_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    r = run([sys.executable, "-m", "chronompi", "record", *args], cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], r.stderr
    assert not list(tmp_path.iterdir())  # nothing created


def test_init_is_one_line_and_rebinds_comm_world(tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = run(
        [
            sys.executable,
            "-m",
            "chronompi",
            "mpirun",
            "-n",
            "6",
            "--",
            sys.executable,
            str(APPS / "init_app.py"),
            str(store),
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(rank_lines(r.stdout, "init_app rank ")) == [f"init_app rank {i} of 3" for i in range(3)]
    got = read_h5(store)
    per_client = check_stream(got[("app", "events")])
    assert len(per_client) == 3
    want = {f"{rank} {t} {i}".encode() for rank in range(3) for t in range(2) for i in range(100)}
    flat = [p for ps in per_client.values() for p in ps]
    assert len(flat) == len(want) and set(flat) == want
    logs = check_stream(got[("init_app", "log")])
    assert sorted(json.loads(p)["message"] for ps in logs.values() for p in ps) == [
        f"rank {i} of 3 done" for i in range(3)
    ]


def test_session_without_mpirun_spawns_its_services(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PRTE_"))}
    env["PYTHONFAULTHANDLER"] = "1"  # a hang dumps the spawned ranks' tracebacks too (apps/_hang.py)
    r = run([sys.executable, str(APPS / "alone_app.py"), str(store), "2000"], env=env, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "alone_app done" in r.stdout
    events = read_h5(store)[("alone", "events")]
    per_client = check_stream(events)
    assert list(per_client.values()) == [[b"event %d" % i for i in range(2000)]]
    same_as_reader(store, "alone", "events", events)
    run_record = chronompi.open_store(store).runs()[0]
    assert run_record["status"] == "complete" and run_record["ranks"] == 4
    assert np.all(np.diff([t for t, _, _, _ in events]) > 0)
