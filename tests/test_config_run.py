"""``chronompi run`` with a bad config under mpirun: one line on stderr, a non-zero exit, no traceback, no hang."""

from __future__ import annotations

import json
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
    """The command line is fine; $CHRONOMPI_OVERRIDES is not: one line says so, naming the variable (every rank
    raises the same error; it was said once per rank)."""
    store = tmp_path / "store"
    env = dict(os.environ, CHRONOMPI_OVERRIDES="workload.events=-5")
    r = chronompi_run(4, f"storage.root={store}", "workload.progress=false", env=env)
    assert r.returncode != 0
    # said once (MPICH's launcher may glue one rank's line to another's: count records)
    want = "chronompi run: in CHRONOMPI_OVERRIDES entry 'workload.events=-5': workload.events=-5 must be >= 0"
    records = [rec.split("\n", 1)[0].rstrip() for rec in re.split(r"(?=chronompi run: )", r.stderr)[1:]]
    assert records == [want], r.stderr


def test_default_layout_of_the_8_rank_demo(tmp_path: Path) -> None:
    """`chronompi mpirun -n 8 chronompi run --verify` with the default layout (the rule) keeps the README's
    layout: 1 visor, 1 keeper, 1 grapher, 5 clients, no spare, so no autoscaler; every event verified."""
    store = tmp_path / "store"
    r = chronompi_run(8, "--verify", f"storage.root={store}", "workload.events=2000", "workload.progress=false")
    assert r.returncode == 0, r.stderr
    runs = sorted((store / "runs").glob("*.json"))
    assert len(runs) == 1
    rec = json.loads(runs[0].read_text())
    assert rec["status"] == "complete"
    epoch0 = rec["epochs"][0]
    assert (len(epoch0["keepers"]), len(epoch0["graphers"]), len(rec["epochs"])) == (1, 1, 1)
    assert len(rec["roles"]["client"]) == 5
    # what the defaults resolved to is in the record
    assert rec["config"]["layout"] == {"keepers": 1, "graphers": 1, "per_node": False, "spares": 0, "clients": 5}
    assert rec["config"]["elastic"]["auto"] is False
    assert rec["events_stored"] == rec["events_logged"] == 5 * 2000
