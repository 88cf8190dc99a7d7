"""Shared helpers of the perf benchmarks: machine description, CPU accounting, quiet barriers,
clock offsets, the JSON-lines recorder and the time-to-durable commit hook.

Every ``bench_*.py`` is an MPI program: ``mpirun -n N python perf/bench_X.py PARAMS_JSON OUT_JSONL``.
``PARAMS_JSON`` is a JSON object (or ``@file``); rank 0 appends one JSON object per result to ``OUT_JSONL``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent

# -- small utilities ------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(values: Any, qs: tuple[float, ...] = (50, 99, 100)) -> list[float]:
    """Percentiles of a sequence (empty -> NaNs)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return [float("nan")] * len(qs)
    return [float(x) for x in np.percentile(a, qs)]


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if a and b else None


def quiet_barrier(comm: Any, sleep_s: float = 0.0005) -> None:
    """A barrier that sleeps while it waits: idle ranks must not steal the cores being measured."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(sleep_s)


def clock_offsets(comm: Any, pings: int = 8) -> list[int]:
    """Offset (ns) of every rank's ``time.time_ns()`` relative to rank 0's (Cristian, best of ``pings``).

    ``t_rank0 = t_rank + offset[rank]``. Collective; returns the list on every rank.
    """
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    buf = np.zeros(1, np.int64)
    mine = 0
    for r in range(1, size):
        if rank == 0:
            for _ in range(pings):
                comm.Recv([buf, MPI.INT64_T], source=r, tag=77)
                buf[0] = time.time_ns()
                comm.Send([buf, MPI.INT64_T], dest=r, tag=78)
        elif rank == r:
            best = None
            for _ in range(pings):
                t0 = time.time_ns()
                comm.Send([buf, MPI.INT64_T], dest=0, tag=77)
                comm.Recv([buf, MPI.INT64_T], source=0, tag=78)
                t1 = time.time_ns()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, int(buf[0]) - (t0 + t1) // 2)
            assert best is not None
            mine = best[1]
    return [int(x) for x in comm.allgather(mine)]


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            # (results files being appended to do not change what is measured)
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!perf/results"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(comm: Any) -> dict[str, Any]:
    """Where a result came from (collective: gathers every rank's host)."""
    import h5py
    import mpi4py
    from mpi4py import MPI

    hosts = comm.allgather(socket.gethostname())
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return {
        "hostname": socket.gethostname(),
        "hosts": sorted(set(hosts)),
        "ranks": comm.Get_size(),
        "cores": os.cpu_count(),
        "cores_usable": cores,
        "cpu": cpu_model(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
        "mpi_standard": "{}.{}".format(*MPI.Get_version()),
        "mpi4py": mpi4py.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def launcher_machine() -> dict[str, Any]:
    """Where a result came from, for a bench that launches jobs from outside (no MPI in it)."""
    return {
        "hostname": socket.gethostname(),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class JsonLines:
    """The rows of a bench that launches jobs from outside: each appended to ``path`` (with
    :func:`launcher_machine`, taken once, before the first job) and printed as it comes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.machine = launcher_machine()
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps({**row, "machine": self.machine}) + "\n")
        print(json.dumps(row), flush=True)


# -- parameters and output ------------------------------------------------------------------------


def load_params(arg: str) -> dict[str, Any]:
    text = Path(arg[1:]).read_text() if arg.startswith("@") else arg
    return dict(json.loads(text))


class Recorder:
    """Rank 0 appends one JSON line per result; every line carries the machine and job id."""

    def __init__(self, comm: Any, out: str | None, bench: str, params: dict[str, Any]) -> None:
        self.comm = comm
        self.out = Path(out) if out else None
        self.bench = bench
        self.params = params
        self.job = uuid.uuid4().hex[:12] if comm.Get_rank() == 0 else ""
        self.job = comm.bcast(self.job, root=0)
        self.machine = machine(comm)
        self.lines: list[dict[str, Any]] = []

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        rec = {"bench": self.bench, "kind": kind, "job": self.job, **fields, "machine": self.machine}
        if self.comm.Get_rank() == 0:
            self.lines.append(rec)
            line = json.dumps(rec, default=_jsonable)
            if self.out is not None:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                with self.out.open("a") as f:
                    f.write(line + "\n")
            short = {k: v for k, v in rec.items() if k not in ("machine", "params")}
            print(json.dumps(short, default=_jsonable), flush=True)
        return rec


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


# -- chronompi sessions ---------------------------------------------------------------------------


def scratch_dir(params: dict[str, Any], comm: Any, name: str) -> str:
    """A fresh store directory on a file system every rank sees (rank 0 picks it)."""
    path = ""
    if comm.Get_rank() == 0:
        base = Path(params.get("scratch") or PERF / "out" / "scratch")
        base.mkdir(parents=True, exist_ok=True)
        path = str(base / f"{name}-{uuid.uuid4().hex[:8]}")
    return str(comm.bcast(path, root=0))


def remove_store(comm: Any, path: str) -> None:
    quiet_barrier(comm)
    if comm.Get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)


def session_cfg(params: dict[str, Any], root: str, **client: Any) -> dict[str, Any]:
    lay = params.get("layout", {})
    cfg: dict[str, Any] = {
        "layout": {"keepers": int(lay.get("keepers", 1)), "graphers": int(lay.get("graphers", 1))},
        "storage": {"root": root},
        "service": {"summary": False},
    }
    for section in ("client", "keeper", "storage", "service"):
        extra = dict(params.get("chronompi", {}).get(section, {}))
        if section == "client":
            extra.update(client)
        if extra:
            cfg.setdefault(section, {}).update(extra)
    return cfg


def roles_of_client(client: Any) -> dict[str, Any]:
    """The session's layout as a client sees it (ranks of the session communicator = the job's ranks)."""
    r = client.ctx.roles
    return {"visor": r.visor, "keepers": list(r.keepers), "graphers": list(r.graphers), "clients": list(r.clients)}


@contextmanager
def measured(comm: Any) -> Iterator[dict[str, float]]:
    """Bracket a collective phase: wall seconds from the first rank out of the opening barrier to the last
    rank done with its part, and CPU seconds summed over all ranks.

    Each rank reads its own clock (``time.time_ns()``, put on rank 0's clock by :func:`clock_offsets`, measured
    anew each time: a cache by communicator handle could differ between ranks, and the collective
    measurement would then hang). Rank 0's clock alone read late: it leaves the sleeping barrier up to a poll (and
    a wake-up on busy cores) after the ranks that go on to work, which then start before its clock does (a
    3,000-event h5py run read 0.6 ms, less than making its events takes).
    """
    out: dict[str, float] = {}
    mine = clock_offsets(comm)[comm.Get_rank()]
    quiet_barrier(comm)
    c0, t0 = cpu_seconds(), time.time_ns() + mine
    yield out
    t1 = time.time_ns() + mine
    quiet_barrier(comm)
    spans = comm.allgather((t0, t1, cpu_seconds() - c0))
    out["wall_s"] = (max(b for _, b, _ in spans) - min(a for a, _, _ in spans)) / 1e9
    out["cpu_s"] = float(sum(c for _, _, c in spans))


# -- time to durable: when does a window's index row reach the file? -------------------------------

COMMITS: list[tuple[str, str, int, int, int, int, int]] = []  # (chronicle, story, window, t_min, t_max, n, ns)


def has_committed_column() -> bool:
    from chronompi.store import format as fmt

    return "committed" in (fmt.WINDOW.names or ())


def commit_method() -> str:
    """Whether the benchmark-side writer hook can be installed ("writer-hook") or not ("")."""
    from chronompi.store import writer

    if callable(getattr(writer.SegmentWriter, "append", None)) and hasattr(writer, "Run"):
        return "writer-hook"
    return ""


def install_commit_hook() -> str:
    """Record the wall time at which each window run's index row was flushed (grapher ranks).

    Wraps ``SegmentWriter.append`` in *this benchmark process only* (chronompi's files are not
    touched): after the original has flushed the data and then the index, the wrapper notes
    ``time.time_ns()`` for every run it wrote. Works whether or not the windows index has a
    ``committed`` column, so both can be compared. Returns "writer-hook", or "" if the writer's
    API changed so that the hook cannot be installed.
    """
    method = commit_method()
    if method != "writer-hook":
        return method
    from chronompi.store import writer

    cls = writer.SegmentWriter
    if getattr(cls.append, "_perf_hook", False):
        return method
    original: Callable[..., Any] = cls.append

    def append(self: Any, chronicle: str, story: str, runs: Any) -> None:
        original(self, chronicle, story, runs)
        now = time.time_ns()
        for r in runs:
            ev = r.events
            if len(ev):
                COMMITS.append((chronicle, story, int(r.window), int(ev["time"][0]), int(ev["time"][-1]), len(ev), now))

    append._perf_hook = True  # type: ignore[attr-defined]
    cls.append = append  # type: ignore[method-assign]
    return method


def read_committed(root: str) -> list[tuple[str, str, int, int, int, int, int, int]]:
    """Commit records from the ``committed`` column of the windows index of every segment of a store.

    Returns (chronicle, story, window, t_min, t_max, n_rows, committed ns, grapher index) per index row;
    ``committed`` is on the writing grapher's clock (the segment's ``grapher`` attribute says which).
    """
    import h5py

    out: list[tuple[str, str, int, int, int, int, int, int]] = []
    for seg in sorted((Path(root) / "segments").glob("*.h5")):
        with h5py.File(seg, "r") as f:
            g_index = int(f.attrs.get("grapher", 0))
            names: list[str] = []
            f.visit(names.append)
            for name in names:
                if not name.endswith("/windows"):
                    continue
                ds = f[name]
                if "committed" not in (ds.dtype.names or ()):
                    continue
                chron, story = name.split("/")[:2]
                for row in ds[()]:
                    out.append(
                        (
                            chron,
                            story,
                            int(row["window"]),
                            int(row["t_min"]),
                            int(row["t_max"]),
                            int(row["n_rows"]),
                            int(row["committed"]),
                            g_index,
                        )
                    )
    return out


def durability(
    samples: list[tuple[str, str, int, int]],
    commits: list[tuple[str, str, int, int, int, int, int]],
) -> dict[str, Any]:
    """Time to durable of sampled events.

    ``samples``: (chronicle, story, event timestamp, log-return wall ns) on the common clock;
    ``commits``: (chronicle, story, window, t_min, t_max, n, commit wall ns) on the same clock.
    An event is durable when a run covering its timestamp was committed; with several runs of a
    window (late runs) the latest covering one is taken, which can only overstate the delay.
    """
    by_key: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for chron, story, _w, lo, hi, _n, ns in commits:
        by_key.setdefault((chron, story), []).append((lo, hi, ns))
    delays = []
    missing = 0
    for chron, story, t, ret in samples:
        best = None
        for lo, hi, ns in by_key.get((chron, story), ()):
            if lo <= t <= hi and (best is None or ns > best):
                best = ns
        if best is None:
            missing += 1
        else:
            delays.append((best - ret) / 1e6)
    p50, p99, mx = pct(delays)
    return {
        "samples": len(delays),
        "unmatched": missing,
        "durable_ms_p50": round(p50, 3),
        "durable_ms_p99": round(p99, 3),
        "durable_ms_max": round(mx, 3),
        "durable_ms_min": round(pct(delays, (0,))[0], 3),
    }


def main_guard(fn: Callable[[Any, dict[str, Any], Recorder], None], bench: str) -> None:
    """Entry of a bench module under mpirun: ``python perf/bench_X.py PARAMS_JSON [OUT_JSONL]``."""
    import faulthandler

    params = load_params(sys.argv[1]) if len(sys.argv) > 1 else {}
    hang = float(params.get("hang_s", 0) or 0)
    if hang > 0:  # dump every rank's stack before the launcher's timeout kills the job
        faulthandler.dump_traceback_later(hang, exit=True)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD.Dup()
    rec = Recorder(comm, sys.argv[2] if len(sys.argv) > 2 else None, bench, params)
    try:
        fn(comm, params, rec)
    except BaseException:
        import traceback

        sys.stderr.write(f"perf {bench}: rank {comm.Get_rank()} failed\n{traceback.format_exc()}")
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
