"""The damage matrix (issue 18): real segment files damaged on disk, then read and repaired.

Every case asserts that nothing wrong is served (each served event is one that was logged, with
its payload byte for byte, once), before fsck (with ``skip_damaged``: warnings and a subset; without:
a DamagedSegment or exact data) and after it; that every undamaged event is kept (the events of
every sorted run none of whose chunks, index row included, the damage touched: found from the
file's own chunk table before damaging it); that fsck does not say "ok" while it quarantined
anything; and that a second fsck repairs nothing. No MPI: segments come from the real writer,
crash-left ``.part`` files from a writer process killed with SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_store_reader import T0, W, make_run

import chronompi
from chronompi.config import StorageConfig
from chronompi.errors import DamagedSegment
from chronompi.store.format import init_store, open_segment, write_run
from chronompi.store.fsck import fsck
from chronompi.store.writer import SegmentWriter

Key = tuple[int, int, int]
SMALL = {"events_chunk_rows": 64, "payload_chunk_bytes": 2048}  # many chunks: damage hits few runs
WINDOWS = 40


def logged_runs() -> list:
    """The runs a writer appends (the same in the test and in the killed writer process)."""
    seqs: dict[int, int] = {}
    layouts = ("ordered", "reversed", "parts")
    return [make_run(T0 // W + k, [1, 2, 3], 8, seqs, layout=layouts[k % 3]) for k in range(WINDOWS)]


def logged() -> dict[Key, bytes]:
    out = {}
    for r in logged_runs():
        heap = np.concatenate(r.parts).tobytes()
        for e in r.events:
            out[(int(e["time"]), int(e["client"]), int(e["seq"]))] = heap[
                int(e["offset"]) : int(e["offset"] + e["length"])
            ]
    return out


def closed_store(root: Path) -> None:
    init_store(root)
    w = SegmentWriter(root, 0xDA, 0, StorageConfig(root=str(root), staging="none", segment_bytes=30_000, **SMALL))
    for r in logged_runs():
        w.append("c", "s", [r])
    w.close()
    write_run(root, {"run": f"{0xDA:016x}", "status": "complete", "start": T0})


KILLED = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_damage import SMALL, logged_runs
from chronompi.config import StorageConfig
from chronompi.store.format import init_store, write_run
from chronompi.store.writer import SegmentWriter
root = Path(sys.argv[1])
init_store(root)
write_run(root, {{"run": f"{{0xDB:016x}}", "status": "running", "start": 1}})
w = SegmentWriter(root, 0xDB, 0, StorageConfig(root=str(root), staging="none", segment_bytes=30_000, **SMALL))
for r in logged_runs():
    w.append("c", "s", [r])
os.kill(os.getpid(), 9)  # the open segment stays a .part, as after kill -9 of a grapher
"""


