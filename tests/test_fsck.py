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


def build(root: Path, checksums: str = "xxh3") -> list[bytes]:
    init_store(root)
    w = SegmentWriter(root, 0xD4, 0, StorageConfig(root=str(root), staging="none"), checksums=checksums)
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
    """A schema-1 segment (no checksums): the index is rebuilt from the events' sorted runs.
    (Schema 2: tests/test_damage.py, flipped index rows.)"""
    root = tmp_path / "s"
    want = build(root, checksums="none")
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


# -- one fsck handles each file once ------------------------------------------------------------------------------
KILLED_WRITER = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_store_reader import T0, W, make_run
from chronompi.config import StorageConfig
from chronompi.store.writer import SegmentWriter
root = Path(sys.argv[1])
w = SegmentWriter(root, 0xF6, 0, StorageConfig(root=str(root), staging="none", segment_bytes=6000,
                                           payload_chunk_bytes=4096, events_chunk_rows=256))
seqs = {{}}
for k in range(13):
    w.append("c", "s", [make_run(T0 // W + k, [1, 2], 20, seqs)])
os.kill(os.getpid(), 9)  # the open segment stays a .part in STORE/segments, as after kill -9 of a grapher
"""


def crashed_store_staging_none(tmp_path: Path) -> tuple[Path, Path]:
    """A store whose grapher (staging = none) was killed with segments closed and one open;
    the run record names the staging directory as the job spelled it (absolute).
    Returns (the absolute store, a symlink to it: another spelling of the same store)."""
    import subprocess
    import sys

    root = (tmp_path / "store").absolute()
    init_store(root)
    write_run(
        root,
        {"run": f"{0xF6:016x}", "status": "running", "start": T0,
         "graphers": [{"index": 0, "rank": 2, "host": "h", "staging": str(root / "segments")}]},
    )  # fmt: skip
    script = KILLED_WRITER.format(tests=str(Path(__file__).parent))
    r = subprocess.run([sys.executable, "-c", script, str(root)], timeout=120, capture_output=True)
    assert r.returncode == -9, r.stderr.decode()
    assert len(list((root / "segments").glob("*.h5.part"))) == 1 and list((root / "segments").glob("*.h5"))
    old = time.time() - 3600  # the job died an hour ago
    for p in [*(root / "segments").iterdir(), *(root / "runs").iterdir()]:
        os.utime(p, (old, old))
    link = tmp_path / "link"
    link.symlink_to(root)
    return root, link


def test_staging_none_part_is_read_and_recovered_once(tmp_path: Path) -> None:
    root, link = crashed_store_staging_none(tmp_path)
    with chronompi.open_store(root) as st:
        want = st.replay("c", "s")["payload"].tolist()
    assert len(want) == 13 * 40
    with chronompi.open_store(link) as st:  # the same store by another name: the part is read once
        assert st.replay("c", "s")["payload"].tolist() == want
    rep = fsck(link, repair=True, live_s=60)
    assert rep.ok, rep.problems
    assert sum("recovered" in r for r in rep.repaired) == 1 and any("marked crashed" in r for r in rep.repaired)
    assert not list((root / "segments").glob("*.part")) and rep.events == len(want)
    assert [r["status"] for r in read_runs(root)] == ["crashed"]
    with chronompi.open_store(root) as st:
        assert st.replay("c", "s")["payload"].tolist() == want
    again = fsck(root, repair=True, live_s=60)
    assert again.ok and not again.repaired and again.events == len(want)


def test_staging_none_fsck_command_exits_0(tmp_path: Path, capsys) -> None:
    from chronompi.cli import main

    root, link = crashed_store_staging_none(tmp_path)
    assert main(["fsck", str(link)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count("repaired: recovered") == 1 and out.rstrip().endswith(": ok"), out
    assert main(["fsck", str(root)]) == 0


def test_fsck_right_after_a_crash_with_job_ended(tmp_path: Path, capsys) -> None:
    """Right after a crash fsck leaves young files alone (their job may be running) and exits 1; --job-ended
    says the job is dead: everything is recovered now, and a second fsck repairs nothing."""
    from chronompi.cli import main

    root, _ = crashed_store_staging_none(tmp_path)
    for p in [*(root / "segments").iterdir(), *(root / "runs").iterdir()]:
        os.utime(p)  # the job died just now
    with chronompi.open_store(root) as st:
        want = st.replay("c", "s")["payload"].tolist()
    assert main(["fsck", str(root)]) == 1
    out = capsys.readouterr().out
    assert "may be running; left alone" in out and list((root / "segments").glob("*.part")), out
    assert main(["fsck", "--job-ended", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("repaired: recovered") == 1 and "marked crashed" in out and out.rstrip().endswith(": ok"), out
    assert not list((root / "segments").glob("*.part")) and [r["status"] for r in read_runs(root)] == ["crashed"]
    with chronompi.open_store(root) as st:
        assert st.replay("c", "s")["payload"].tolist() == want
    assert main(["fsck", "--job-ended", str(root)]) == 0
    assert " 0 repaired, 0 problems: ok" in capsys.readouterr().out


# -- a dry run reports what the repair keeps ----------------------------------------------------------------------
def test_dry_run_counts_equal_what_the_repair_keeps(tmp_path: Path) -> None:
    root, _ = crashed_store_staging_none(tmp_path)  # closed segments, one .part of a dead run ...
    closed = sorted((root / "segments").glob("*.h5"))
    with h5py.File(closed[0], "a") as f:  # ... one segment without its windows index ...
        del f["c/s/windows"]
    with h5py.File(closed[-1], "a") as f:  # ... and one whose index points past its events
        rows = f["c/s/windows"][...]
        rows["n_rows"][-1] += 7
        f["c/s/windows"][...] = rows
    old = time.time() - 3600
    for p in closed:
        os.utime(p, (old, old))
    dry = fsck(root, repair=False, live_s=60)
    assert not dry.ok
    before = {p.name: p.read_bytes() for p in (root / "segments").iterdir()}
    assert {p.name: p.read_bytes() for p in (root / "segments").iterdir()} == before  # a dry run changes nothing
    rep = fsck(root, repair=True, live_s=60)
    assert rep.ok, rep.problems
    with chronompi.open_store(root) as st:
        kept = len(st.replay("c", "s"))
    segments = len(list((root / "segments").glob("*.h5")))
    assert dry.events == rep.events == kept == 13 * 40
    assert dry.segments == rep.segments == segments
    # line by line: what the dry run says a repair keeps is what the repair says it kept
    said = sorted(int(p.split("keeps ")[1].split()[0]) for p in dry.problems if "keeps" in p)
    done = sorted(int(r.split("rebuilt, ")[1].split()[0]) for r in rep.repaired if "rebuilt" in r)
    assert said == done and len(said) >= 2
    recoverable = [int(p.split("recoverable: ")[1].split()[0]) for p in dry.problems if "recoverable" in p]
    recovered = [int(r.split("recovered ")[1].split()[0]) for r in rep.repaired if "recovered" in r]
    assert recoverable == recovered and len(recovered) == 1
