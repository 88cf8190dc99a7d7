"""The MPI science mini-app (examples/heat.py) runs under mpirun and leaves the diagnostics it promises."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import chronompi
from chronompi.launch import run_mpi

pytestmark = pytest.mark.mpi

ROOT = Path(__file__).resolve().parents[1]


def test_heat_logs_its_diagnostics(store: Path) -> None:
    steps, every = 40, 10
    argv = [sys.executable, str(ROOT / "examples" / "heat.py"), "--store", str(store), "--n", "128"]
    r = run_mpi(
        7,
        argv + ["--steps", str(steps), "--every", str(every), "--compare", "--repeat", "1"],
        timeout=120,
        capture_output=True,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["ranks"] == 4 and result["off_s"] > 0 and result["on_s"] > 0  # compare asserts equal checksums
    with chronompi.open_store(store) as st:
        residual = [json.loads(p) for p in st.replay("heat", "residual")["payload"].tolist()]
        timing = [json.loads(p) for p in st.replay("heat", "timing")["payload"].tolist()]
        field = [json.loads(p) for p in st.replay("heat", "field")["payload"].tolist()]
    assert [d["step"] for d in residual] == list(range(steps))
    deltas = [d["delta"] for d in residual]
    assert deltas[0] > 0 and deltas[-1] < deltas[0]  # the solver converges
    assert sorted((d["rank"], d["step"]) for d in timing) == [(r, s) for r in range(4) for s in range(steps)]
    assert all(d["compute_s"] >= 0 and d["halo_s"] >= 0 for d in timing)
    assert sorted((d["rank"], d["step"]) for d in field) == [(r, s) for r in range(4) for s in range(0, steps, every)]
    assert all(d["min"] <= d["mean"] <= d["max"] <= 100.0 for d in field)
