"""The offline player without MPI: segments written by the real writer, read back by open_store()."""

from __future__ import annotations

import datetime as dt
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import chronompi
from chronompi.codec import EVENT
from chronompi.config import StorageConfig
from chronompi.errors import DamagedSegment
from chronompi.store.format import init_store, write_run
from chronompi.store.writer import Run, SegmentWriter

W = 1_000_000  # 1 ms windows
T0 = 1_800_000_000 * 10**9


def make_run(
    window: int, clients: list[int], per: int, seq0: dict[int, int], late: bool = False, layout: str = "ordered"
) -> Run:
    """A run of ``window``; ``layout``: payloads in event order, in reverse order, or in two heap parts each
    in reverse order (how a grapher writes the chunks it received: not gathered into event order)."""
    rows = []
    for c in clients:
        for i in range(per):
            rows.append((window * W + 1 + i * 997 + c, c, seq0.get(c, 0) + i))
        seq0[c] = seq0.get(c, 0) + per
    rows.sort()
    ev = np.zeros(len(rows), EVENT)
    ev["time"], ev["client"], ev["seq"] = zip(*rows)
    payloads = [f"{t}:{c}:{s}".encode() * (1 + s % 3) for t, c, s in rows]
    ev["length"] = [len(p) for p in payloads]
    if layout == "ordered":
        ev["offset"] = np.cumsum(ev["length"]) - ev["length"]
        return Run(window, ev, np.frombuffer(b"".join(payloads), np.uint8), late)
    half = len(payloads) // 2
    pieces = [payloads[:half][::-1], payloads[half:][::-1]] if layout == "parts" else [payloads[::-1]]
    heaps = [np.frombuffer(b"".join(p), np.uint8) for p in pieces]
    offsets, base = [], 0
    for piece in pieces:  # offsets of each piece's payloads, reversed back to event order
        ends = np.cumsum([len(x) for x in piece])
        offsets += (base + ends - [len(x) for x in piece]).tolist()[::-1]
        base += int(ends[-1]) if len(piece) else 0
    ev["offset"] = offsets
    return Run(window, ev, heaps if layout == "parts" else heaps[0], late)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    init_store(root)
    cfg = StorageConfig(root=str(root), staging="none", segment_bytes=4000)
    seqs: dict[int, int] = {}
    w0 = T0 // W
    # two graphers, windows striped between them, one late run, segments rolling at 4000 bytes
    g = [SegmentWriter(root, 0xA1, i, cfg) for i in range(2)]
    for k in range(20):
        layout = ("ordered", "reversed", "parts")[k % 3]
        g[k % 2].append("c", "s", [make_run(w0 + k, [1, 2, 3], 10, seqs, layout=layout)])
    g[0].append("c", "s", [make_run(w0 + 3, [9], 5, seqs, late=True)])
    for w in g:
        w.close()
    write_run(root, {"run": f"{0xA1:016x}", "status": "complete", "start": T0, "end": T0 + 20 * W})
    return root


def all_rows(st: chronompi.Store) -> list[tuple[int, int, int, bytes]]:
    ev = st.replay("c", "s")
    return list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist(), ev["payload"].tolist()))


def test_full_replay_merges_graphers_segments_and_late_runs(store: Path) -> None:
    with chronompi.open_store(store) as st:
        rows = all_rows(st)
        assert len(rows) == 20 * 30 + 5 == st.count("c", "s")
        assert rows == sorted(rows) and len({r[:3] for r in rows}) == len(rows)
        assert all(p == f"{t}:{c}:{s}".encode() * (1 + s % 3) for t, c, s, p in rows)
        assert len(list((store / "segments").glob("*.h5"))) > 2  # rolled by size
        assert st.span("c", "s") == (rows[0][0], rows[-1][0])
        assert [r["run"] for r in st.runs()] == [f"{0xA1:016x}"]


