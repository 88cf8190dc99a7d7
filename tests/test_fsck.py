"""fsck without MPI: broken indexes rebuilt from the events, leftovers removed, live parts left alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
from test_store_reader import T0, W, make_run

import chronompi
from chronompi.config import StorageConfig
from chronompi.store.format import WINDOW, init_store, read_runs, write_run
from chronompi.store.fsck import fsck
from chronompi.store.writer import SegmentWriter


def build(root: Path) -> list[bytes]:
    init_store(root)
    w = SegmentWriter(root, 0xD4, 0, StorageConfig(root=str(root), staging="none"))
    seqs: dict[int, int] = {}
    for k in range(6):
        w.append("c", "s", [make_run(T0 // W + k, [1, 2], 20, seqs)])
    w.close()
    write_run(root, {"run": f"{0xD4:016x}", "status": "complete", "start": T0})
    with chronompi.open_store(root) as st:
        return st.replay("c", "s")["payload"].tolist()


def segment(root: Path) -> Path:
    return next((root / "segments").glob("*.h5"))


def test_sound_store_is_ok_and_untouched(tmp_path: Path) -> None:
    root = tmp_path / "s"
    build(root)
    before = segment(root).read_bytes()
    rep = fsck(root, repair=True, live_s=0)
    assert rep.ok and not rep.repaired and rep.segments == 1 and rep.events == 240
    assert segment(root).read_bytes() == before


def test_missing_index_is_rebuilt_from_the_events(tmp_path: Path) -> None:
    root = tmp_path / "s"
    want = build(root)
    with h5py.File(segment(root), "a") as f:
        del f["c/s/windows"]
    dry = fsck(root, repair=False)
    assert not dry.ok and any("missing dataset 'windows'" in p for p in dry.problems)
    rep = fsck(root, repair=True, live_s=0)
    assert rep.ok and any("index rebuilt" in r for r in rep.repaired)
    with chronompi.open_store(root) as st:
        assert st.replay("c", "s")["payload"].tolist() == want


def test_index_rows_pointing_past_the_events_are_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "s"
    want = build(root)
    with h5py.File(segment(root), "a") as f:
        wi = f["c/s/windows"]
        rows = wi[...]
        rows["n_rows"][-1] += 1000
        rows["first_row"][0] = 5  # overlaps the next row and leaves rows 0-4 uncovered
        wi[...] = rows
    dry = fsck(root, repair=False)
    assert any("points past the events" in p for p in dry.problems)
    assert any("not covered by the index" in p or "overlap" in p for p in dry.problems)
    assert fsck(root, repair=True, live_s=0).ok
    assert fsck(root, repair=True, live_s=0).ok  # and stays so
    with chronompi.open_store(root) as st:
        assert st.replay("c", "s")["payload"].tolist() == want
        index = h5py.File(segment(root), "r")["c/s/windows"][...]
        assert index.dtype == WINDOW and int(index["n_rows"].sum()) == len(want)


def test_leftovers_removed_and_live_work_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "s"
    build(root)
    tmp = root / "segments" / "r00000000000000d4-g0000-0009.h5.tmp-123"
    tmp.write_bytes(b"half a copy")
    write_run(root, {"run": f"{0xE5:016x}", "status": "running", "start": T0})  # a live run (fresh record)
    part = root / "segments" / "r00000000000000e5-g0000-0000.h5.part"
    part.write_bytes(b"being written")
    rep = fsck(root, repair=True, live_s=60)
    assert not tmp.exists() and any("temporary" in r for r in rep.repaired)
    assert part.exists() and any("may be running" in p for p in rep.problems)
    assert [r["status"] for r in read_runs(root) if r["run"] == f"{0xE5:016x}"] == ["running"]
    old = time.time() - 3600
    os.utime(part, (old, old))
    os.utime(root / "runs" / f"r{0xE5:016x}.json", (old, old))
    rep = fsck(root, repair=True, live_s=60)  # now dead: the unreadable part is set aside, the run crashed
    assert rep.ok and any("unreadable partial segment" in r for r in rep.repaired)
    assert not part.exists() and (root / "damaged" / part.name).read_bytes() == b"being written"
    assert [r["status"] for r in read_runs(root) if r["run"] == f"{0xE5:016x}"] == ["crashed"]
