"""Reading a store back: chronicles, stories, runs and time-range replays in total order.

What is read: every closed segment in ``STORE/segments`` (``*.h5``), plus the
open segments of runs that have not ended (``*.h5.part``: in the store, or in
a run's staging directory when that directory is visible from this host).
Open segments are read in SWMR mode, which also works on a segment whose
writer was killed; only rows covered by the windows index are used, and the
index is written after the rows it covers, so what is read is complete.

Damage: a file that cannot be opened at all is skipped with a
:class:`~chronompi.errors.DamagedSegment` warning (nothing in it is readable,
and the rest of the store is). A story whose datasets in a segment are missing,
of the wrong type, unreadable or inconsistent with its index raises
:class:`~chronompi.errors.DamagedSegment` naming the file: ``chronompi fsck``
rebuilds such an index from the events, so skipping would silently drop events
that are still there. ``open_store(path, skip_damaged=True)`` skips those too,
with a warning.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..codec import EVENT
from ..errors import DamagedSegment, StoreError, UnknownChronicle, UnknownStory
from ..merge import gather, merge_all, merged_as_is
from ..names import check_name
from .format import SEGMENTS, check_store, fsck_hint, open_segment, part_files, read_runs
from .integrity import RunClients, has_sums, implausible, row_sum, run_clients, run_hasher

log = logging.getLogger(__name__)

_FRACTION = re.compile(r"(\d\d:\d\d:\d\d)[.,](\d+)")


REPLAY = np.dtype([("time", "<i8"), ("client", "<u8"), ("seq", "<u8"), ("payload", object)])


def to_ns(t: Any, what: str = "time") -> int | None:
    """ns since the epoch from None, an int, a datetime (naive = UTC) or an ISO-8601 string (a float: ns, refused
    when it is small enough to be seconds)."""
    if t is None:
        return None
    if isinstance(t, (int, np.integer)):
        return int(t)
    if isinstance(t, str):
        s = t.strip()
        try:
            return int(s)
        except ValueError:
            pass
        extra_ns = 0
        m = _FRACTION.search(s)
        if m is not None and len(m.group(2)) > 6:  # datetime keeps microseconds: add the rest by hand
            frac = m.group(2)
            extra_ns = int(frac[6:9].ljust(3, "0"))
            s = s[: m.start(2)] + frac[:6] + s[m.end(2) :]
        try:
            base = to_ns(_dt.datetime.fromisoformat(s.replace("Z", "+00:00")), what)
            assert base is not None
            return base + extra_ns
        except ValueError:
            raise ValueError(
                f"{what} {s!r} is neither nanoseconds since the epoch nor an ISO-8601 time "
                "(e.g. 2026-11-25T06:41:07.5+00:00)"
            ) from None
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
        return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(t, float):
        if abs(t) < 1e14:  # seconds (time.time()) taken for ns would mean the first day of 1970
            raise ValueError(
                f"{what} {t!r} looks like seconds since the epoch (time.time()); give nanoseconds (int): "
                f"{int(t * 1e9)}, or a datetime"
            )
        return int(t)
    raise TypeError(f"{what} must be ns (int), a datetime or an ISO-8601 string, not {type(t).__name__}")


def packed(events: np.ndarray, heap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The payloads of ``events`` back to back in event order: (int64 offsets, n + 1 of them; bytes).

    No Python object per event: the heap is used as it is when the payloads already follow one
    another, else gathered (:func:`chronompi.merge.gather`: rows for equal sizes, slices for long
    payloads, a byte index only for short ones of mixed sizes). What Arrow's binary columns take."""
    n = len(events)
    lens = events["length"].astype(np.int64)
    bounds = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=bounds[1:])
    if not n:
        return bounds, np.empty(0, np.uint8)
    offs = events["offset"].astype(np.int64)
    start = int(offs[0])
    if bool(np.all(offs - start == bounds[:-1])):
        return bounds, heap[start : start + int(bounds[-1])]
    return bounds, gather(heap, offs, lens)


