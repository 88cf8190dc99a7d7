"""Elasticity: keepers and graphers join (from spare ranks) and leave while clients log.

Every case checks what the store holds, with plain h5py and with open_store: each event
exactly once, payload bytes as logged, total order, per (client, story) seq dense from 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import manifest, mpirun
from storecheck import check_reader, check_store

pytestmark = pytest.mark.mpi


def cfg(keepers: int, graphers: int, spares: int, **extra: dict) -> dict:
    out = {
        "layout": {"keepers": keepers, "graphers": graphers, "spares": spares},
        "client": {"batch_ms": 10},
        "keeper": {"window_ms": 20},
        "elastic": {"lead_ms": 100},
        "service": {"summary": False},
    }
    for key, val in extra.items():
        out.setdefault(key, {}).update(val)
    return out


CASES = {
    # name: (ranks, spec)
    "n8-keepers-grow-shrink": (
        8,
        {"cfg": cfg(1, 1, 2), "scale": [[2, 1], [3, 1], [1, 1], [2, 1]], "stories": 3, "rate": 3000},
    ),
    "n8-graphers-grow-shrink": (
        8,
        {"cfg": cfg(1, 1, 2), "scale": [[1, 2], [1, 3], [1, 1], [1, 2]], "stories": 3, "mode": "mixed", "rate": 3000},
    ),
    "n12-both-threads": (
        12,
        {
            "cfg": cfg(1, 1, 4),
            "scale": [[2, 2], [3, 3], [1, 2], [2, 1], [1, 1]],
            "stories": 4,
            "threads": 2,
            "mode": "mixed",
            "rate": 1500,
        },
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_scale_while_logging(name: str, store: Path, outdir: Path) -> None:
    n, spec = CASES[name]
    spec = {"events": 500, "min_seconds": 4.0, **spec}
    mpirun(n, "record.py", str(store), str(outdir), json.dumps(spec), timeout=180)
    stored = check_store(store, outdir)
    assert check_reader(store) == stored
    m = manifest(store)
    assert m["events_logged"] == m["events_stored"] == stored
    steps = spec["scale"]
    epochs = m["epochs"]
    assert len(epochs) == 1 + len(steps), epochs
    for (k, g), e in zip(steps, epochs[1:]):
        assert (len(e["keepers"]), len(e["graphers"])) == (k, g)
        assert e["complete"] >= e["announced"]
    # the members that served took part: every keeper and grapher that ever served got events
    roles = m["roles"]
    served_k = {e["rank"] for e in roles["keeper"] if e["events"]}
    served_g = {e["rank"] for e in roles["grapher"] if e["events"]}
    assert served_k == {k for e in epochs for k in e["keepers"]}, (served_k, epochs)
    assert served_g == {g for e in epochs for g in e["graphers"]}, (served_g, epochs)
    assert any(e.get("retired_epoch") for e in roles["keeper"] + roles["grapher"]), "nobody retired"
    scaled = json.loads((outdir / "scaled.json").read_text())
    assert [(len(s["keepers"]), len(s["graphers"])) for s in scaled] == [tuple(x) for x in steps]
