"""log_many of an array the caller refills right after the call: the store holds what was logged.

Before the fix the rows left in the open batch were views of the caller's array, so a refill before
the batch was sent changed what was stored (this test failed: payloads of the next round)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import mpirun


@pytest.mark.mpi
def test_log_many_keeps_the_rows_not_the_callers_buffer(store: Path) -> None:
    """Arrays refilled after the call, and lists (bytes, str, bytearrays refilled after the call, empty
    payloads) split over batches between log() calls: the store holds exactly what was logged, in order."""
    r = mpirun(5, "reuse_array.py", str(store), timeout=120)
    assert r.stdout.count("REUSE OK") == 2, r.stdout + r.stderr
    assert r.stdout.count("LISTS OK") == 2, r.stdout + r.stderr