@pytest.fixture(autouse=True, params=["inline", "threaded"])
def checks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case twice: the reader hashing each row inline, and on its helper thread (beside the payload read
    and the merge test; production does that for rows of 8 MiB or more, larger than these stores' rows)."""
    from chronompi.store import reader

    if request.param == "threaded":
        monkeypatch.setattr(reader, "THREADED_CHECK_BYTES", 0)
    return str(request.param)


@pytest.fixture(scope="module")
def crashed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crashed") / "store"
    script = KILLED.format(tests=str(Path(__file__).parent))
    r = subprocess.run([sys.executable, "-c", script, str(root)], timeout=120, capture_output=True)
    assert r.returncode == -9, r.stderr.decode()
    return root


@pytest.fixture(scope="module")
def closed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("closed") / "store"
    closed_store(root)
    return root


def copy_of(template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(template, root)
    old = time.time() - 3600  # the job died an hour ago: fsck may repair its parts
    for p in [*(root / "segments").iterdir(), *(root / "runs").iterdir()]:
        os.utime(p, (old, old))
    return root


# -- what the damage touches ------------------------------------------------------------------------------------------
def _chunks(ds: h5py.Dataset, a: int, b: int) -> list[tuple[int, int]]:
    """File byte ranges of the chunks that hold elements [a, b) of ``ds``."""
    if b <= a:
        return []
    step = ds.chunks[0]
    out = []
    for c in range(a // step, (b - 1) // step + 1):
        info = ds.id.get_chunk_info_by_coord((c * step,))
        out.append((int(info.byte_offset), int(info.byte_offset + info.size)))
    return out


def runs_of(path: Path) -> list[tuple[set[Key], list[tuple[int, int]]]]:
    """Every sorted run of a segment: its event keys and the file byte ranges it depends on."""
    out = []
    with open_segment(path) as f:
        for c in f:
            for s in f[c]:
                g = f[c][s]
                ev_ds, pl_ds, wi_ds = g["events"], g["payload"], g["windows"]
                events, index = ev_ds[...], wi_ds[...]
                for i, w in enumerate(index):
                    a, n = int(w["first_row"]), int(w["n_rows"])
                    run = events[a : a + n]
                    lo, hi = int(run["offset"].min()), int((run["offset"] + run["length"]).max())
                    spans = _chunks(ev_ds, a, a + n) + _chunks(pl_ds, lo, hi) + _chunks(wi_ds, i, i + 1)
                    out.append(({(int(e["time"]), int(e["client"]), int(e["seq"])) for e in run}, spans))
    return out


def data_ranges(path: Path, name: str) -> list[tuple[int, int]]:
    """File byte ranges of every chunk of dataset ``name`` of story c/s."""
    with open_segment(path) as f:
        ds = f["c/s"][name]
        return _chunks(ds, 0, ds.shape[0])


def undamaged(runs: list[tuple[set[Key], list[tuple[int, int]]]], hits: list[tuple[int, int]]) -> set[Key]:
    keep: set[Key] = set()
    for keys, spans in runs:
        if not any(a < y and x < b for a, b in spans for x, y in hits):
            keep |= keys
    return keep


# -- what is served --------------------------------------------------------------------------------------------------
def served(root: Path, skip: bool) -> list[tuple[Key, bytes]]:
    with chronompi.open_store(root, skip_damaged=skip) as st:
        ev = st.replay("c", "s")
    return [((int(t), int(c), int(s)), p) for t, c, s, p in zip(ev["time"], ev["client"], ev["seq"], ev["payload"])]


def assert_exact(rows: list[tuple[Key, bytes]], want: dict[Key, bytes]) -> set[Key]:
    """Every served event was logged, with its payload, once; returns the served keys."""
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys)), "an event served twice"
    wrong = [(k, p) for k, p in rows if want.get(k) != p]
    assert not wrong, f"{len(wrong)} wrong events served, e.g. {wrong[:3]}"
    return set(keys)


def check(root: Path, want: dict[Key, bytes], keep: set[Key]) -> None:
    """The whole matrix's assertions for a damaged store ``root``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedSegment)
        assert_exact(served(root, skip=True), want)  # before fsck, skipping: a subset, exact
    try:
        assert_exact(served(root, skip=False), want)  # before fsck: an error or exact data
    except DamagedSegment:
        pass
    rep = fsck(root, repair=True, live_s=0)
    got = assert_exact(served(root, skip=False), want)  # after fsck: no error, exact
    assert keep <= got, f"fsck lost {len(keep - got)} undamaged events"
    if len(got) < len(want):
        assert not rep.ok, "fsck says ok while events were lost"
        assert sum(rep.quarantined.values()) or any("damaged/" in r for r in rep.repaired), rep
    again = fsck(root, repair=True, live_s=0)
    assert again.ok and not again.repaired, (again.problems, again.repaired)
    assert assert_exact(served(root, skip=False), want) == got


def flip(path: Path, positions: np.ndarray, rng: np.random.Generator) -> None:
    data = bytearray(path.read_bytes())
    for p in positions.tolist():
        data[p] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))


def positions_in(ranges: list[tuple[int, int]], k: int, rng: np.random.Generator) -> np.ndarray:
    every = np.concatenate([np.arange(a, b) for a, b in ranges])
    return rng.choice(every, size=min(k, len(every)), replace=False)


def the_part(root: Path) -> Path:
    parts = list((root / "segments").glob("*.h5.part"))
    assert len(parts) == 1
    return parts[0]


# -- the matrix -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9, 0.999])
def test_truncated_closed_segment(closed_template: Path, tmp_path: Path, fraction: float) -> None:
    root = copy_of(closed_template, tmp_path)
    want = logged()
    segs = sorted((root / "segments").glob("*.h5"))
    assert len(segs) >= 3
    victim = segs[1]
    keep = set().union(*(keys for p in segs if p != victim for keys, _ in runs_of(p)))
    size = victim.stat().st_size
    with open(victim, "r+b") as fh:
        fh.truncate(int(size * fraction))
    check(root, want, keep)


@pytest.mark.parametrize("fraction", [0.4, 0.6, 0.8])
def test_truncated_crash_left_part(crashed_template: Path, tmp_path: Path, fraction: float) -> None:
    root = copy_of(crashed_template, tmp_path)
    want = logged()
    part = the_part(root)
    closed = sorted((root / "segments").glob("*.h5"))
    keep = set().union(set(), *(keys for p in closed for keys, _ in runs_of(p)))
    runs = runs_of(part)
    cut = int(part.stat().st_size * fraction)
    with open(part, "r+b") as fh:
        fh.truncate(cut)
    try:
        open_segment(part).close()
        opens = True
    except (OSError, ValueError):
        opens = False  # nothing of it can be parsed: the whole file is quarantined
    if opens:
        keep |= undamaged(runs, [(cut, 1 << 62)])
    check(root, want, keep)


@pytest.mark.parametrize("where", ["events", "payload"])
def test_byte_flips_in_closed_segment(closed_template: Path, tmp_path: Path, where: str) -> None:
    root = copy_of(closed_template, tmp_path)
    want, rng = logged(), np.random.default_rng(18)
    victim = sorted((root / "segments").glob("*.h5"))[0]
    runs = runs_of(victim)
    pos = positions_in(data_ranges(victim, where), 20, rng)
    keep = undamaged(runs, [(int(p), int(p) + 1) for p in pos])
    keep |= set().union(*(k for p in (root / "segments").glob("*.h5") if p != victim for k, _ in runs_of(p)))
    flip(victim, pos, rng)
    check(root, want, keep)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_200_byte_flips_anywhere_in_closed_segment(closed_template: Path, tmp_path: Path, seed: int) -> None:
    """The issue's case: 200 bytes flipped anywhere in a closed segment, HDF5's own metadata included
    (its checksums then refuse the file's structure; today's reader let that RuntimeError out, or
    served the flipped bytes). The other segments' events are all kept."""
    root = copy_of(closed_template, tmp_path)
    want, rng = logged(), np.random.default_rng(seed)
    segs = sorted((root / "segments").glob("*.h5"))
    victim = segs[seed % len(segs)]
    keep = set().union(*(k for p in (root / "segments").glob("*.h5") if p != victim for k, _ in runs_of(p)))
    flip(victim, rng.choice(victim.stat().st_size, 200, replace=False), rng)
    check(root, want, keep)


def test_byte_flips_in_crash_left_part(crashed_template: Path, tmp_path: Path) -> None:
    root = copy_of(crashed_template, tmp_path)
    want, rng = logged(), np.random.default_rng(19)
    part = the_part(root)
    runs = runs_of(part)
    ranges = data_ranges(part, "events") + data_ranges(part, "payload")
    pos = positions_in(ranges, 30, rng)
    keep = undamaged(runs, [(int(p), int(p) + 1) for p in pos])
    keep |= set().union(set(), *(k for p in (root / "segments").glob("*.h5") for k, _ in runs_of(p)))
    flip(part, pos, rng)
    check(root, want, keep)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_200_byte_flips_anywhere_in_crash_left_part(crashed_template: Path, tmp_path: Path, seed: int) -> None:
    """The issue's case: 200 bytes flipped anywhere in a crash-left part (today: 99 corrupted events
    served, one twice, after fsck said ok). The closed segments' events are all kept."""
    root = copy_of(crashed_template, tmp_path)
    want, rng = logged(), np.random.default_rng(seed)
    part = the_part(root)
    keep = set().union(set(), *(k for p in (root / "segments").glob("*.h5") for k, _ in runs_of(p)))
    flip(part, rng.choice(part.stat().st_size, 200, replace=False), rng)
    check(root, want, keep)


def test_flipped_index_rows_keep_every_event(closed_template: Path, tmp_path: Path) -> None:
    """One bit flipped in three index rows apart: a first_row that now overlaps the run before it
    (today's reader served those events twice), an n_rows, a t_max. The runs' own data hashes vouch
    for their rows again, so fsck loses nothing; before it nothing wrong is served."""
    root = copy_of(closed_template, tmp_path)
    want = logged()
    victim = sorted((root / "segments").glob("*.h5"))[0]
    with open_segment(victim) as f:
        wi = f["c/s/windows"]
        index, n_events = wi[...], f["c/s/events"].shape[0]
        assert len(index) >= 6
        (base, _end), row = _chunks(wi, 0, 1)[0], wi.dtype.itemsize
        fields = wi.dtype.fields
    first = int(index["first_row"][3])
    bit = next(1 << b for b in range(8) if (first ^ (1 << b)) < first)  # lower: overlaps row 2, in range
    assert (first ^ bit) + int(index["n_rows"][3]) <= n_events
    data = bytearray(victim.read_bytes())
    data[base + 3 * row + fields["first_row"][1]] ^= bit
    data[base + 1 * row + fields["n_rows"][1]] ^= 0x04
    data[base + 5 * row + fields["t_max"][1] + 6] ^= 0x10
    victim.write_bytes(bytes(data))
    check(root, want, set(want))


def test_zeroed_chunk(closed_template: Path, tmp_path: Path) -> None:
    root = copy_of(closed_template, tmp_path)
    want = logged()
    victim = sorted((root / "segments").glob("*.h5"))[0]
    runs = runs_of(victim)
    a, b = data_ranges(victim, "payload")[1]
    keep = undamaged(runs, [(a, b)])
    keep |= set().union(*(k for p in (root / "segments").glob("*.h5") if p != victim for k, _ in runs_of(p)))
    data = bytearray(victim.read_bytes())
    data[a:b] = bytes(b - a)
    victim.write_bytes(bytes(data))
    check(root, want, keep)


@pytest.mark.parametrize("where", ["events", "payload"])
def test_two_chunks_swapped(closed_template: Path, tmp_path: Path, where: str) -> None:
    """Payload chunks swapped: today's code served other events' bytes. Events chunks swapped: the rows
    are genuine events with genuine offsets, which today's code served right; the hashes now quarantine
    those runs (nothing vouches for rows out of place) and keep the others."""
    root = copy_of(closed_template, tmp_path)
    want = logged()
    victim = sorted((root / "segments").glob("*.h5"))[0]
    runs = runs_of(victim)
    ranges = data_ranges(victim, where)
    same = [(x, y) for x in ranges for y in ranges if x < y and x[1] - x[0] == y[1] - y[0]]
    (a0, a1), (b0, b1) = same[0]
    keep = undamaged(runs, [(a0, a1), (b0, b1)])
    keep |= set().union(*(k for p in (root / "segments").glob("*.h5") if p != victim for k, _ in runs_of(p)))
    data = bytearray(victim.read_bytes())
    data[a0:a1], data[b0:b1] = data[b0:b1], data[a0:a1]
    victim.write_bytes(bytes(data))
    check(root, want, keep)


def test_schema_1_store_still_reads_and_checks(tmp_path: Path) -> None:
    """A store written before checksums (schema 1) reads back exactly; zeroed rows in it (time 0) are
    refused by the plausibility checks and quarantined by fsck, the rest kept."""
    root = tmp_path / "store"
    init_store(root)
    w = SegmentWriter(root, 0xDC, 0, StorageConfig(root=str(root), staging="none", **SMALL), checksums="none")
    for r in logged_runs():
        w.append("c", "s", [r])
    w.close()
    write_run(root, {"run": f"{0xDC:016x}", "status": "complete", "start": T0})
    want = logged()
    seg = next((root / "segments").glob("*.h5"))
    with h5py.File(seg, "r") as f:
        assert f.attrs["schema"] == 1 and "checksum" not in (f["c/s/windows"].dtype.names or ())
    assert dict(served(root, skip=False)) == want
    a, b = data_ranges(seg, "events")[2]
    data = bytearray(seg.read_bytes())
    data[a:b] = bytes(b - a)
    seg.write_bytes(bytes(data))
    with pytest.raises(DamagedSegment, match="cannot be data"):
        served(root, skip=False)
    rep = fsck(root, repair=True, live_s=0)
    assert not rep.ok and sum(rep.quarantined.values()) > 0
    got = assert_exact(served(root, skip=False), want)
    assert len(got) >= len(want) - 2 * 64  # the zeroed rows' runs at most
    assert fsck(root, repair=True, live_s=0).ok


def test_damage_names_file_story_and_rows(closed_template: Path, tmp_path: Path) -> None:
    root = copy_of(closed_template, tmp_path)
    victim = sorted((root / "segments").glob("*.h5"))[0]
    a, b = data_ranges(victim, "payload")[0]
    flip(victim, np.array([a + 5]), np.random.default_rng(1))
    with pytest.raises(DamagedSegment) as info:
        served(root, skip=False)
    e = info.value
    assert e.path == str(victim) and e.story == "c/s" and e.rows is not None
    assert "run 00000000000000da" in str(e) and "checksum" in str(e) and "chronompi fsck" in str(e)


def test_fsck_command_counts_what_it_quarantined(closed_template: Path, tmp_path: Path, capsys) -> None:
    """``chronompi fsck`` on flipped payload bytes: the events kept and quarantined with the reason, exit 1
    (never "ok" when events were lost), the original in damaged/; the second run: ok, exit 0, nothing done."""
    from chronompi.cli import main

    root = copy_of(closed_template, tmp_path)
    rng = np.random.default_rng(7)
    victim = sorted((root / "segments").glob("*.h5"))[0]
    flip(victim, positions_in(data_ranges(victim, "payload"), 5, rng), rng)
    assert main(["fsck", str(root)]) == 1
    out = capsys.readouterr().out
    last = out.splitlines()[-1]
    assert "quarantined (" in last and "data checksum mismatch" in last and not last.endswith(": ok"), out
    assert (root / "damaged" / victim.name).exists()
    assert main(["fsck", str(root)]) == 0
    out = capsys.readouterr().out
    assert "repaired:" not in out and out.rstrip().endswith(": ok"), out
