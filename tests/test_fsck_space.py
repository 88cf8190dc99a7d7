"""fsck on a full disk: a real 8 MiB tmpfs (needs root), never a segfault, never a half-written file.

HDF5 segfaults when a flush hits ENOSPC, so fsck is run as a subprocess: a crash would show as a
negative exit status instead of killing pytest.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest
from test_fsck import crashed_store_staging_none
from test_store_reader import T0, W, make_run

import chronompi
from chronompi.config import StorageConfig
from chronompi.store.format import read_runs, write_atomic, write_run
from chronompi.store.writer import SegmentWriter


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "fs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True, timeout=60)


def fill(fs: Path, leave: int) -> Path:
    """Fill the file system of ``fs`` until ``leave`` bytes are free."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        block = b"\0" * (1 << 16)
        try:
            while True:
                os.write(fd, block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    st = os.statvfs(fs)
    assert abs(st.f_bavail * st.f_frsize - leave) < (128 << 10)
    return filler


def snapshot(store: Path) -> dict[str, str]:
    """Every file of the store (but the filler) and its content hash."""
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def damaged_store(fs: Path, big_events: int) -> tuple[Path, int]:
    """On ``fs``: a crashed run (closed segments, a .part, status running) plus a complete run whose
    one segment of about ``big_events`` * 90 bytes lost its windows index. Returns the store and how
    many events a repair must keep."""
    root, _ = crashed_store_staging_none(fs)
    cfg = StorageConfig(root=str(root), staging="none", payload_chunk_bytes=65536, events_chunk_rows=2048)
    w = SegmentWriter(root, 0xB7, 0, cfg)
    seqs: dict[int, int] = {}
    per = big_events // 40
    for k in range(10):
        w.append("c", "big", [make_run(T0 // W + k, [1, 2, 3, 4], per, seqs)])
    w.close()
    write_run(root, {"run": f"{0xB7:016x}", "status": "complete", "start": T0 + 1})
    with chronompi.open_store(root) as st:
        n = len(st.replay("c", "s")) + len(st.replay("c", "big"))
    big = next((root / "segments").glob(f"r{0xB7:016x}-*.h5"))
    with h5py.File(big, "a") as f:
        del f["c/big/windows"]
    old = os.stat(root / "runs" / f"r{0xF6:016x}.json").st_mtime
    os.utime(big, (old, old))
    return root, n


def run_fsck(store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chronompi", "fsck", str(store), *extra], capture_output=True, text=True, timeout=120
    )


def kept(store: Path) -> int:
    with chronompi.open_store(store) as st:
        return len(st.replay("c", "s")) + len(st.replay("c", "big"))


def test_full_disk_fsck_reports_and_changes_nothing(tmpfs: Path) -> None:
    store, n = damaged_store(tmpfs, big_events=4000)
    filler = fill(tmpfs, leave=256 << 10)  # less than the margin: no write can start
    before = snapshot(store)
    r = run_fsck(store)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)  # not -11: no segfault
    assert r.stderr == "" and "Traceback" not in r.stdout
    failed = [line for line in r.stdout.splitlines() if line.startswith("problem: could not repair")]
    assert len(failed) == 2, r.stdout  # the .part and the segment without an index
    for line in failed:
        assert "bytes free" in line and "needed" in line and str(store) in line, line
    assert not any("marked crashed" in line for line in r.stdout.splitlines())
    assert snapshot(store) == before  # nothing half written, no tmp file, the originals as they were
    assert not list(store.rglob("*.tmp-*"))
    assert [x["status"] for x in read_runs(store) if x["run"] == f"{0xF6:016x}"] == ["running"]
    # the dry run agrees with what a repair keeps once there is room
    filler.unlink()
    dry = run_fsck(store, "--dry-run")
    assert dry.returncode == 1 and f", {n} events," in dry.stdout, dry.stdout
    r = run_fsck(store)
    assert r.returncode == 0 and f", {n} events," in r.stdout, r.stdout
    assert kept(store) == n
    assert [x["status"] for x in read_runs(store) if x["run"] == f"{0xF6:016x}"] == ["crashed"]


def test_a_repair_that_does_not_fit_is_refused_the_others_done(tmpfs: Path) -> None:
    store, n = damaged_store(tmpfs, big_events=16000)  # a segment of ~1.4 MB to rebuild: 2.4 MB with the margin
    big = next((store / "segments").glob(f"r{0xB7:016x}-*.h5"))
    big_before = big.read_bytes()
    fill(tmpfs, leave=1536 << 10)  # room for the small recovery, not for the big rebuild
    r = run_fsck(store)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert any(line.startswith("repaired: recovered") for line in r.stdout.splitlines()), r.stdout
    failed = [line for line in r.stdout.splitlines() if line.startswith("problem: ")]
    assert len(failed) == 1 and big.name in failed[0] and "bytes free" in failed[0], r.stdout
    assert big.read_bytes() == big_before and not list(store.rglob("*.tmp-*"))
    assert not list((store / "segments").glob("*.part"))
    assert [x["status"] for x in read_runs(store) if x["run"] == f"{0xF6:016x}"] == ["crashed"]


def test_write_that_fills_the_disk_fails_cleanly(tmpfs: Path) -> None:
    """The second line of defence, without the free-space check: the disk fills during the write
    (fallocate or write fails with ENOSPC); the temporary file goes, the target stays as it was."""
    target = tmpfs / "target.h5"
    target.write_bytes(b"the original")
    fill(tmpfs, leave=1 << 20)
    with pytest.raises(OSError) as info:
        write_atomic(target, b"x" * (3 << 20), space_margin=None)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"the original" and sorted(p.name for p in tmpfs.iterdir()) == [
        "filler",
        "target.h5",
    ]
    with pytest.raises(OSError, match=r"bytes free, .* needed"):  # with the check: refused before writing
        write_atomic(target, b"x" * (3 << 20), space_margin=1 << 20)
    assert target.read_bytes() == b"the original"