def test_ranges_in_ns_datetime_and_iso(store: Path) -> None:
    with chronompi.open_store(store) as st:
        rows = all_rows(st)
        a, b = rows[100][0], rows[400][0]
        want = [r for r in rows if a <= r[0] < b]
        ev = st.replay("c", "s", a, b)
        assert list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist(), ev["payload"].tolist())) == want
        da = dt.datetime.fromtimestamp(a // 10**9, dt.UTC) + dt.timedelta(microseconds=(a % 10**9) // 1000)
        # a datetime has microseconds: the range starts at the microsecond, ISO keeps the nanoseconds
        assert st.replay("c", "s", da, b)["time"][0] == min(r[0] for r in rows if r[0] >= a - a % 1000)
        iso = da.strftime("%Y-%m-%dT%H:%M:%S.") + f"{a % 10**9:09d}Z"
        assert st.replay("c", "s", iso, b)["time"].tolist() == [r[0] for r in want]
        with pytest.raises(ValueError, match="after end"):
            st.replay("c", "s", b, a)
        with pytest.raises(ValueError, match="ISO-8601"):
            st.replay("c", "s", "yesterday")
        with pytest.raises(chronompi.UnknownStory):
            st.replay("c", "nope")
        with pytest.raises(chronompi.UnknownChronicle, match="the store has: c"):
            st.replay("nope", "s")


@pytest.mark.parametrize("batch", [1, 7, 31, 10_000])
def test_iter_replay_batches_concatenate_to_the_replay(store: Path, batch: int) -> None:
    with chronompi.open_store(store) as st:
        full = st.replay("c", "s")
        parts = list(st.iter_replay("c", "s", batch_events=batch))
        assert np.array_equal(np.concatenate([p["time"] for p in parts]), full["time"])
        assert [x for p in parts for x in p["payload"].tolist()] == full["payload"].tolist()
        if batch == 1:
            assert len(parts) > 10


def test_replay_frame(store: Path) -> None:
    pd = pytest.importorskip("pandas")
    with chronompi.open_store(store) as st:
        df = st.replay_frame("c", "s")
        ev = st.replay("c", "s")
    assert len(df) == len(ev) and list(df.columns) == ["time", "client", "seq", "payload"]
    assert df["time"].iloc[0] == pd.Timestamp(int(ev["time"][0]), unit="ns", tz="UTC")
    assert df["payload"].tolist() == ev["payload"].tolist()  # every payload, in order (Arrow column or bytes)
    assert df["seq"].tolist() == ev["seq"].tolist() and df["client"].tolist() == ev["client"].tolist()


def test_reading_an_open_segment_while_it_is_written(tmp_path: Path) -> None:
    root = tmp_path / "store"
    init_store(root)
    write_run(root, {"run": f"{0xB2:016x}", "status": "running", "start": T0})
    w = SegmentWriter(root, 0xB2, 0, StorageConfig(root=str(root), staging="none"))
    seqs: dict[int, int] = {}
    counts = []
    for k in range(5):
        w.append("c", "s", [make_run(T0 // W + k, [1], 4, seqs)])
        with chronompi.open_store(root) as st:  # the .part, in SWMR mode, while the writer holds it
            counts.append(len(st.replay("c", "s")))
    w.close()
    assert counts == [4, 8, 12, 16, 20]


def test_iter_replay_cuts_a_huge_window_into_bounded_batches(tmp_path: Path) -> None:
    root = tmp_path / "store"
    init_store(root)
    w = SegmentWriter(root, 0xC3, 0, StorageConfig(root=str(root), staging="none"))
    seqs: dict[int, int] = {}
    w.append("c", "s", [make_run(T0 // W, [1, 2, 3, 4], 250, seqs)])  # one window of 1,000 events
    w.close()
    with chronompi.open_store(root) as st:
        full = st.replay("c", "s")
        parts = list(st.iter_replay("c", "s", batch_events=100))
    assert len(parts) >= 9 and max(len(p) for p in parts) <= 200
    assert [x for p in parts for x in p["payload"].tolist()] == full["payload"].tolist()


# -- damaged segments ---------------------------------------------------------------------------------------------
def _first_segment(store: Path) -> Path:
    return sorted((store / "segments").glob("*.h5"))[0]


def _break_index(seg: Path, how: str) -> None:
    import h5py

    with h5py.File(seg, "a") as f:
        g = f["c/s"]
        if how == "missing":
            del g["windows"]
        elif how == "wrong type":
            del g["windows"]
            g.create_dataset("windows", data=np.arange(5))
        elif how == "past the events":
            rows = g["windows"][...]
            rows["n_rows"][-1] += 1000
            g["windows"][...] = rows
        elif how == "payload past the heap":
            ev = g["events"][...]
            ev["offset"][-1] += 10**6
            g["events"][...] = ev


@pytest.mark.parametrize("how", ["missing", "wrong type", "past the events", "payload past the heap"])
def test_damaged_index_raises_damaged_segment_naming_file_and_fsck(store: Path, how: str) -> None:
    seg = _first_segment(store)
    with chronompi.open_store(store) as st:
        whole = all_rows(st)
    _break_index(seg, how)
    with chronompi.open_store(store) as st:
        with pytest.raises(DamagedSegment) as info:
            st.replay("c", "s")
    exc = info.value
    assert isinstance(exc, chronompi.StoreError) and isinstance(exc, chronompi.ChronoError)
    assert exc.path == str(seg) and str(seg) in str(exc)
    assert f"chronompi fsck {store}" in str(exc) and exc.hint in str(exc)
    # read past it on request: a warning of the same class, and every event of the other segments
    with chronompi.open_store(store, skip_damaged=True) as st:
        with pytest.warns(DamagedSegment, match=seg.name):
            rest = all_rows(st)
    assert set(rest) < set(whole) and rest == sorted(rest)


def test_unreadable_file_is_skipped_with_a_warning(store: Path) -> None:
    """A file that is not HDF5 at all: skipped with a DamagedSegment warning (the category still works as one)."""
    bad = store / "segments" / "r00000000000000a1-g0009-0000.h5"
    bad.write_bytes(b"not hdf5 at all" * 100)
    with chronompi.open_store(store) as st:
        with pytest.warns(DamagedSegment, match="unreadable segment .*g0009") as rec:
            rows = all_rows(st)
    assert len(rows) == 20 * 30 + 5
    assert rec[0].message.path == str(bad) and "chronompi fsck" in str(rec[0].message)  # type: ignore[union-attr]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedSegment)  # a warning category that raises as an error too
        with pytest.raises(DamagedSegment):
            warnings.warn("plain message", DamagedSegment, stacklevel=2)


@pytest.mark.parametrize("cmd", ["replay", "ls", "stats", "export"])
def test_cli_damaged_index_is_one_line_naming_file_and_fsck(
    store: Path, cmd: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from chronompi.cli import main

    seg = _first_segment(store)
    _break_index(seg, "missing")
    args = [cmd, str(store)] + (["c", "s"] if cmd == "replay" else [])
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"chronompi {cmd}: segment {seg}: "), err
    assert f"chronompi fsck {store}" in err and "Traceback" not in err and "KeyError" not in err
    rc = main([*args, "--skip-damaged"])
    out, err = capsys.readouterr()
    assert rc == 0 and err.count("\n") == 1 and "warning" in err and seg.name in err, err


def test_fsck_finds_runs_with_payloads_out_of_event_order_sound(store: Path) -> None:
    """A grapher writes a run's payloads as the chunks came: fsck takes the run's byte span from its offsets
    (min to max) and keeps every byte (it used first and last event, which cut such runs short)."""
    import h5py

    from chronompi.store.fsck import check_story, plan_segment

    files = sorted((store / "segments").glob("*.h5"))
    assert files
    for p in files:
        with h5py.File(p, "r") as f:
            assert check_story(f["c/s"]) == []
            for plan in plan_segment(f, partial=True):  # as for a crashed run's part: only full rows kept
                assert plan.events == f["c/s/events"].shape[0]
                assert plan.bytes == f["c/s/payload"].shape[0]


def test_a_segment_closed_and_moved_while_listed_is_read_from_the_store(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader lists an open ``.part``; before it opens it, the writer closes it and moves it into the
    store (CI saw ``UnknownChronicle: no chronicle named 'c'; the store has: c``): the reader opens the
    moved file instead, with no DamagedSegment warning, and reads everything."""
    with chronompi.open_store(store) as st:
        want = all_rows(st)
    closed = sorted((store / "segments").glob("*.h5"))
    vanished = [p.with_name(p.name + ".part") for p in closed]  # what was listed, gone since
    monkeypatch.setattr(chronompi.Store, "segments", lambda self: vanished)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with chronompi.open_store(store) as st:
            assert st.stories("c") == ["s"]
            assert all_rows(st) == want


def test_payload_read_straight_from_the_file_equals_h5pys_read(tmp_path: Path) -> None:
    """The reader reads a closed segment's event rows and payload heap with pread (reader.read_direct): every
    range gives h5py's bytes, across chunk borders; a SWMR (.part) file is left to h5py."""
    import h5py

    from chronompi.store import reader
    from chronompi.store.format import open_segment

    root = tmp_path / "store"
    init_store(root)
    cfg = StorageConfig(root=str(root), staging="none", payload_chunk_bytes=4096, events_chunk_rows=512)
    w = SegmentWriter(root, 0xAB, 0, cfg)
    seqs: dict[int, int] = {}
    for k in range(20):
        w.append("c", "s", [make_run(T0 // W + k, [1, 2, 3], 200, seqs)])
    w.close()
    write_run(root, {"run": f"{0xAB:016x}", "status": "complete", "start": 0})
    seg = next((root / "segments").glob("*.h5"))
    rng = np.random.default_rng(7)
    with h5py.File(seg, "r") as f:
        ds = f["c/s/payload"]
        n = ds.shape[0]
        assert n > 20 * 4096
        for a, b in [(0, n), (1, 4095), (4095, 4097), (5000, 40000), *rng.integers(0, n, (20, 2)).tolist()]:
            a, b = min(a, b), max(a, b)
            out = np.empty(b - a, np.uint8)
            seen: list[int] = []
            assert reader.read_direct(ds, a, out, seen.append)
            assert out.tobytes() == ds[a:b].tobytes(), (a, b)
            assert seen == sorted(seen) and (b == a or seen[-1] == b - a)
        rows = f["c/s/events"]
        for a, b in [(0, rows.shape[0]), (3, 17), (511, 513), (100, 3000)]:
            got = np.empty(b - a, rows.dtype)
            assert reader.read_direct(rows, a, got, lambda n: None)
            assert got.tobytes() == rows[a:b].tobytes(), (a, b)
    with chronompi.open_store(root) as st:
        ev, heap = st.replay_raw("c", "s")
    assert len(ev) == 20 * 3 * 200
    assert [bytes(heap[o : o + n]) for o, n in zip(ev["offset"][:3].tolist(), ev["length"][:3].tolist())] == [
        f"{t}:{c}:{s}".encode() * (1 + s % 3) for t, c, s in zip(ev["time"][:3], ev["client"][:3], ev["seq"][:3])
    ]
    part = seg.with_name(seg.name + ".part")
    seg.rename(part)
    f = open_segment(part)
    try:
        assert not reader.read_direct(f["c/s/payload"], 0, np.empty(10, np.uint8), lambda n: None)
    finally:
        f.close()


def test_write_behind_starts_the_disk_early_and_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With storage.fsync on, the writer asks the disk to start on a segment every WRITE_BEHIND_BYTES (so the
    fsync that closes it waits for the last part only); with fsync=never it does not. The store is the same."""
    from chronompi.store import writer
    from chronompi.store.format import start_writeback

    calls: list[int] = []
    monkeypatch.setattr(writer, "WRITE_BEHIND_BYTES", 4096)
    monkeypatch.setattr(writer, "start_writeback", lambda fd: calls.append(fd) or start_writeback(fd))
    for mode in ("sync", "never"):
        root = tmp_path / mode
        init_store(root)
        w = SegmentWriter(root, 0xB1, 0, StorageConfig(root=str(root), staging="none", fsync=mode))
        seqs: dict[int, int] = {}
        runs = [make_run(T0 // W + k, [1, 2], 50, seqs) for k in range(20)]
        before = len(calls)
        for r in runs:
            w.append("c", "s", [r])
        made = len(calls) - before
        w.close()
        write_run(root, {"run": f"{0xB1:016x}", "status": "complete", "start": T0})
        if mode == "sync":
            assert made >= 5 and w.writebacks == (made if sys.platform == "linux" else 0), (made, w.writebacks)
        else:
            assert made == 0 and w.writebacks == 0
        with chronompi.open_store(root) as st:
            got = st.replay("c", "s")
        assert len(got) == 20 * 2 * 50 and list(got["seq"][got["client"] == 1]) == list(range(20 * 50))
    with (tmp_path / "f").open("wb") as f:
        f.write(b"x" * 65536)
        assert start_writeback(f.fileno()) == (sys.platform == "linux")
    assert start_writeback(10**6) is False  # a bad descriptor: only a hint, never an error