def to_replay(events: np.ndarray, heap: np.ndarray) -> np.ndarray:
    """Events plus heap -> REPLAY rows with payloads as ``bytes``."""
    # np.zeros, not np.empty: zeroed memory is how an object field holds None, while np.empty fills it one row
    # at a time (100 k rows: 1.4 ms against 20 ms, most of a replay of 1 s of events)
    out = np.zeros(len(events), REPLAY)
    out["time"], out["client"], out["seq"] = events["time"], events["client"], events["seq"]
    n = len(events)
    if not n:
        return out
    bounds, data = packed(events, heap)  # payloads back to back in event order (gathered if they were not)
    w = int(events["length"][0])
    if w and bool(np.all(events["length"] == w)):  # equal sizes: numpy makes the bytes objects
        out["payload"] = data.view(f"V{w}").tolist()
        return out
    raw = data.tobytes()
    b = bounds.tolist()
    out["payload"] = [raw[x:y] for x, y in zip(b[:-1], b[1:])]
    return out


@dataclass
class _Row:
    """Sorted runs of one story in one segment, neighbours in its events table (read in one go)."""

    file: h5py.File
    group: str
    first: int
    n: int
    t_min: int
    t_max: int
    runs: np.ndarray  # their windows-index rows (WINDOW, or WINDOW_V1 in a schema-1 segment)
    who: RunClients  # what the run record says about the story's clients


def damaged(f: h5py.File, key: str, what: str, rows: tuple[int, int] | None = None) -> DamagedSegment:
    """The error for story ``key`` of segment ``f`` being damaged (``what``: how; ``rows``: the sorted run)."""
    try:
        run = f" (run {int(f.attrs['run']):016x})"
    except Exception:  # noqa: BLE001 - the attribute may be what is damaged
        run = ""
    where = f" rows {rows[0]}-{rows[0] + rows[1] - 1}" if rows is not None and rows[1] else ""
    return DamagedSegment(
        f"segment {f.filename}: story {key}{run}{where} {what}",
        f.filename,
        fsck_hint(f.filename),
        story=key,
        rows=rows,
    )


_DAMAGE = (KeyError, OSError, ValueError, TypeError, RuntimeError)  # what h5py raises on a broken file
_INDEX_FIELDS = {"first_row", "n_rows", "t_min", "t_max"}


def index_rows(
    f: h5py.File,
    key: str,
    t0: int | None,
    t1: int | None,
    who: RunClients | None = None,
    checked: dict[tuple[str, str], int] | None = None,
) -> list[_Row]:
    """The windows-index rows of ``key`` in one file that may hold events of [t0, t1).

    Raises DamagedSegment when the story's datasets are missing, of the wrong type or
    unreadable, when an index row fails its checksum, or when the index points past its
    events or heap or covers a row twice. Every row's hash is checked, not only those of the
    range (a flipped time span would hide a run); ``checked`` remembers how many rows of each
    (file, story) passed, so a store checks each row once.
    """
    g = f[key]
    if not isinstance(g, h5py.Group):
        raise damaged(f, key, "is not a group")
    for name in ("events", "payload", "windows"):
        if not isinstance(g.get(name), h5py.Dataset):
            raise damaged(f, key, f"has no {name} dataset")
    wi, ev = g["windows"], g["events"]
    if wi.dtype.names is None or not _INDEX_FIELDS <= set(wi.dtype.names):
        raise damaged(f, key, f"has a windows index of the wrong type ({wi.dtype})")
    if ev.dtype.names is None or not {"time", "client", "seq", "offset", "length"} <= set(ev.dtype.names):
        raise damaged(f, key, f"has an events table of the wrong type ({ev.dtype})")
    try:
        if f.swmr_mode and f.mode == "r":
            wi.refresh()  # the index first: the rows it lists were flushed before it
            ev.refresh()
            g["payload"].refresh()
        index = wi[...] if wi.shape[0] else np.empty(0, wi.dtype)
    except _DAMAGE as exc:
        raise damaged(f, key, f"has an unreadable windows index ({' '.join(str(exc).split())})") from None
    if has_sums(index.dtype):
        done = checked.get((f.filename, key), 0) if checked is not None else 0
        for i in range(done, len(index)):
            if row_sum(index[i : i + 1]) != int(index["row_checksum"][i]):
                raise damaged(f, key, f"has a windows-index row ({i}) that fails its checksum")
        if len(index) and int((index["heap0"] + index["heap_bytes"]).max()) > g["payload"].shape[0]:
            raise damaged(f, key, "has an index pointing past its payload heap")
        if checked is not None:
            checked[(f.filename, key)] = len(index)
    if len(index):
        first = index["first_row"].astype(np.int64)
        stop = first + index["n_rows"].astype(np.int64)
        if int(stop.max()) > ev.shape[0]:
            raise damaged(f, key, f"has an index pointing past its events (row {int(stop.max())} of {ev.shape[0]})")
        order = np.argsort(first, kind="stable")
        if np.any(stop[order][:-1] > first[order][1:]):
            raise damaged(f, key, "has windows-index rows that cover the same events")
    sel = np.ones(len(index), bool)
    if t0 is not None:
        sel &= index["t_max"] >= t0
    if t1 is not None:
        sel &= index["t_min"] < t1
    who = who if who is not None else run_clients(None, key)
    return [
        _Row(f, key, int(w["first_row"]), int(w["n_rows"]), int(w["t_min"]), int(w["t_max"]), index[i : i + 1], who)
        for i, w in zip(np.flatnonzero(sel), index[sel])
    ]


