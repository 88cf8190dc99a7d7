"""``chronompi run`` with a bad config under mpirun: one line on stderr, a non-zero exit, no traceback, no hang."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chronompi.launch import run_mpi

pytestmark = pytest.mark.mpi


def chronompi_run(n: int, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    try:
        r = run_mpi(n, [sys.executable, "-m", "chronompi", "run", *args], timeout=90, env=env, capture_output=True)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chronompi run {' '.join(args)} hung:\n{exc.stdout!r}\n{exc.stderr!r}")
    assert time.monotonic() - t0 < 60
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.mark.parametrize(
    "override, words",
    [
        ("workload.events=-5", ["workload.events=-5 must be >= 0"]),
        ("workload.threads=0", ["workload.threads=0 must be >= 1"]),
        ("storage.segment_bytes=abc", ["storage.segment_bytes='abc' is not an integer"]),
    ],
)
def test_bad_command_line_is_one_line(override: str, words: list[str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = chronompi_run(4, override, f"storage.root={store}", "workload.progress=false")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("chronompi run:")]
    assert len(lines) == 1, r.stderr  # rank 0 composes the config and reports; the others exit quietly
    assert lines[0].startswith("chronompi run: in the overrides on the command line: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert "full_key" not in r.stderr and "object_type" not in r.stderr
    assert not store.exists(), "nothing ran"


def test_bad_env_override_under_chronompi_run(tmp_path: Path) -> None:
    """The command line is fine; $CHRONOMPI_OVERRIDES is not: every rank says so, naming the variable."""
    store = tmp_path / "store"
    env = dict(os.environ, CHRONOMPI_OVERRIDES="workload.events=-5")
    r = chronompi_run(4, f"storage.root={store}", "workload.progress=false", env=env)
    assert r.returncode != 0
    # each of the 4 ranks says it (MPICH's launcher may glue one rank's line to another's: count records)
    want = "chronompi run: in CHRONOMPI_OVERRIDES entry 'workload.events=-5': workload.events=-5 must be >= 0"
    records = [rec.split("\n", 1)[0].rstrip() for rec in re.split(r"(?=chronompi run: )", r.stderr)[1:]]
    assert records == [want] * 4, r.stderr
