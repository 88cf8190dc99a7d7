"""Live export: ``chronompi export parsl --follow`` keeps monitoring.db current while a real Parsl workflow runs.

An HTEX workflow (tasks in waves, resource monitoring, one retried failure per wave) records through
ChronompiHub under ``mpirun -n 4``; a ``--follow`` process started before the job writes monitoring.db
while the test reads it; the task table must grow across reads taken before the workflow ended, and the
followed database must equal the offline export of the finished store row for row.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("parsl")

from conftest import APPS  # noqa: E402
from storecheck import sqlite_tables  # noqa: E402

from chronompi.launch import mpi_env, retrying_argv  # noqa: E402
from chronompi.parsl import export_parsl  # noqa: E402
from chronompi.parsl.export import TABLES  # noqa: E402


def _tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    return sqlite_tables(db, TABLES)


def _count(db: Path) -> int | None:
    """Rows of the task table as a reader sees them now (None: the database is not there yet)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return None
    try:
        n = int(con.execute("SELECT count(*) FROM task").fetchone()[0])
        # one step = one transaction: a task is never seen without the try and status rows of its message
        for table in ("try", "status"):
            orphans = con.execute(
                f'SELECT count(*) FROM task WHERE NOT EXISTS (SELECT 1 FROM "{table}" AS o '
                "WHERE o.task_id = task.task_id AND o.run_id = task.run_id)"
            ).fetchone()[0]
            assert orphans == 0, f"{orphans} task rows without their {table} rows"
        return n
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()


def _stop(p: subprocess.Popen[str]) -> str:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    out, err = p.communicate()
    return f"{out}\n{err}"


@pytest.mark.mpi
def test_follow_shows_a_running_workflow_and_ends_equal_to_the_offline_export(tmp_path: Path) -> None:
    store, db, out = tmp_path / "store", tmp_path / "live.db", tmp_path / "out"
    out.mkdir()
    env = mpi_env()
    follow = subprocess.Popen(
        [sys.executable, "-m", "chronompi", "export", "parsl", "--follow", "--interval", "0.5", str(store), str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    job = subprocess.Popen(
        retrying_argv(4, [sys.executable, str(APPS / "parsl_follow.py"), str(out), str(store), "6", "4", "1.0"]),
        env={**env, "CHRONOMPI_TEST_HANG_S": "110"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    readings: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while job.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the workflow job hung:\n{_stop(job)}\nfollower:\n{_stop(follow)}")
            if not (out / "workflow-done").exists():
                n = _count(db)
                if n is not None and not (out / "workflow-done").exists():  # read before the workflow ended
                    readings.append(n)
            time.sleep(0.25)
        job_out = job.communicate()
        assert job.returncode == 0, f"job failed:\n{job_out[0]}\n{job_out[1]}"
        try:
            f_out, f_err = follow.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the follower did not stop after the run ended:\n{_stop(follow)}")
        assert follow.returncode == 0, f"follower failed:\n{f_out}\n{f_err}"
    finally:
        for p in (job, follow):
            if p.poll() is None:
                _stop(p)
    print(f_out, "\ntask rows seen while the workflow ran:", readings)
    grew = sorted(set(n for n in readings if n > 0))
    assert readings == sorted(readings), readings  # a reader never sees the table shrink
    assert len(grew) >= 2, f"task rows seen while the workflow ran: {readings}"
    assert "stopped: the run ended" in f_out
    lag = re.search(r"median ([\d.]+) s, max ([\d.]+) s", f_out)
    assert lag is not None and float(lag.group(1)) < 5, f_out
    followed = _tables(db)
    export_parsl(store, tmp_path / "offline.db")
    offline = _tables(tmp_path / "offline.db")
    assert followed == offline
    assert len(offline["task"]) == 6 * 5 and offline["resource"] and offline["node"] and offline["block"]
    assert len(offline["try"]) == 6 * 5 + 6  # the flaky app of each wave ran twice
    wal = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert wal == "wal"


@pytest.mark.mpi
def test_follow_rederives_late_events_and_writes_parquet(tmp_path: Path) -> None:
    """On a finished store: events applied out of order are re-derived to what the offline export gives
    (rows deleted and updated in SQLite); ``--format parquet`` and ``--until-idle`` stop cleanly."""
    from conftest import mpirun

    from chronompi.parsl.extract import make_extractor
    from chronompi.parsl.follow import Follower
    from chronompi.parsl.packed import decode

    store = tmp_path / "store"
    mpirun(4, "parsl_encodings.py", str(store), "60", timeout=120)
    export_parsl(store, tmp_path / "offline.db", chronicle="v3")
    offline = _tables(tmp_path / "offline.db")

    ext = make_extractor("sqlite", tmp_path / "late.db", wal=True)
    ext.open()
    fol = Follower(store, ext, chronicle="v3", hold_s=0)
    assert fol.read_new() > 0
    (every, _), *rest = fol._pending
    assert not rest
    every = every[every["time"].argsort(kind="stable")]
    # the second half arrives first; NODE_INFO ids depend on order, so re-derivation must renumber them
    half = len(every) // 2
    assert any(decode(p)[0] == "NODE_INFO" for p in every["payload"][:half])
    fol._pending = [(every[half:], 0.0)]
    fol.apply()
    assert _tables(tmp_path / "late.db") != offline
    fol._pending = [(every[:half], 0.0)]
    fol.apply(everything=True)
    fol.close()
    assert fol.stats.reorders == 1
    assert _tables(tmp_path / "late.db") == offline

    pq = tmp_path / "live.parquet"
    r = subprocess.run(
        [sys.executable, "-m", "chronompi", "export", "parsl", "--follow", "--format", "parquet"]
        + ["--chronicle", "v3", "--until-idle", "1", str(store), str(pq)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "stopped: the run ended" in r.stdout
    assert {p.name for p in pq.iterdir()} == {f"{t}.parquet" for t in TABLES}
    import pyarrow.parquet as pqm

    assert pqm.read_table(pq / "task.parquet").num_rows == len(offline["task"])

    # --new-run on a store whose runs have all ended: it waits (for a job starting) instead of stopping
    p = subprocess.Popen(
        [sys.executable, "-m", "chronompi", "export", "parsl", "--follow", "--new-run", "--interval", "0.2"]
        + ["--chronicle", "v3", str(store), str(tmp_path / "waiting.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGTERM)
        w_out, w_err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "stopped: interrupted" in w_out, w_err

    # a run the record says is still running (and fresh): --until-idle ends the follow
    import json

    rec = next((store / "runs").glob("r*.json"))
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "status": "running"}))
    r = subprocess.run(
        [sys.executable, "-m", "chronompi", "export", "parsl", "--follow", "--interval", "0.2"]
        + ["--chronicle", "v3", "--until-idle", "1", str(store), str(tmp_path / "idle.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "stopped: idle for 1 s" in r.stdout
    assert _tables(tmp_path / "idle.db") == offline

    # ... and Ctrl-C ends it cleanly too, the database complete up to what was read
    p = subprocess.Popen(
        [sys.executable, "-m", "chronompi", "export", "parsl", "--follow", "--interval", "0.2"]
        + ["--chronicle", "v3", str(store), str(tmp_path / "interrupted.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (_count(tmp_path / "interrupted.db") or 0) < len(offline["task"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        f_out, f_err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, f_err
    assert "stopped: interrupted" in f_out
    assert _tables(tmp_path / "interrupted.db") == offline
