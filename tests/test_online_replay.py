"""Online replay from client ranks while the job runs: every tier, total order, no duplicates, none missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import manifest, mpirun

pytestmark = pytest.mark.mpi


def spec(tag: str, keepers: int, graphers: int, **extra) -> dict:
    cfg = {
        "layout": {"keepers": keepers, "graphers": graphers},
        # long windows keep events in keeper memory (hot); tiny segments roll into the store (cold)
        "keeper": {"window_ms": extra.pop("window_ms", 200), "acceptance_ms": 2000},
        "client": {"batch_ms": 5},
        "storage": {"segment_bytes": 2000},
    }
    return {"cfg": cfg, "tag": tag, "phases": 4, "per_phase": 300, "pause_ms": 150, **extra}


@pytest.mark.parametrize("n, k, g", [(4, 1, 1), (8, 2, 2)])
def test_online_replay_sees_every_tier(n: int, k: int, g: int, store: Path) -> None:
    r = mpirun(n, "online.py", str(store), json.dumps(spec("A", k, g)))
    assert r.stdout.count(" OK ") == 4, r.stdout
    m = manifest(store)
    assert sum(x["queries"] for x in m["roles"]["keeper"]) > 0
    segments = sum(len(x["segments"]) for x in m["roles"]["grapher"])
    assert segments > g, "segments did not roll: the cold tier was not exercised"


def test_online_replay_includes_earlier_runs(store: Path) -> None:
    mpirun(5, "online.py", str(store), json.dumps(spec("A", 1, 1, window_ms=20)))
    r = mpirun(5, "online.py", str(store), json.dumps(spec("B", 1, 1, window_ms=20, prev="A")))
    assert r.stdout.count(" OK ") == 4, r.stdout


def test_clients_on_the_visors_node_read_its_clock(store: Path) -> None:
    """A client on the visor's node shares its clock: offset 0 and error 0 exactly, no ping-pong, also when
    re-estimation is due (tests/test_multinode.py checks the clients of another node, which do measure)."""
    s = spec("A", 1, 1)
    s["cfg"]["client"]["clock_resync_s"] = 0.1
    r = mpirun(5, "online.py", str(store), json.dumps(s))
    assert r.stdout.count(" OK ") == 4, r.stdout
    clock = manifest(store)["clock"]
    assert len(clock) == 2, clock
    for c in clock.values():
        assert (c["syncs"], c["offset_ns"], c["error_ns"], c["offset_min_ns"], c["offset_max_ns"]) == (0, 0, 0, 0, 0), c
