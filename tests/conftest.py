from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import jobs
import pytest
from cluster import cluster_factory

from chronompi.launch import run_mpi

APPS = Path(__file__).parent / "apps"


def mpirun(n: int, script: str, *args: str, timeout: float = 120, check: bool = True, env: dict | None = None):
    """Run ``mpirun -n N python tests/apps/SCRIPT ARGS`` with a timeout; hangs dump tracebacks first."""
    e = dict(os.environ)
    e["CHRONOMPI_TEST_HANG_S"] = str(max(5.0, timeout - 10))
    e.update(env or {})
    try:
        r = run_mpi(n, [sys.executable, str(APPS / script), *args], timeout=timeout, env=e, capture_output=True)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mpirun -n {n} {script} hung for {timeout} s:\n{exc.stdout}\n{exc.stderr}")
    if check and r.returncode != 0:
        pytest.fail(f"mpirun -n {n} {script} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def rank_lines(stdout: str, start: str = r"RANK \d+ ") -> list[str]:
    """The lines the ranks printed that begin with the regex ``start``, whatever the launcher did to them.

    MPICH's launcher (hydra) forwards each rank's output as it comes, so one rank's line can be glued to the
    end of another's, its newline arriving later ("...sparesRANK 1 ConfigError: ...\\n\\n"); Open MPI
    forwards whole lines. Each line starts at a match of ``start`` and ends at the next match or newline."""
    return [piece.split("\n", 1)[0].rstrip() for piece in re.split(f"(?={start})", stdout)[1:]]


def manifest(store: Path) -> dict:
    runs = sorted((store / "runs").glob("*.json"))
    assert runs, f"no run manifest in {store}"
    return json.loads(runs[-1].read_text())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def need_hdf5_tools(tools: Iterable[str], what: str = "") -> None:
    """Skip the calling test with the reason when one of HDF5's command-line ``tools`` is not installed (a
    newcomer's machine may lack Debian's hdf5-tools); ``CHRONOMPI_REQUIRE_HDF5_TOOLS=1``, as CI sets it, makes
    that a failure. ``what`` leads the reason."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    why = f"{what}{', '.join(missing)} not installed (Debian/Ubuntu: apt-get install hdf5-tools)"
    if os.environ.get("CHRONOMPI_REQUIRE_HDF5_TOOLS") == "1":
        pytest.fail(f"{why}, and CHRONOMPI_REQUIRE_HDF5_TOOLS=1")
    pytest.skip(why)


@pytest.fixture
def netns_cluster(tmp_path: Path):
    """A maker of clusters in a box: ``netns_cluster(K)`` gives K nodes (tests/cluster.py), all down after the test."""
    make, finish = cluster_factory(tmp_path)
    yield make
    finish()


def pytest_configure(config: pytest.Config) -> None:
    """Every MPI job of this run ends with pytest, however pytest ends (tests/jobs.py)."""
    jobs.remove_stale_shm()  # segments that jobs killed before this run left behind
    if jobs.RUN_MARK not in os.environ:
        os.environ[jobs.RUN_MARK] = f"{os.getpid()}-{time.time_ns()}"
        config._chronompi_reaper = jobs.start_reaper(os.environ[jobs.RUN_MARK])  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _jobs_end_with_their_test(request: pytest.FixtureRequest):
    """The MPI processes a test started and left running (it failed, timed out, lost track) end with it."""
    mark = f"{os.environ.get(jobs.RUN_MARK)}:{request.node.nodeid}"
    os.environ[jobs.TEST_MARK] = mark
    segments = jobs.shm_segments()
    yield
    os.environ.pop(jobs.TEST_MARK, None)
    jobs.end_jobs(jobs.TEST_MARK, mark)
    jobs.remove_stale_shm(jobs.shm_segments() - segments)  # what the test's killed jobs left in /dev/shm


# The integration set: long end-to-end runs against the outside systems a user brings (a real Slurm, the
# multi-node bed, Parsl workflows and pools) and docs/parsl.md's examples, ~7 minutes on 2 cores. Quickstart
# line 2 leaves it out (pyproject.toml's default -m) so that it stays a quick check of an install; CI runs it
# right after line 2 (`pytest -m integration`, .ci/run). Marked here, by file, so that each file stays as
# written: every test of these files, and the MPI jobs of test_parsl.py (its pure tests stay in line 2).
INTEGRATION_FILES = {"test_slurm.py", "test_multinode.py", "test_parsl_pool.py", "test_parsl_follow.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = item.path.name
        if (
            name in INTEGRATION_FILES
            or (name == "test_parsl.py" and item.get_closest_marker("mpi") is not None)
            or (name == "test_docs.py" and "[docs/parsl.md:" in item.nodeid)
        ):
            item.add_marker(pytest.mark.integration)
