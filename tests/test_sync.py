"""sync(): what it promises, checked while the job runs (the kill -9 side is in test_sync_crash.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import manifest, mpirun

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize(
    "n, keepers, graphers, fsync",
    [(5, 1, 1, "sync"), (8, 2, 2, "always"), (7, 1, 3, "never")],
)
def test_synced_events_are_in_the_store_at_once(
    n: int, keepers: int, graphers: int, fsync: str, store: Path, tmp_path: Path
) -> None:
    """After sync() returns, the offline reader (another process's view) holds every event logged before."""
    cfg = {
        "layout": {"keepers": keepers, "graphers": graphers},
        "storage": {"staging": str(tmp_path / "stage"), "fsync": fsync},
        # windows of 30 s: a sync must not wait for its windows to close (8 rounds would take 4 min)
        "keeper": {"window_ms": 30000, "acceptance_ms": 60000},
        "service": {"summary": False},
    }
    r = mpirun(n, "sync_api.py", str(store), json.dumps({"cfg": cfg, "rounds": 8, "per_round": 150}))
    clients = n - 1 - keepers - graphers
    assert r.stdout.count("SYNC OK 8") == clients, r.stdout
    m = manifest(store)
    assert m["events_logged"] == m["events_stored"] == clients * 8 * 150
    assert all(c["syncs"] == 16 for c in m["roles"]["client"])  # 8 committed + 8 received (timeouts not counted)
    fsyncs = sum(g["fsyncs"] for g in m["roles"]["grapher"])
    assert (fsyncs == 0) if fsync == "never" else (fsyncs > 0)
