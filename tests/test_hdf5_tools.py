"""The standard HDF5 command-line tools of a distribution (Debian's hdf5-tools 1.10) read every file of a store.

Segments were written with ``libver="latest"`` by the HDF5 2.0 inside the h5py wheel: h5dump failed with
"internal error", h5ls showed ``*ERROR*`` for the events and windows datasets and h5stat exited 1. The writer
and fsck now bound the format to ``("v110", "v110")`` (SWMR append and SWMR reading still work).

Covered: closed segments written by a real job's grapher, and a segment fsck rebuilt from a ``.part`` that a
killed writer left behind. Without the tools the tests skip with the reason; ``CHRONOMPI_REQUIRE_HDF5_TOOLS=1``
(set by ``.ci/run``) turns that into a failure.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest
from conftest import need_hdf5_tools

from chronompi.launch import run_mpi
from chronompi.store.format import read_runs
from chronompi.store.fsck import fsck

TOOLS = ("h5dump", "h5ls", "h5stat")


def tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def datasets(path: Path) -> dict[str, int]:
    """``/chronicle/story/name -> rows``, read with h5py (the reference)."""
    out: dict[str, int] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__("/" + name, len(obj)) if isinstance(obj, h5py.Dataset) else None)
    return out


def check_file(path: Path) -> None:
    want = datasets(path)
    assert {n.rsplit("/", 1)[1] for n in want} == {"events", "payload", "windows"}, want
    r = tool("h5dump", str(path))
    assert r.returncode == 0, f"h5dump {path.name}: {r.stderr}"
    assert "error" not in r.stderr.lower(), r.stderr
    for name, rows in want.items():
        assert f'DATASET "{name.rsplit("/", 1)[1]}"' in r.stdout
        assert f"( {rows} ) / ( H5S_UNLIMITED )" in r.stdout, name
    assert 'H5T_STD_U64LE "offset"' in r.stdout and 'H5T_STD_I64LE "t_min"' in r.stdout
    r = tool("h5ls", "-r", str(path))
    assert r.returncode == 0 and "*ERROR*" not in r.stdout, f"h5ls -r {path.name}:\n{r.stdout}{r.stderr}"
    listed = dict(re.findall(r"^(\S+)\s+Dataset \{(\d+)/Inf\}$", r.stdout, re.M))
    assert {k: int(v) for k, v in listed.items()} == want
    r = tool("h5stat", str(path))
    assert r.returncode == 0 and "error" not in r.stderr.lower(), f"h5stat {path.name}: {r.stderr}"
    assert f"# of datasets: {len(want)}" in r.stdout


@pytest.mark.mpi
def test_tools_read_the_segments_of_a_job(tmp_path: Path) -> None:
    need_hdf5_tools(TOOLS)
    root = tmp_path / "store"
    cmd = [sys.executable, "-m", "chronompi", "run", f"storage.root={root}", "storage.staging=none"]
    cmd += ["workload.events=500", "workload.chronicles=2", "workload.progress=false", "service.summary=false"]
    r = run_mpi(5, cmd, timeout=120, capture_output=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted((root / "segments").glob("*.h5"))
    assert files and not list((root / "segments").glob("*.part"))
    for path in files:
        check_file(path)


def test_tools_read_a_segment_fsck_repaired(tmp_path: Path) -> None:
    need_hdf5_tools(TOOLS)
    root = tmp_path / "store"
    # a grapher killed mid-run: its .part (SWMR, written with the writer's own settings) and a run record `running`
    code = f"""
        import os
        from pathlib import Path
        from chronompi.codec import EVENT
        from chronompi.config import StorageConfig
        from chronompi.store.format import init_store, write_run
        from chronompi.store.writer import Run, SegmentWriter
        import numpy as np
        root = Path({str(root)!r})
        init_store(root)
        write_run(root, {{"run": f"{{0xD5:016x}}", "status": "running", "start": 1, "ranks": 4, "hosts": ["n"]}})
        w = SegmentWriter(root, 0xD5, 0, StorageConfig(root=str(root), staging="none"))
        t0 = 1_795_000_000_000_000_000
        for k in range(3):
            ev = np.zeros(40, dtype=EVENT)
            ev["time"] = t0 + k * 100_000_000 + np.arange(40)
            ev["client"], ev["seq"] = 7, np.arange(40) + 40 * k
            ev["offset"], ev["length"] = np.arange(40) * 5, 5
            w.append("c", "s", [Run(k + t0 // 100_000_000, ev, np.frombuffer(b"hello" * 40, np.uint8), False)])
        os._exit(0)  # like kill -9: nothing closed
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert list((root / "segments").glob("*.h5.part"))
    rep = fsck(root, repair=True, live_s=0)
    assert rep.ok and rep.repaired, rep
    assert read_runs(root)[0]["status"] == "crashed"
    files = sorted((root / "segments").glob("*.h5"))
    assert len(files) == 1 and not list((root / "segments").glob("*.part"))
    with h5py.File(files[0], "r") as f:
        assert "recovered" in f.attrs  # written by fsck, not by the grapher
    check_file(files[0])