def _coalesce(rows: list[_Row]) -> list[_Row]:
    """Merge rows that are neighbours in the same dataset into one read (h5py calls cost ~0.1 ms each).

    The result is no longer one sorted run per row, which is fine: callers merge
    everything they read into total order anyway.
    """
    out: list[_Row] = []
    for r in sorted(rows, key=lambda r: (id(r.file), r.group, r.first)):
        last = out[-1] if out else None
        if last is not None and last.file is r.file and last.group == r.group and last.first + last.n == r.first:
            out[-1] = _Row(
                r.file,
                r.group,
                last.first,
                last.n + r.n,
                min(last.t_min, r.t_min),
                max(last.t_max, r.t_max),
                np.concatenate([last.runs, r.runs]),
                r.who,
            )
        else:
            out.append(r)
    return out


def read_rows(
    rows: list[_Row], t0: int | None, t1: int | None, pending: list[_Check] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The events of [t0, t1) in the given rows as (events, heap) pieces to merge.

    Neighbouring rows are read in one go; every sorted run is read whole and verified (its
    checksums, and that every row can be data) before the events outside the range are cut.
    With ``pending``, the checksum checks still running are put there instead of waited for: the
    caller waits for each (:meth:`_Check.wait`) before it uses more than the pieces' shape."""
    runs: list[tuple[np.ndarray, np.ndarray]] = []
    for r in _coalesce(rows):
        try:
            piece = _read_row(r, t0, t1, pending)
        except DamagedSegment:
            raise
        except _DAMAGE as exc:
            why = " ".join(str(exc).split())
            one = (r.first, r.n) if len(r.runs) == 1 else None
            raise damaged(r.file, r.group, f"has unreadable events or payload ({why})", one) from None
        if piece is not None:
            runs.append(piece)
    return runs


def _read_row(
    r: _Row, t0: int | None, t1: int | None, pending: list[_Check] | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """One coalesced row read and verified: its events of [t0, t1) and their payload bytes (None: none).
    With ``pending``, a checksum check still running goes there (read_rows)."""
    g = r.file[r.group]
    if not r.n:
        return None
    idx = r.runs
    n_rows = idx["n_rows"].astype(np.int64)
    check: _Check | None = None
    if has_sums(idx.dtype):
        # schema 2: each run against its hashes (XXH3, ~10 GB/s). A run that passes is byte for byte what
        # the writer wrote, so the checks of rows that cannot be data are per run (its ends), not per row
        b0 = int(idx["heap0"].min())
        b1 = int((idx["heap0"] + idx["heap_bytes"]).max())
        events = g["events"]
        ev = np.empty(r.n, events.dtype)
        heap = np.empty(b1 - b0, np.uint8)
        check = check_sums(r, ev, b0, threaded=ev.nbytes + b1 - b0 >= THREADED_CHECK_BYTES)
        check.give_heap(heap)
        try:
            if not read_direct(events, r.first, ev, check.advance_events):
                events.read_direct(ev, np.s_[r.first : r.first + r.n])
            check.advance_events(r.n)
            if b1 > b0 and not read_direct(g["payload"], b0, heap, check.advance):
                g["payload"].read_direct(heap, np.s_[b0:b1])
            check.advance(b1 - b0)
        except BaseException:
            check.abandon()
            raise
        starts = (idx["first_row"] - r.first).astype(np.int64)
        ends = starts + n_rows - 1
        full = n_rows > 0
        t = ev["time"]
        problem = None
        if np.any(idx["t_min"][full] <= 0) or np.any(t[starts[full]] != idx["t_min"][full]):
            problem = "holds rows that cannot be data: a run's first time is not its index's"
        elif np.any(t[ends[full]] != idx["t_max"][full]):
            problem = "holds rows that cannot be data: a run's last time is not its index's"
        if problem is not None:
            check.wait()  # a run that fails its checksum is named alone: the rest of the row is kept
            raise damaged(r.file, r.group, problem)
        check.events_hashed()  # (the offsets are rebased below, in place)
    else:  # schema 1: no hashes; a run's payloads lie between its smallest offset and its largest end
        ev = g["events"][r.first : r.first + r.n]
        b0 = int(ev["offset"].min())
        b1 = int((ev["offset"] + ev["length"]).max())
        if b1 > g["payload"].shape[0]:
            raise damaged(r.file, r.group, f"has payloads past its heap (byte {b1} of {g['payload'].shape[0]})")
        heap = g["payload"][b0:b1] if b1 > b0 else np.empty(0, np.uint8)
        full = n_rows > 0
        starts = (np.cumsum(n_rows) - n_rows)[full]
        problem = implausible(ev, b0, b1, idx["t_min"][full], idx["t_max"][full], r.who, starts)
        if problem is not None:
            one = (r.first, r.n) if len(idx) == 1 else None
            raise damaged(r.file, r.group, f"holds rows that cannot be data: {problem}", one)
    if (t0 is not None and r.t_min < t0) or (t1 is not None and r.t_max >= t1):
        keep = np.ones(len(ev), bool)  # runs that straddle the range: cut after the check
        if t0 is not None:
            keep &= ev["time"] >= t0
        if t1 is not None:
            keep &= ev["time"] < t1
        ev = ev[keep]
        if not len(ev):
            if check is not None:
                check.wait()
            return None
    if b0:
        ev["offset"] -= b0
    if check is not None:
        if pending is None:
            check.wait()
        else:
            pending.append(check)
    return ev, heap


# A coalesced row of at least this many bytes (events and payload) is hashed on a helper thread while the
# payload is read; a smaller one inline (a thread costs ~0.1 ms). Measured: perf/bench_checksum.py.
THREADED_CHECK_BYTES = 8 << 20


DIRECT_PIECE = 16 << 20  # bytes a pread: few handovers of the interpreter lock, small enough to overlap


def read_direct(ds: h5py.Dataset, a: int, out: np.ndarray, advance: Any) -> bool:
    """Read elements [a, a + len(out)) of a 1-D dataset straight from the file with ``os.preadv``, which lets
    go of the interpreter lock (h5py's reads keep it), so that a helper thread hashes what has landed while
    the rest is read; ``advance(n)`` is called as the first ``n`` elements are in. Chunks that lie one after
    the other in the file are read together, DIRECT_PIECE bytes at a time. Only for what HDF5 would hand over
    unchanged: a chunked dataset without filters whose file type is ``out``'s dtype byte for byte, in a file
    of HDF5's default driver without a user block, not open for SWMR; False (nothing read) otherwise, and the
    caller reads through h5py. A chunk HDF5 never wrote reads as zeros (its fill value); a short read raises
    OSError (a damaged file)."""
    f = ds.file
    if ds.ndim != 1 or ds.chunks is None or f.driver != "sec2" or f.swmr_mode or f.userblock_size:
        return False
    if ds.dtype != out.dtype or out.dtype.hasobject or ds.id.get_type().get_size() != out.itemsize:
        return False
    if ds.id.get_create_plist().get_nfilters():
        return False
    size, item = ds.chunks[0], out.itemsize
    end = a + len(out)
    raw = out.view(np.uint8)
    reads: list[list[int]] = []  # [file offset, first element, elements]: neighbours in the file merged
    for k0 in range(a - a % size, end, size):
        lo, hi = max(a, k0), min(end, k0 + size)
        at = ds.id.get_chunk_info_by_coord((k0,)).byte_offset
        if at is None:
            raw[(lo - a) * item : (hi - a) * item] = 0
            continue
        at += (lo - k0) * item
        last = reads[-1] if reads else None
        if last is not None and last[0] + last[2] * item == at and last[1] + last[2] == lo - a:
            if last[2] * item < DIRECT_PIECE:
                last[2] += hi - lo
                continue
        reads.append([at, lo - a, hi - lo])
    fd = f.id.get_vfd_handle()
    view = raw.data
    done = 0
    for at, lo, n in reads:
        got = os.preadv(fd, [view[lo * item : (lo + n) * item]], at)
        if got != n * item:
            raise OSError(f"short read in {f.filename}: {got} of {n * item} bytes of {ds.name} at byte {at}")
        done = max(done, lo + n)
        advance(done)
    return True


def check_sums(r: _Row, ev: np.ndarray, b0: int, threaded: bool = False) -> _Check:
    """Start checking every sorted run of coalesced row ``r`` against its data checksum: ``ev`` are the row's
    events as stored, its payload bytes from ``b0`` follow with :meth:`_Check.give_heap` and
    :meth:`_Check.advance`; :meth:`_Check.wait` raises the DamagedSegment of the first run that fails. The
    index rows passed their own checksums when the index was read (_index_rows)."""
    return _Check(r, ev, b0, threaded)


class _Check:
    """The data checksums of one coalesced row's runs: XXH3-64 over each run's event rows, then its payload
    bytes. Threaded, each run's rows and payload are hashed as soon as they have been read
    (:meth:`advance_events`, :meth:`advance`); otherwise all once the payload is in."""

    def __init__(self, r: _Row, ev: np.ndarray, b0: int, threaded: bool) -> None:
        self.r, self.ev, self.b0 = r, ev, b0
        self.bad: int | None = None  # the first run that fails
        self.error: BaseException | None = None
        self._heap: np.ndarray | None = None
        self._hashers: list[Any] = []
        self._events_done = threading.Event()
        self._rows = 0  # event rows read so far
        self._read = 0  # heap bytes read so far
        self._inline_done = False
        self._abandoned = False
        self._more = threading.Condition()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="chronompi-verify", daemon=True)
            self._thread.start()

    def _until(self, rows: int, heap: int) -> bool:
        """Wait until ``rows`` event rows and ``heap`` payload bytes are in (threaded); False: abandoned."""
        if self._thread is not None and (rows > self._rows or heap > self._read):
            with self._more:
                while rows > self._rows or heap > self._read:
                    self._more.wait()
        return not self._abandoned

    def _hash_events(self) -> None:
        idx, first = self.r.runs, self.r.first
        for a, n in zip(idx["first_row"].tolist(), idx["n_rows"].tolist()):
            if not self._until(a - first + n, 0):
                return
            self._hashers.append(run_hasher(self.ev[a - first : a - first + n]))
        self._events_done.set()

    def _hash_heap(self) -> None:
        idx = self.r.runs
        spans = list(zip(idx["heap0"].tolist(), idx["heap_bytes"].tolist(), idx["checksum"].tolist()))
        for i in sorted(range(len(spans)), key=lambda i: spans[i][0]):
            h0, size, want = spans[i]
            lo, hi = h0 - self.b0, h0 - self.b0 + size
            if not self._until(0, hi):
                return
            h = self._hashers[i]
            if size:
                h.update(self._heap[lo:hi].data)  # type: ignore[index]
            if h.intdigest() != want and (self.bad is None or i < self.bad):
                self.bad = i

    def _run(self) -> None:
        try:
            self._hash_events()
            self._hash_heap()
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread by wait()
            self.error = exc
        finally:
            self._events_done.set()

    def give_heap(self, heap: np.ndarray) -> None:
        """The array the payload bytes are read into (from ``b0``), before they are read."""
        self._heap = heap

    def advance_events(self, n: int) -> None:
        """The first ``n`` event rows have been read."""
        if self._thread is not None:
            with self._more:
                self._rows = n
                self._more.notify()
        else:
            self._rows = n

    def advance(self, n: int) -> None:
        """The first ``n`` bytes of the heap have been read (after every event row); once all are, an inline
        check runs."""
        if self._thread is not None:
            with self._more:
                self._read = n
                self._more.notify()
        elif self._heap is not None and n >= len(self._heap) and not self._inline_done:
            self._read, self._inline_done = n, True
            self._hash_events()
            self._hash_heap()

    def abandon(self) -> None:
        """The rows or the payload could not be read: the helper thread stops."""
        with self._more:
            self._abandoned, self._rows, self._read = True, 1 << 62, 1 << 62
            self._more.notify()
        if self._thread is not None:
            self._thread.join()

    def events_hashed(self) -> None:
        """Wait until the event rows are hashed (before anything changes them in place)."""
        if self._thread is not None:
            self._events_done.wait()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        if self.bad is not None:
            idx, i = self.r.runs, self.bad
            first, n = int(idx["first_row"][i]), int(idx["n_rows"][i])
            window = int(idx["window"][i])
            raise damaged(self.r.file, self.r.group, f"window {window}: data checksum mismatch", (first, n))


def _unreadable(f: h5py.File, key: str, exc: BaseException) -> DamagedSegment:
    """The error for HDF5 failing to read the structure of segment ``f`` (at ``key``)."""
    why = " ".join(str(exc).split())
    return DamagedSegment(f"segment {f.filename}: unreadable structure ({why})", f.filename, fsck_hint(f.filename))


def _hit(r: _Row, exc: DamagedSegment) -> bool:
    """Whether row ``r`` is what ``exc`` says is damaged (one run, else the whole story in that file)."""
    if r.file.filename != exc.path or (exc.story is not None and r.group != exc.story):
        return False
    return exc.rows is None or (r.first < exc.rows[0] + max(exc.rows[1], 1) and exc.rows[0] < r.first + r.n)


class Store:
    """A store directory opened for reading; iterating it gives chronicle names."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        exclude_run: int | None = None,
        skip_damaged: bool = False,
        include_graphers: Iterable[int] = (),
    ) -> None:
        self.path = check_store(path)
        self._exclude = f"r{exclude_run:016x}-" if exclude_run is not None else None
        # ... but the closed segments of these graphers of that run (they left it: nobody else answers for them)
        self._include = tuple(f"{self._exclude}g{i:04d}-" for i in include_graphers) if self._exclude else ()
        self.skip_damaged = skip_damaged  # damaged stories: warn and read past them instead of raising
        self._files: dict[Path, h5py.File] = {}
        self._warned: set[Path] = set()
        self._warned_damage: set[str] = set()
        self._records: dict[int, dict[str, Any]] | None = None
        self._checked: dict[tuple[str, str], int] = {}  # index rows whose hashes passed, per (file, story)

    # -- lifecycle --------------------------------------------------------
    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except Exception:  # noqa: BLE001 - closing a damaged file must not mask the real error
                pass
        self._files.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<chronompi Store {str(self.path)!r}>"

    # -- files ------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """The run table: one record per job that recorded into this store, oldest first."""
        return read_runs(self.path)

    def segments(self) -> list[Path]:
        """Closed segments, then open (``.part``) segments still readable from here."""
        seg = self.path / SEGMENTS
        parts = part_files(self.path)  # first: a segment closed meanwhile is in the closed listing below
        closed = sorted(seg.glob("*.h5")) if seg.is_dir() else []
        names = {p.name for p in closed}
        live = [p for p in parts if p.name[: -len(".part")] not in names]
        if self._exclude is not None:  # an online replay gets its own run's data from the services
            return [
                p
                for p in closed + live
                if not p.name.startswith(self._exclude) or (p.suffix == ".h5" and p.name.startswith(self._include))
            ]
        return closed + live

    def _open(self, p: Path) -> h5py.File | None:
        f = self._files.get(p)
        if f is not None:
            if p.suffix == ".part":
                try:
                    f.close()
                except Exception:  # noqa: BLE001
                    pass
                f = None  # reopen: the writer may have added windows
            else:
                return f
        try:
            f = open_segment(p)
            if p.suffix == ".part" and p not in self._warned:
                self._warned.add(p)
                log.info("reading open or crashed segment %s (committed windows only)", p)
        except (OSError, ValueError) as exc:
            if p.suffix == ".part" and not p.exists():
                return None  # its writer closed and moved it meanwhile: not damaged
            if p not in self._warned:
                self._warned.add(p)
                why = " ".join(str(exc).split())
                hint = fsck_hint(p, "move it to damaged/") if p.suffix != ".part" else fsck_hint(p, "recover it")
                warnings.warn(DamagedSegment(f"unreadable segment {p} ({why})", p, hint), stacklevel=3)
            return None
        self._files[p] = f
        return f

    def _files_iter(self) -> Iterator[h5py.File]:
        for p in self.segments():
            f = self._open(p)
            if f is None and p.suffix == ".part" and not p.exists():  # closed and moved since it was listed
                moved = self.path / SEGMENTS / p.name[: -len(".part")]
                f = self._open(moved) if moved.exists() else None
            if f is not None:
                yield f

    # -- catalogue --------------------------------------------------------
    def _unknown(self, chronicle: str) -> UnknownChronicle:
        return UnknownChronicle(chronicle, hint="the store has: " + (", ".join(self.chronicles()) or "no chronicles"))

    def chronicles(self) -> list[str]:
        names: set[str] = set()
        for f in self._files_iter():
            try:
                names.update(f.keys())
            except _DAMAGE as exc:
                self._skip(_unreadable(f, "", exc))
        return sorted(names)

    def stories(self, chronicle: str) -> list[str]:
        check_name(chronicle, "chronicle")
        names: set[str] = set()
        found = False
        for f in self._files_iter():
            try:
                if chronicle in f:
                    found = True
                    names.update(f[chronicle].keys())
            except _DAMAGE as exc:
                self._skip(_unreadable(f, chronicle, exc))
        if not found:
            raise self._unknown(chronicle)
        return sorted(names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.chronicles())

    def __len__(self) -> int:
        return len(self.chronicles())

    def __contains__(self, chronicle: object) -> bool:
        return chronicle in self.chronicles()

    # -- index ------------------------------------------------------------
    def _rows(self, chronicle: str, story: str, t0: int | None, t1: int | None) -> list[_Row]:
        """Index rows (sorted runs) of the story that may hold events of [t0, t1)."""
        check_name(chronicle, "chronicle")
        check_name(story, "story")
        if t0 is not None and t1 is not None and t0 > t1:
            raise ValueError(f"start {t0} is after end {t1}; give start <= end")
        key = f"{chronicle}/{story}"
        rows: list[_Row] = []
        seen_chronicle = seen_story = False
        for f in self._files_iter():
            try:
                if chronicle not in f:
                    continue
                seen_chronicle = True
                if key not in f:
                    continue
                seen_story = True
                rows.extend(index_rows(f, key, t0, t1, self._who(f, key), self._checked))
            except DamagedSegment as exc:
                self._skip(exc)
            except _DAMAGE as exc:  # HDF5's own metadata checksums (object headers, links) failed
                self._skip(_unreadable(f, key, exc))
        if not seen_chronicle:
            raise self._unknown(chronicle)
        if not seen_story:
            raise UnknownStory(chronicle, story)
        return rows

    def _who(self, f: h5py.File, key: str) -> RunClients:
        """What the record of segment ``f``'s run says about the clients of story ``key``."""
        if self._records is None:
            self._records = {}
            for rec in self.runs():
                try:
                    self._records[int(str(rec["run"]), 16)] = rec
                except (KeyError, ValueError):
                    continue
        try:
            run = int(f.attrs["run"])
        except Exception:  # noqa: BLE001 - a segment without its run attribute: nothing to check against
            return run_clients(None, key)
        return run_clients(self._records.get(run), key)

    def _skip(self, exc: DamagedSegment) -> None:
        """A damaged story: raise, or with ``skip_damaged`` warn (once a file) and go on without it."""
        if not self.skip_damaged:
            raise exc
        what = f"{exc.path}:{exc.story}:{exc.rows}"
        if what not in self._warned_damage:
            self._warned_damage.add(what)
            warnings.warn(exc, stacklevel=4)

    def _read(self, rows: list[_Row], t0: int | None, t1: int | None) -> tuple[np.ndarray, np.ndarray]:
        while True:
            pending: list[_Check] = []
            try:
                runs = read_rows(rows, t0, t1, pending)
                # whether the pieces need a merge is read from them while the last payload is hashed (it
                # only reads them); a merge itself uses offsets and lengths, so it waits for every check
                as_is = merged_as_is(runs)
                for check in pending:
                    check.wait()
                break
            except DamagedSegment as exc:
                for check in pending:
                    check.abandon()
                self._skip(exc)
                left = [r for r in rows if not _hit(r, exc)]  # the damaged run, else the story in that file
                if len(left) == len(rows):
                    left = [r for r in rows if r.file.filename != exc.path]
                if len(left) == len(rows):
                    raise
                rows = left
        if not runs:
            return np.empty(0, EVENT), np.empty(0, np.uint8)
        return as_is if as_is is not None else merge_all(runs)

    # -- replay -----------------------------------------------------------
    def replay_raw(
        self, chronicle: str, story: str, start: Any = None, end: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Events of ``[start, end)`` in total order as (EVENT rows, payload heap): no per-event objects."""
        t0, t1 = to_ns(start, "start"), to_ns(end, "end")
        return self._read(self._rows(chronicle, story, t0, t1), t0, t1)

    def replay(self, chronicle: str, story: str, start: Any = None, end: Any = None) -> np.ndarray:
        """Events of ``[start, end)`` in total order.

        ``start``/``end``: ns since the epoch, datetimes (naive means UTC) or
        ISO-8601 strings; None is open-ended. Returns a structured array with
        fields ``time`` (int64 ns), ``client`` (uint64), ``seq`` (uint64) and
        ``payload`` (bytes).
        """
        return to_replay(*self.replay_raw(chronicle, story, start, end))

    def iter_replay(
        self, chronicle: str, story: str, start: Any = None, end: Any = None, batch_events: int = 1 << 20
    ) -> Iterator[np.ndarray]:
        """Like :meth:`replay`, in batches of about ``batch_events`` events (for ranges larger than memory).

        Batches are cut between index rows at times no run straddles, so the
        concatenation of the batches is in total order.
        """
        for events, heap in self.iter_replay_raw(chronicle, story, start, end, batch_events):
            yield to_replay(events, heap)

    def iter_replay_raw(
        self, chronicle: str, story: str, start: Any = None, end: Any = None, batch_events: int = 1 << 20
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """:meth:`iter_replay` as (EVENT rows, payload heap) batches: no Python object per event."""
        if batch_events < 1:
            raise ValueError(f"batch_events={batch_events} must be >= 1")
        t0, t1 = to_ns(start, "start"), to_ns(end, "end")
        rows = sorted(self._rows(chronicle, story, t0, t1), key=lambda r: r.t_min)
        group: list[_Row] = []
        count = 0
        reach = None  # latest t_max of the group: the next group must start after it
        for r in rows:
            if group and count >= batch_events and reach is not None and r.t_min > reach:
                yield from self._batches(group, t0, t1, batch_events)
                group, count = [], 0
            group.append(r)
            count += r.n
            reach = r.t_max if reach is None else max(reach, r.t_max)
        if group:
            yield from self._batches(group, t0, t1, batch_events)

    def _batches(
        self, group: list[_Row], t0: int | None, t1: int | None, batch_events: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One group of overlapping rows as batches of about ``batch_events``: a group much larger
        is cut at event times (read from the time column alone), so ties stay in one batch."""
        if sum(r.n for r in group) <= 2 * batch_events:
            yield self._read(group, t0, t1)
            return
        times = np.concatenate([r.file[r.group]["events"].fields("time")[r.first : r.first + r.n] for r in group])
        if t0 is not None:
            times = times[times >= t0]
        if t1 is not None:
            times = times[times < t1]
        times.sort()
        cuts = np.unique(times[batch_events::batch_events]).tolist()
        edges: list[int | None] = [t0, *cuts, t1]
        for lo, hi in zip(edges[:-1], edges[1:]):
            yield self._read(group, lo, hi)

    def replay_frame(self, chronicle: str, story: str, start: Any = None, end: Any = None) -> Any:
        """:meth:`replay` as a pandas DataFrame (needs pandas); ``time`` as UTC datetimes.

        With pyarrow installed, ``payload`` is an Arrow binary column built from the heap
        (``binary[pyarrow]``: no Python object per event; an element is ``bytes``); without,
        a column of ``bytes`` objects."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("replay_frame needs pandas: pip install pandas") from None
        events, heap = self.replay_raw(chronicle, story, start, end)
        try:
            import pyarrow as pa
        except ImportError:
            payload: Any = to_replay(events, heap)["payload"]
        else:
            bounds, data = packed(events, heap)
            arrow_type, offsets = (
                (pa.binary(), bounds.astype(np.int32)) if bounds[-1] < 1 << 31 else (pa.large_binary(), bounds)
            )
            column = pa.Array.from_buffers(arrow_type, len(events), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
            payload = pd.arrays.ArrowExtensionArray(column)
        return pd.DataFrame(
            {
                "time": pd.to_datetime(events["time"], unit="ns", utc=True),
                "client": events["client"],
                "seq": events["seq"],
                "payload": payload,
            }
        )

    def count(self, chronicle: str, story: str) -> int:
        return sum(r.n for r in self._rows(chronicle, story, None, None))

    def span(self, chronicle: str, story: str) -> tuple[int, int] | None:
        """(first, last) event time of a story, from the index alone; None when it has no events."""
        rows = self._rows(chronicle, story, None, None)
        if not rows:
            return None
        return min(r.t_min for r in rows), max(r.t_max for r in rows)


def open_store(path: str | os.PathLike[str], skip_damaged: bool = False) -> Store:
    """Open a store directory for reading (raises StoreError if it is not one).

    A damaged story in a segment raises DamagedSegment when it is read; with
    ``skip_damaged`` it is skipped with a DamagedSegment warning instead.
    """
    try:
        return Store(path, skip_damaged=skip_damaged)
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot open store {str(path)!r}: {exc}") from None
