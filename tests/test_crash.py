"""kill -9 of a whole job at chosen moments: what was committed reads back complete, the store always opens.

The reference: every client logs (time, seq, story) of each event to its own file as it goes.
A window's index row in a segment means the window was committed; a window is committed only
after every client promised to send nothing older, so each referenced event of a committed
window must be in the store. Payloads are checked byte for byte, and fsck must keep it all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import APPS

import chronompi
from chronompi.launch import mpi_env, retrying_argv
from chronompi.protocol import client_id
from chronompi.store.format import read_runs
from chronompi.store.fsck import fsck

sys.path.insert(0, str(APPS))
from crashy import REF, payload  # noqa: E402

pytestmark = pytest.mark.mpi

N = 6  # 1 visor, 1 keeper, 1 grapher, 3 clients


def launch(
    store: Path,
    refdir: Path,
    staging: str,
    fault: str | None,
    tmp: Path,
    graphers: int = 1,
    spec: dict | None = None,
    n: int = N,
):
    """Start crashy.py on N ranks (``spec`` replaces the default: small windows, 3000 events/s per client)."""
    if spec is None:
        spec = {
            "cfg": {
                "layout": {"keepers": 1, "graphers": graphers},
                "keeper": {"window_ms": 20, "acceptance_ms": 60000},
                "client": {"batch_ms": 5},
                "storage": {"segment_bytes": 60000},
                "service": {"summary": False},
            },
            "rate": 3000,
            "seconds": 40,
        }
    spec["cfg"].setdefault("storage", {})["staging"] = staging
    env = mpi_env()
    env["CHRONOMPI_TEST_HANG_S"] = "90"
    # a killed job cannot remove its shared-memory segments: keep them out of /dev/shm
    (tmp / "shm").mkdir(exist_ok=True)
    env["OMPI_MCA_btl_sm_backing_directory"] = str(tmp / "shm")
    if fault:
        env["CHRONOMPI_FAULT"] = fault
        env["CHRONOMPI_FAULT_DIR"] = str(tmp)
    argv = retrying_argv(n, [sys.executable, str(APPS / "crashy.py"), str(store), str(refdir), json.dumps(spec)])
    return subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    t0 = time.monotonic()
    try:
        while not ready():
            assert proc.poll() is None, f"job ended before the kill: {proc.stdout.read().decode()[-3000:]}"
            assert time.monotonic() - t0 < timeout, "the moment to kill never came"
            time.sleep(0.02)
    finally:
        kill_job(proc)


def kill_job(proc: subprocess.Popen) -> None:
    """kill -9 of every process of the job: mpirun's group and every rank (they run in their own groups)."""
    refdir = Path(proc.args[-2])
    pids = [int(p.name[4:]) for p in refdir.glob("pid-*")]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "ranks survived kill -9"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def read_refs(refdir: Path) -> dict[int, np.ndarray]:
    out = {}
    for p in refdir.glob("ref-*.bin"):
        raw = p.read_bytes()
        raw = raw[: len(raw) // REF.itemsize * REF.itemsize]  # a torn last record is not a record
        out[int(p.stem[4:], 16)] = np.frombuffer(raw, REF)
    return out


def stored_events(store: Path) -> dict[str, list[tuple[int, int, int, bytes]]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with chronompi.open_store(store) as st:
            if "c" not in st.chronicles():
                return {}
            out = {}
            for s in st.stories("c"):
                ev = st.replay("c", s)
                out[s] = list(
                    zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist(), ev["payload"].tolist())
                )
            return out


def committed_windows(store: Path) -> dict[str, set[int]]:
    """(story -> windows) that have an index row in any readable segment, closed or partial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with chronompi.open_store(store) as st:
            paths = st.segments()
    out: dict[str, set[int]] = defaultdict(set)
    for p in paths:
        try:
            f = h5py.File(p, "r", libver="latest", swmr=True) if p.suffix == ".part" else h5py.File(p, "r")
        except OSError:
            continue
        with f:
            if "c" in f:
                for s in f["c"]:
                    out[s].update(f["c"][s]["windows"]["window"].tolist() if f["c"][s]["windows"].shape[0] else [])
    return out


def stored_keys(store: Path, run: dict) -> set[tuple[str, int, int]]:
    """(story, client, seq) of every stored event, checked: total order, each once, payload as logged."""
    run_id = int(run["run"], 16)
    rank_of = {client_id(run_id, r): r for r in range(int(run["ranks"]))}
    keys: set[tuple[str, int, int]] = set()
    for story, rows in stored_events(store).items():
        j = int(story[1:])
        assert rows == sorted(rows), f"{story}: not in total order"
        for _t, cid, seq, data in rows:
            assert (story, cid, seq) not in keys, f"{story}: event ({cid:x}, {seq}) stored twice"
            keys.add((story, cid, seq))
            assert data == payload(rank_of[cid], j, seq), f"{story}: payload of ({cid:x}, {seq}) differs"
    return keys


def check(store: Path, refdir: Path, windows_complete: bool = True) -> tuple[int, set]:
    """The store is valid (order, once, payloads); with ``windows_complete``, every window with an index
    row holds every event logged into it (true without syncs: a sync writes a window's events so far)."""
    runs = read_runs(store)
    assert len(runs) == 1 and runs[0]["status"] == "running"
    window_ns = int(runs[0]["config"]["keeper"]["window_ms"] * 1e6)
    keys = stored_keys(store, runs[0])
    checked = 0
    if not windows_complete:
        return checked, keys
    committed = committed_windows(store)
    refs = read_refs(refdir)
    for cid, ref in refs.items():
        for j in (0, 1):
            mine = ref[ref["story"] == j]
            win = mine["time"] // window_ns
            need = np.isin(win, list(committed.get(f"s{j}", ())))
            for seq in mine["seq"][need].tolist():
                assert (f"s{j}", cid, seq) in keys, f"committed event s{j} ({cid:x}, {seq}) missing after the kill"
                checked += 1
    return checked, keys


@pytest.mark.parametrize(
    "moment, staging, fault",
    [
        ("recording", "same", None),
        ("mid-commit", "same", "commit:40"),
        ("segment-roll", "same", "roll:4"),
        ("move-from-staging", "shm", "move:4"),
    ],
)
def test_kill_9(moment: str, staging: str, fault: str | None, tmp_path: Path) -> None:
    store, refdir = tmp_path / "store", tmp_path / "ref"
    refdir.mkdir()
    stage = str(tmp_path / "stage") if staging == "same" else f"/dev/shm/chronompi-test-{os.getpid()}"
    proc = launch(store, refdir, stage, fault, tmp_path)
    if staging == "shm":
        request_cleanup = Path(stage)
    else:
        request_cleanup = None
    if fault:
        kill_when(proc, lambda: (tmp_path / f"at-{fault.split(':')[0]}").exists())
    else:
        kill_when(proc, lambda: len(list((store / "segments").glob("*.h5"))) >= 3)
    checked, keys = check(store, refdir)
    assert keys and checked, "nothing was committed before the kill: the test did not test anything"
    report = fsck(store, repair=True, live_s=0)
    assert report.ok, report.problems
    assert not list((store / "segments").glob("*.part")) and not list((store / "segments").glob("*.tmp-*"))
    after = check_after_fsck(store)
    assert keys <= after, f"fsck lost {len(keys - after)} events"
    assert read_runs(store)[0]["status"] == "crashed"
    again = fsck(store, repair=True, live_s=0)
    assert again.ok and not again.repaired, again.repaired
    if request_cleanup is not None:
        shutil.rmtree(request_cleanup, ignore_errors=True)


def check_after_fsck(store: Path) -> set:
    events = stored_events(store)
    return {(s, cid, seq) for s, rows in events.items() for _, cid, seq, _ in rows}


def test_offline_read_while_a_job_writes(tmp_path: Path) -> None:
    """open_store() on a store a job is writing: every read is consistent and reads only grow."""
    store, refdir = tmp_path / "store", tmp_path / "ref"
    refdir.mkdir()
    proc = launch(store, refdir, str(tmp_path / "stage"), None, tmp_path)
    seen: list[set] = []
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 6:
            assert time.monotonic() < deadline, "the job never wrote anything readable"
            assert proc.poll() is None
            if (store / "runs").is_dir() and list((store / "runs").glob("*.json")):
                run_id = int(read_runs(store)[0]["run"], 16)
                rank_of = {client_id(run_id, r): r for r in range(N)}
                keys = set()
                for story, rows in stored_events(store).items():
                    assert rows == sorted(rows)
                    for _t, cid, seq, data in rows:
                        assert data == payload(rank_of[cid], int(story[1:]), seq)
                        keys.add((story, cid, seq))
                if keys:
                    assert not seen or seen[-1] <= keys, "a later read lost events an earlier read had"
                    seen.append(keys)
            time.sleep(0.25)
    finally:
        kill_job(proc)
    assert len(seen[-1]) > len(seen[0])
