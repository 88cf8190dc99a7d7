"""The durability contract under kill -9: every event logged before a returned ``sync()`` survives.

Each client of crashy.py logs at a steady pace with the default configuration (windows of
100 ms, batches aged 50 ms, staging on another directory), calls ``sync()`` every K events
and appends the returned sync point to its own file. The whole job is killed with SIGKILL
at a random moment. Then every event a client logged at or before its last returned sync
point must be in the store, byte for byte, once, in total order.

The default set runs a few seeds; ``pytest -m soak`` runs ten more.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
from test_crash import check, check_after_fsck, kill_job, launch, read_refs

from chronompi.store.fsck import fsck

pytestmark = pytest.mark.mpi

DEFAULT_SEEDS = [0, 1, 2]
SOAK_SEEDS = list(range(3, 13))


def read_sync_points(refdir: Path) -> dict[int, np.ndarray]:
    """Client id -> the sync points it got back, in order (a torn last record is not a record)."""
    out = {}
    for p in refdir.glob("sync-*.bin"):
        raw = p.read_bytes()
        out[int(p.stem[5:], 16)] = np.frombuffer(raw[: len(raw) // 8 * 8], np.int64)
    return out


def spec_for(seed: int) -> dict:
    rng = random.Random(seed)
    return {
        "cfg": {"service": {"summary": False}},  # everything else at its default
        "rate": rng.choice([2000, 5000, 10000]),
        "sync_every": rng.choice([50, 300, 1000]),
        "seconds": 60,
    }


def run_and_kill(tmp_path: Path, spec: dict, delay_s: float) -> tuple[Path, Path, int]:
    """Start the job, wait for its first returned sync (or, without syncs, its first logged events),
    let it run ``delay_s`` more, kill -9 it. Returns (store, refdir, kill time in ns)."""
    store, refdir = tmp_path / "store", tmp_path / "ref"
    refdir.mkdir()
    proc = launch(store, refdir, str(tmp_path / "stage"), None, tmp_path, spec=spec)
    try:
        deadline = time.monotonic() + 60
        first = "sync-*.bin" if spec.get("sync_every") else "ref-*.bin"
        while not any(p.stat().st_size >= 8 for p in refdir.glob(first)):
            assert proc.poll() is None, f"job ended before the kill: {proc.stdout.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, f"no {first} written within 60 s"
            time.sleep(0.02)
        time.sleep(delay_s)
        t_kill = time.time_ns()
    finally:
        kill_job(proc)
    return store, refdir, t_kill


def check_sync_contract(keys: set, refdir: Path) -> tuple[int, int]:
    """Every event at or before a client's last sync point is stored; returns (covered events, syncs)."""
    refs = read_refs(refdir)
    points = read_sync_points(refdir)
    covered = syncs = 0
    for cid, pts in points.items():
        if not len(pts):
            continue
        assert np.all(np.diff(pts) > 0), f"client {cid:x}: sync points do not grow"
        syncs += len(pts)
        ref = refs[cid]
        need = ref[ref["time"] <= pts[-1]]
        missing = [(int(r["story"]), int(r["seq"])) for r in need if (f"s{r['story']}", cid, int(r["seq"])) not in keys]
        assert not missing, f"client {cid:x}: {len(missing)} events synced before the kill are lost, e.g. {missing[:3]}"
        covered += len(need)
    return covered, syncs


def loss_window_ms(keys: set, refdir: Path, t_kill: int) -> float:
    """How far back from the kill the oldest event logged but not stored lies (0: nothing lost)."""
    oldest_lost = None
    for cid, ref in read_refs(refdir).items():
        lost = [int(r["time"]) for r in ref if (f"s{r['story']}", cid, int(r["seq"])) not in keys]
        if lost:
            oldest_lost = min(lost) if oldest_lost is None else min(oldest_lost, min(lost))
    return 0.0 if oldest_lost is None else (t_kill - oldest_lost) / 1e6


def _contract(seed: int, tmp_path: Path) -> None:
    spec = spec_for(seed)
    store, refdir, t_kill = run_and_kill(tmp_path, spec, random.Random(seed).uniform(0.2, 2.5))
    _, keys = check(store, refdir, windows_complete=False)  # total order, once, payloads byte for byte
    covered, syncs = check_sync_contract(keys, refdir)
    assert syncs and covered, "no sync returned before the kill: the test did not test anything"
    window = loss_window_ms(keys, refdir, t_kill)
    print(f"seed {seed}: {syncs} syncs, {covered} events covered, loss window {window:.0f} ms")
    report = fsck(store, repair=True, live_s=0)
    assert report.ok, report.problems
    assert keys <= check_after_fsck(store), "fsck lost events"


@pytest.mark.parametrize("seed", DEFAULT_SEEDS)
def test_synced_events_survive_kill_9(seed: int, tmp_path: Path) -> None:
    _contract(seed, tmp_path)


@pytest.mark.soak
@pytest.mark.parametrize("seed", SOAK_SEEDS)
def test_synced_events_survive_kill_9_soak(seed: int, tmp_path: Path) -> None:
    _contract(seed, tmp_path)
