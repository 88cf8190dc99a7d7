"""kill -9 of a real job written with ``storage.staging = none``, then ``chronompi fsck`` as a user runs it.

The open segments live in STORE/segments; the run record names that directory as the job spelled it
(absolute). fsck run from the store's parent with a relative path must handle every .part once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_crash import check, check_after_fsck, kill_when, launch

from chronompi.store.format import open_segment, read_runs

pytestmark = pytest.mark.mpi


def _committed_part(segs: Path) -> bool:
    """An open segment in the store with committed windows in it (past its creation, in SWMR mode)."""
    for part in segs.glob("*.h5.part"):
        try:
            with open_segment(part) as f:
                if any(f[c][s]["windows"].shape[0] for c in f for s in f[c]):
                    return True
        except (OSError, KeyError, ValueError):
            continue
    return False


def test_kill_9_staging_none_then_fsck_by_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, refdir = tmp_path / "store", tmp_path / "ref"
    refdir.mkdir()
    proc = launch(store, refdir, "none", None, tmp_path)
    segs = store / "segments"
    kill_when(proc, lambda: len(list(segs.glob("*.h5"))) >= 2 and _committed_part(segs))
    assert list(segs.glob("*.h5.part")), "no open segment in the store after the kill"
    monkeypatch.chdir(tmp_path)
    checked, keys = check(Path("store"), refdir)  # read by another spelling: every event once
    assert keys and checked
    old = time.time() - 3600  # the job died an hour ago (fsck leaves younger files alone)
    for p in [*segs.iterdir(), *(store / "runs").iterdir()]:
        os.utime(p, (old, old))
    cmd = [sys.executable, "-m", "chronompi", "fsck", "store"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stdout, r.stderr)
    n_parts = r.stdout.count("repaired: recovered")
    assert n_parts >= 1 and "marked crashed" in r.stdout, r.stdout
    assert not list(segs.glob("*.part")) and not list(segs.glob("*.tmp-*"))
    assert read_runs(store)[0]["status"] == "crashed"
    assert keys <= check_after_fsck(store)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0 and "repaired:" not in again.stdout, again.stdout
