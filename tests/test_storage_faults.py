"""Storage faults end cleanly: a full disk or an unusable directory never segfaults, hangs or loses committed data.

Real faults only: a small tmpfs mounted for the test (root needed, else skipped), files where
directories should be, a read-only remount. Jobs are real mpirun runs with a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import APPS, mpirun, rank_lines

import chronompi
from chronompi.codec import EVENT
from chronompi.config import StorageConfig
from chronompi.errors import StorageFull
from chronompi.launch import mpi_env, retrying_argv
from chronompi.protocol import client_id
from chronompi.store.format import init_store, read_runs
from chronompi.store.fsck import fsck
from chronompi.store.space import MARGIN, free_bytes
from chronompi.store.writer import Run, SegmentWriter

sys.path.insert(0, str(APPS))
from fill_store import REF, payload  # noqa: E402

pytestmark = pytest.mark.mpi

N = 5  # 1 visor, 1 keeper, 1 grapher, 2 clients
GRAPHER_RANK = 2


@contextmanager
def tmpfs(path: Path, size: str = "16m") -> Iterator[Path]:
    """A real, small tmpfs at ``path`` for the duration of the block."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def last_run(store: Path) -> dict[str, Any]:
    """The newest run record of a store."""
    return read_runs(store)[-1]


def fill(directory: Path, leave: int) -> Path:
    """A filler file that leaves ``leave`` bytes free on ``directory``'s file system."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, free_bytes(directory) - leave)
    finally:
        os.close(fd)
    return filler


# -- start-up checks ------------------------------------------------------------
def _startup_fails(cfg: dict, *fragments: str) -> list[str]:
    t0 = time.monotonic()
    r = mpirun(4, "config_error.py", json.dumps(cfg), timeout=60, check=False)
    assert r.returncode != 0
    lines = rank_lines(r.stdout)  # (robust to MPICH's launcher gluing lines of different ranks)
    assert sorted(int(ln.split()[1]) for ln in lines) == [0, 1, 2, 3], r.stdout + r.stderr
    for ln in lines:
        assert "ConfigError" in ln, ln
        for f in fragments:
            assert f in ln, (f, ln)
    assert len({ln.split(" ", 2)[2] for ln in lines}) == 1, "every rank must raise the same error"
    assert time.monotonic() - t0 < 30
    return lines


def test_staging_that_is_a_file_fails_every_rank_at_start(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    cfg = {"storage": {"root": str(tmp_path / "store"), "staging": str(afile)}}
    _startup_fails(cfg, f"rank {GRAPHER_RANK} on", "storage.staging", str(afile), "not a directory")
    assert afile.read_text() == "not a directory"


def test_segments_dir_that_is_a_file_fails_every_rank_at_start(tmp_path: Path) -> None:
    store = tmp_path / "store"
    init_store(store)
    (store / "segments").rmdir()
    (store / "segments").write_text("in the way")
    _startup_fails({"storage": {"root": str(store)}}, "rank 0 on", "storage.root", "file is where a directory")


def test_read_only_store_fails_every_rank_at_start(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "4m") as ro:
        init_store(ro / "store")
        r = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")
        stage = str(tmp_path / "stage")
        # an existing store on a read-only file system: the grapher's probe finds it
        _startup_fails(
            {"storage": {"root": str(ro / "store"), "staging": stage}},
            f"rank {GRAPHER_RANK} on",
            "storage.root",
            "read-only",
        )
        # a new store under a read-only directory: rank 0 cannot create it
        _startup_fails({"storage": {"root": str(ro / "new")}}, "rank 0 on", "read-only")


# -- the writer alone on a full tmpfs -----------------------------------------
def _run(seq: int, n: int) -> Run:
    ev = np.zeros(n, EVENT)
    ev["time"] = 1 + np.arange(seq, seq + n)  # time 0 cannot be data: readers refuse it
    ev["seq"] = np.arange(seq, seq + n)
    ev["length"] = 1024
    ev["offset"] = np.arange(n) * 1024
    return Run(seq, ev, np.full(n * 1024, 7, np.uint8))


def test_writer_raises_storage_full_before_hdf5_sees_it(tmp_path: Path) -> None:
    """Appends until the tmpfs is full: StorageFull, never an HDF5 error; the file holds every append before it."""
    with tmpfs(tmp_path / "small", "4m") as small:
        cfg = StorageConfig(root=str(small / "store"), staging="none", payload_chunk_bytes=65536)
        init_store(cfg.root)
        w = SegmentWriter(cfg.root, 1, 0, cfg)
        written = 0
        with pytest.raises(StorageFull) as exc:
            for i in range(10_000):
                w.append("c", "s", [_run(written, 50 + i % 7)])
                written += 50 + i % 7
        assert exc.value.errno == 28 and exc.value.free < exc.value.needed
        assert free_bytes(small) >= MARGIN - 4096  # what the margin keeps: HDF5 never ran out
        w.close()
        assert not w.unmoved()
        with chronompi.open_store(cfg.root) as st:
            assert len(st.replay("c", "s")) == written == w.events_written


# -- jobs on a full disk ------------------------------------------------------------
def launch(store: Path, refdir: Path, stage: Path, tmp: Path, events: int, retry_s: float, rate: float = 1500):
    spec = {
        "cfg": {
            "layout": {"keepers": 1, "graphers": 1},
            "keeper": {"window_ms": 20, "acceptance_ms": 2000},
            "client": {"batch_ms": 5},
            "storage": {
                "staging": str(stage),
                "segment_bytes": 256 << 10,
                "payload_chunk_bytes": 64 << 10,
                "events_chunk_rows": 1024,
                "retry_s": retry_s,
            },
            "service": {"summary": True, "failure_grace_s": 10},
        },
        "events": events,
        "rate": rate,
    }
    env = mpi_env()
    env["CHRONOMPI_TEST_HANG_S"] = "50"
    (tmp / "shm").mkdir(exist_ok=True)  # an aborted job cannot remove its shared-memory files
    env["OMPI_MCA_btl_sm_backing_directory"] = str(tmp / "shm")
    argv = retrying_argv(N, [sys.executable, str(APPS / "fill_store.py"), str(store), str(refdir), json.dumps(spec)])
    return subprocess.Popen(
        argv, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, float]:
    t0 = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        pytest.fail(f"the job hung for {timeout} s:\n{out[-4000:]}")
    rc = proc.returncode
    assert rc not in (139, -11) and "Segmentation fault" not in out and "Failing at address" not in out, out[-4000:]
    return rc, out, time.monotonic() - t0


def read_refs(refdir: Path) -> dict[int, np.ndarray]:
    out = {}
    for p in refdir.glob("ref-*.bin"):
        raw = p.read_bytes()
        out[int(p.stem[4:], 16)] = np.frombuffer(raw[: len(raw) // REF.itemsize * REF.itemsize], REF)
    return out


def stored(store: Path) -> tuple[set, dict[str, set[int]]]:
    """Every stored event, checked: once, payload as logged, total order. Also (story -> committed windows)."""
    run = last_run(store)
    run_id = int(str(run["run"]), 16)
    window_ns = int(run["config"]["keeper"]["window_ms"] * 1e6)
    rank_of = {client_id(run_id, r): r for r in range(N)}
    keys: set = set()
    windows: dict[str, set[int]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with chronompi.open_store(store) as st:
            if "c" not in st.chronicles():
                return keys, windows
            for s in st.stories("c"):
                ev = st.replay("c", s)
                rows = list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist()))
                assert rows == sorted(rows), f"{s}: not in total order"
                for (_t, cid, seq), data in zip(rows, ev["payload"].tolist()):
                    assert (s, cid, seq) not in keys, f"{s}: event ({cid:x}, {seq}) stored twice"
                    keys.add((s, cid, seq))
                    assert data == payload(rank_of[cid], int(s[1:]), seq), f"{s}: payload of ({cid:x}, {seq}) differs"
                windows[s] = set((ev["time"] // window_ns).tolist())
    return keys, windows


def check_committed(store: Path, refdir: Path) -> tuple[set, int]:
    """Every logged event of a window the store holds is there (a window is written whole or not at all)."""
    keys, windows = stored(store)
    window_ns = int(last_run(store)["config"]["keeper"]["window_ms"] * 1e6)
    checked = 0
    for cid, ref in read_refs(refdir).items():
        for j in (0, 1):
            mine = ref[ref["story"] == j]
            need = np.isin(mine["time"] // window_ns, list(windows.get(f"s{j}", ())))
            for seq in mine["seq"][need].tolist():
                assert (f"s{j}", cid, seq) in keys, f"event s{j} ({cid:x}, {seq}) of a committed window is missing"
                checked += 1
    return keys, checked


def all_logged(refdir: Path) -> set:
    return {(f"s{int(r['story'])}", cid, int(r["seq"])) for cid, ref in read_refs(refdir).items() for r in ref}


def assert_failed(store: Path, out: str, full: Path) -> dict:
    run = last_run(store)
    assert run["status"] == "failed", (run["status"], out[-3000:])
    reason = run["reason"]
    assert isinstance(reason, dict)
    assert reason["errno"] == 28 and str(reason["path"]).startswith(str(full)), reason
    assert reason["grapher"] == 0 and reason["rank"] == GRAPHER_RANK, reason
    assert "aborting the job" in out and "fsck" in out, out[-3000:]
    return reason


def test_store_full_keeps_segments_in_staging_and_fsck_moves_them(tmp_path: Path) -> None:
    """(a) Staging on the normal disk, store on a full tmpfs: nothing is lost, the run fails naming the staged parts."""
    store, refdir, stage = tmp_path / "small" / "store", tmp_path / "ref", tmp_path / "stage"
    refdir.mkdir()
    with tmpfs(tmp_path / "small", "32m") as small:
        init_store(store)
        filler = fill(small, 2 << 20)
        proc = launch(store, refdir, stage, tmp_path, events=4000, retry_s=3)
        rc, out, took = finish(proc)
        assert rc != 0, out[-3000:]
        reason = assert_failed(store, out, store)
        assert reason["events_lost"] == 0 and reason["unmoved"], reason
        assert all(str(stage) in p for p in reason["unmoved"]), reason
        keys, checked = check_committed(store, refdir)  # the staged parts are read where they are
        assert keys == all_logged(refdir), "store full, staging fine: every event must still be readable"
        filler.unlink()
        report = fsck(store, repair=True, live_s=0)
        assert report.ok, report.problems
        assert not list(stage.rglob("*.part"))
        after, _ = stored(store)
        assert after == all_logged(refdir)
        print(f"store full: job ended {took:.1f} s after launch, {len(after)} events, {checked} checked")


def test_staging_full_falls_back_to_the_store(tmp_path: Path) -> None:
    """(b) Staging on a full tmpfs, store on the normal disk: segments open in the store; the run completes."""
    store, refdir = tmp_path / "store", tmp_path / "ref"
    refdir.mkdir()
    with tmpfs(tmp_path / "small", "16m") as small:
        fill(small, 300 << 10)  # less than a new segment and the margin: staging cannot take one
        proc = launch(store, refdir, small / "stage", tmp_path, events=3000, retry_s=3)
        rc, out, _ = finish(proc)
        assert rc == 0, out[-3000:]
        run = last_run(store)
        assert run["status"] == "complete"
        grapher = run["roles"]["grapher"][0]
        assert grapher["staging_fallbacks"] > 0 and not grapher["unmoved"], grapher
        keys, _ = check_committed(store, refdir)
        assert keys == all_logged(refdir)
        assert not list((small / "stage").rglob("*.part"))


def both_on(small: Path) -> tuple[Path, Path, Path]:
    """Store and staging on one tmpfs, 3 MiB of it free: (store, staging, filler)."""
    store = small / "store"
    init_store(store)
    return store, small / "stage", fill(small, 3 << 20)


def test_store_and_staging_full_ends_the_job_and_fsck_recovers(tmp_path: Path) -> None:
    """(c) Both on one full tmpfs: the grapher retries, gives up, the job aborts; committed data stays readable."""
    refdir = tmp_path / "ref"
    refdir.mkdir()
    with tmpfs(tmp_path / "small", "16m") as small:
        store, stage, filler = both_on(small)
        proc = launch(store, refdir, stage, tmp_path, events=4000, retry_s=3)
        rc, out, took = finish(proc)
        assert rc != 0, out[-3000:]
        reason = assert_failed(store, out, small)
        assert reason["events_lost"] > 0, reason
        before, checked = check_committed(store, refdir)
        assert before and checked, "nothing was committed before the disk filled: the test tested nothing"
        filler.unlink()
        report = fsck(store, repair=True, live_s=0)
        assert report.ok, report.problems
        after, _ = check_committed(store, refdir)
        assert before <= after
        run = last_run(store)
        assert run["status"] == "failed"
        first = min(e["time"] for e in run["storage"])
        print(f"both full: job ended {took:.1f} s after launch, {(run['end'] - first) / 1e9:.1f} s after the fault")


def test_space_freed_while_retrying_loses_nothing(tmp_path: Path) -> None:
    """(d) Both on one full tmpfs, the filler deleted while the grapher retries: the run completes with everything."""
    refdir = tmp_path / "ref"
    refdir.mkdir()
    with tmpfs(tmp_path / "small", "32m") as small:
        store, stage, filler = both_on(small)
        proc = launch(store, refdir, stage, tmp_path, events=4000, retry_s=20)
        deadline = time.monotonic() + 40
        while True:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the grapher never reported a storage failure"
            if read_runs(store) and any(e["state"] == "retrying" for e in last_run(store).get("storage", [])):
                break
            time.sleep(0.05)
        filler.unlink()
        rc, out, _ = finish(proc)
        assert rc == 0, out[-3000:]
        run = last_run(store)
        assert run["status"] == "complete" and run["events_lost"] == 0
        states = [e["state"] for e in run["storage"]]
        assert "retrying" in states and "recovered" in states and "gave-up" not in states, states
        keys, _ = check_committed(store, refdir)
        assert keys == all_logged(refdir)
