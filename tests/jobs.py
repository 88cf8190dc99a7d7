"""Every MPI job a test starts dies with its test, and with pytest however pytest ends (kill -9 included).

A job's processes are found by a mark in their environment, not by process group: ranks of a job started with
``start_new_session=True`` (tests/test_crash.py) and the ranks Open MPI starts run in groups of their own, and a
``chronompi mpirun ... crashy.py`` job outlived a pytest killed by a time limit. The environment is inherited by
every process of a job (the launcher, its daemons, the ranks) and read in ``/proc/PID/environ`` (Linux).

- ``RUN_MARK``: set once for the pytest process; a reaper process (``python tests/jobs.py MARK``), started by
  :func:`start_reaper` in its own session, waits for pytest's end (EOF on a pipe only pytest holds) and then ends
  every MPI process that carries the mark.
- ``TEST_MARK``: set for each test (conftest.py); its MPI processes still alive when the test is over are ended.

Only MPI processes are ended (a launcher, ``chronompi mpirun``/``record``, or a rank: a process with a rank in
its environment), never anything else a test may have started (a local Slurm's daemons, say).

A killed job leaves its shared-memory segments in ``/dev/shm`` (MPICH's ``mpich_shm_*``, Open MPI's
``sm_segment.*``): :func:`remove_stale_shm` deletes those no live process has open or mapped. Observed with the
``mpich`` wheel: with ~700 such files left by earlier runs, the MPICH leg failed in 3 of 3 runs (the spawned
services of tests/test_record.py's program-run-alone test never got the client's first batch); with
``/dev/shm`` cleared it passed, in 235 s against 305 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RUN_MARK = "TESTS_CHRONOMPI_RUN"  # (not CHRONOMPI_*: tests/test_docs.py gives its commands none of those)
TEST_MARK = "TESTS_CHRONOMPI_TEST"
LAUNCHERS = {"mpirun", "mpiexec", "mpiexec.hydra", "prterun", "prted", "orterun", "orted", "hydra_pmi_proxy"}
RANK_KEYS = (b"PMIX_RANK=", b"PMI_RANK=", b"OMPI_COMM_WORLD_RANK=")


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours
        return []


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_mpi(argv: list[str], environ: list[bytes]) -> bool:
    """A launcher, a ``chronompi mpirun``/``record`` wrapper, or a rank."""
    if any(Path(a).name in LAUNCHERS for a in argv[:2]):  # (a launcher may be a script: its interpreter first)
        return True
    words = [Path(a).name for a in argv[:4]]
    if "chronompi" in words and ("mpirun" in words or "record" in words):
        return True
    return any(e.startswith(RANK_KEYS) for e in environ)


def mpi_processes(key: str, value: str) -> list[int]:
    """The MPI processes (other than this one) whose environment has ``key=value``."""
    mark = f"{key}={value}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        env = _environ(pid)
        if mark in env and is_mpi(_argv(pid), env):
            out.append(pid)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def end_jobs(key: str, value: str, grace_s: float = 5.0) -> list[int]:
    """SIGTERM to every MPI process marked ``key=value`` (a launcher then ends its ranks), SIGKILL to what is
    left after ``grace_s``; returns the pids that were found."""
    pids = mpi_processes(key, value)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace_s
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids_left = [p for p in pids if alive(p)] + mpi_processes(key, value)  # (and any started meanwhile)
        if not pids_left:
            break
        pids = sorted(set(pids_left))
    return pids


SHM_DIR = Path("/dev/shm")
SHM_PREFIXES = ("mpich_shm_", "sm_segment.")  # MPICH's and Open MPI's segment files


def shm_segments() -> set[str]:
    """The MPI shared-memory segment files in /dev/shm (names)."""
    try:
        return {e.name for e in os.scandir(SHM_DIR) if e.name.startswith(SHM_PREFIXES)}
    except OSError:
        return set()


def _shm_in_use() -> set[str]:
    """Names of /dev/shm files some live process has open or mapped."""
    used: set[str] = set()
    prefix = f"{SHM_DIR}/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for line in (entry / "maps").read_text(errors="replace").splitlines():
                at = line.find(prefix)
                if at >= 0:
                    used.add(line[at + len(prefix) :].split(" ", 1)[0])
            for fd in os.scandir(entry / "fd"):
                target = os.readlink(fd.path)
                if target.startswith(prefix):
                    used.add(target[len(prefix) :].split(" ", 1)[0])
        except OSError:  # gone meanwhile, or not ours
            continue
    return used


def remove_stale_shm(names: set[str] | None = None) -> list[str]:
    """Delete the segment files among ``names`` (default: all of them) that no live process holds."""
    names = shm_segments() if names is None else names
    if not names:
        return []
    stale = sorted(names - _shm_in_use())
    for name in stale:
        try:
            (SHM_DIR / name).unlink()
        except OSError:
            pass
    return stale


def start_reaper(mark: str) -> int:
    """Start the reaper of this process's jobs: it ends every MPI process marked ``RUN_MARK=mark`` once this
    process is gone, however it ended. Returns the write end of its pipe (keep it open; never inherited)."""
    read, write = os.pipe()  # (both close-on-exec: only this process holds ``write``)
    env = {k: v for k, v in os.environ.items() if k not in (RUN_MARK, TEST_MARK)}
    subprocess.Popen(
        [sys.executable, __file__, mark],
        stdin=read,
        stdout=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # not in pytest's group: a Ctrl-C or a killpg of pytest does not end it
    )
    os.close(read)
    return write


if __name__ == "__main__":  # the reaper: wait for EOF (pytest is gone), then end its jobs
    while sys.stdin.buffer.read(1 << 16):
        pass
    end_jobs(RUN_MARK, sys.argv[1])
