"""Every MPI job a test starts dies with its test, and with pytest whatever kills pytest (tests/jobs.py).

Before: a ``chronompi mpirun ... crashy.py`` job, started in a session of its own as tests/test_crash.py starts
them, went on running after a time limit killed pytest."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jobs
import pytest

from chronompi.launch import mpi_env, retrying_argv

pytestmark = pytest.mark.mpi

TESTS = Path(__file__).parent
# a rank that says who it is and then never ends by itself
SLEEPER = (
    "import os, sys, time; from mpi4py import MPI; "
    "open(os.path.join(sys.argv[1], f'rank-{os.getpid()}'), 'w'); time.sleep(900)"
)


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def job_pids(d: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in d.glob("rank-*")]


def test_a_job_in_its_own_session_dies_with_a_pytest_killed_by_sigkill(tmp_path: Path) -> None:
    """A stand-in for pytest starts its reaper as conftest.py does, starts a job in a session of its own (beyond
    the reach of a killpg), and is killed with SIGKILL: no finally, no fixture teardown runs. The job ends."""
    stand_in = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        sys.path.insert(0, {str(TESTS)!r})
        import jobs
        os.environ[jobs.RUN_MARK] = "stand-in-{os.getpid()}-{time.time_ns()}"
        keep = jobs.start_reaper(os.environ[jobs.RUN_MARK])
        argv = {retrying_argv(2, [sys.executable, "-c", SLEEPER, str(tmp_path)])!r}
        job = subprocess.Popen(argv, start_new_session=True)
        print(job.pid, flush=True)
        time.sleep(900)
        """
    )
    env = mpi_env()
    pytest_ = subprocess.Popen([sys.executable, "-c", stand_in], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert pytest_.stdout is not None
        launcher = int(pytest_.stdout.readline())
        wait_for(lambda: len(job_pids(tmp_path)) == 2, 120, "the job's ranks never started")
        pids = [launcher, *job_pids(tmp_path)]
        assert all(jobs.alive(p) for p in pids)
        pytest_.kill()
        pytest_.wait(30)
        wait_for(lambda: not any(jobs.alive(p) for p in pids), 60, f"the job outlived pytest: {pids}")
    finally:
        pytest_.kill()
        for p in job_pids(tmp_path):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_job_a_test_left_running_is_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What conftest.py does when a test is over: the MPI processes it started and left running end (SIGTERM,
    then SIGKILL); nothing else of the test's is touched."""
    mark = f"left-running-{time.time_ns()}"
    monkeypatch.setenv(jobs.TEST_MARK, mark)
    job = subprocess.Popen(retrying_argv(2, [sys.executable, "-c", SLEEPER, str(tmp_path)]), start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"])  # not MPI: left alone
    try:
        wait_for(lambda: len(job_pids(tmp_path)) == 2, 120, "the job's ranks never started")
        pids = [job.pid, *job_pids(tmp_path)]
        found = jobs.end_jobs(jobs.TEST_MARK, mark)
        assert set(pids) <= set(found), (pids, found)
        assert job.wait(30) is not None
        wait_for(lambda: not any(jobs.alive(p) for p in pids), 30, "the job survived")
        assert other.poll() is None
    finally:
        other.kill()
        job.kill()


@pytest.mark.skipif(not jobs.SHM_DIR.is_dir(), reason="no /dev/shm")
def test_segments_no_process_holds_are_removed_and_held_ones_kept() -> None:
    """A killed job's segment files go (conftest.py, after each test); a live process's stay, whether it holds
    the file open or only mapped."""
    tag = f"{os.getpid()}_{time.time_ns()}"
    names = [f"mpich_shm_test_{tag}_{what}" for what in ("left", "open", "mapped")]
    paths = [jobs.SHM_DIR / n for n in names]
    for p in paths:
        p.write_bytes(b"\0" * 4096)
    held = open(paths[1], "rb")  # noqa: SIM115 - held across the call
    with open(paths[2], "r+b") as f:
        mapped = mmap.mmap(f.fileno(), 4096)  # the file is closed, the mapping stays
    try:
        assert set(names) <= jobs.shm_segments()
        assert jobs.remove_stale_shm(set(names)) == [names[0]]
        assert [p.exists() for p in paths] == [False, True, True]
    finally:
        held.close()
        mapped.close()
        for p in paths:
            p.unlink(missing_ok=True)
