"""What fsck keeps of one story of one segment: every sorted run that checks out, nothing that does not.

A run is kept when its index row and its data pass their XXH3 hashes (schema 2) and every row of
it can be data (:func:`~chronompi.store.integrity.implausible`); the other runs are quarantined,
whole, with the reason. Where index rows are damaged but the events they covered are not, the
uncovered rows are taken as one run again when their hash equals the data hash of a damaged row.
A schema-1 segment (no hashes) keeps the runs of its index, or of an index rebuilt from the
events' sorted runs, that pass the plausibility checks. Data HDF5 refuses to return (a
Fletcher32 mismatch in a segment written with the filter) is read chunk by chunk, the refused
chunks raw, and judged by the hashes like the rest.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..codec import EVENT
from ..merge import ordered_steps
from .format import WINDOW, WINDOW_V1
from .integrity import RunClients, data_sum, has_sums, implausible, row_sum, run_clients, run_problem

_DAMAGE = (KeyError, OSError, ValueError, TypeError, RuntimeError)  # what h5py raises on a broken file


@dataclass
class StoryPlan:
    """What of one story a repaired segment keeps: index rows (``first_row`` into the source's
    events) and the payload byte range of each; what it quarantines (``lost`` events, by reason)."""

    key: str
    index: np.ndarray  # WINDOW or WINDOW_V1
    b0: np.ndarray  # int64, first payload byte of each row's run in the source heap
    b1: np.ndarray  # int64, end of it
    problems: list[str] = field(default_factory=list)  # what was wrong (empty: kept as it is)
    lost: Counter[str] = field(default_factory=Counter)  # events quarantined, by reason
    data: tuple[np.ndarray, np.ndarray] | None = None  # (events, heap) as read, when asked for

    @property
    def events(self) -> int:
        return int(self.index["n_rows"].sum()) if len(self.index) else 0

    @property
    def bytes(self) -> int:
        return int((self.b1 - self.b0).sum()) if len(self.index) else 0

    @property
    def quarantined(self) -> int:
        return sum(self.lost.values())


def read_all(ds: h5py.Dataset) -> tuple[np.ndarray, bool]:
    """A 1-D dataset whole, and whether HDF5 refused part of it. Refused chunks (a Fletcher32
    mismatch, an unreadable chunk) are taken raw when they can be, else left zero."""
    try:
        return (ds[...] if ds.shape[0] else np.empty(0, ds.dtype)), False
    except _DAMAGE:
        pass
    n = ds.shape[0]
    out = np.zeros(n, ds.dtype)
    step = ds.chunks[0] if ds.chunks else n
    raw_ok = ds.compression is None  # raw chunk bytes are the data (+ 4 bytes of Fletcher32 sum)
    for a in range(0, n, step):
        b = min(n, a + step)
        try:
            out[a:b] = ds[a:b]
            continue
        except _DAMAGE:
            pass
        if raw_ok:
            try:
                _mask, raw = ds.id.read_direct_chunk((a,))
                out[a:b] = np.frombuffer(raw[: step * ds.dtype.itemsize], ds.dtype)[: b - a]
            except Exception:  # noqa: BLE001 - a chunk HDF5 cannot even locate: zeros, judged below
                pass
    return out, True


def _dataset_problems(g: h5py.Group) -> list[str]:
    for name in ("events", "payload", "windows"):
        if not isinstance(g.get(name), h5py.Dataset):
            return [f"missing dataset {name!r}"]
    if g["events"].dtype != EVENT or g["windows"].dtype not in (WINDOW, WINDOW_V1) or g["payload"].dtype != np.uint8:
        return ["datasets have the wrong types"]
    return []


def _sorted_runs(events: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of rows in strict (time, client, seq) order: (first row, length)."""
    if not len(events):
        return []
    cuts = np.concatenate(([0], np.flatnonzero(~ordered_steps(events)) + 1, [len(events)]))
    return [(int(a), int(b - a)) for a, b in zip(cuts[:-1], cuts[1:])]


class _Keeper:
    """Collects the runs a story keeps (one index row each) and what it loses."""

    def __init__(self, key: str, dtype: np.dtype) -> None:
        self.sp = StoryPlan(key, np.empty(0, dtype), np.empty(0, np.int64), np.empty(0, np.int64))
        self.rows: list[np.ndarray] = []
        self.spans: list[tuple[int, int]] = []

    def keep(self, row: np.ndarray, lo: int, hi: int) -> None:
        self.rows.append(row.reshape(1))
        self.spans.append((lo, hi))

    def lose(self, n: int, why: str) -> None:
        if n:
            self.sp.lost[why] += n

    def plan(self) -> StoryPlan:
        sp = self.sp
        if self.rows:
            sp.index = np.concatenate(self.rows)
            sp.b0 = np.array([s[0] for s in self.spans], np.int64)
            sp.b1 = np.array([s[1] for s in self.spans], np.int64)
        return sp


def _payload_span(run: np.ndarray) -> tuple[int, int]:
    if not len(run):
        return 0, 0
    return int(run["offset"].min()), int((run["offset"] + run["length"].astype(np.uint64)).max())


def _plausible_run(k: _Keeper, row: np.ndarray, run: np.ndarray, heap_size: int, who: RunClients) -> None:
    """Keep a schema-1 (or rebuilt) run when every row of it can be data, else quarantine it."""
    lo, hi = _payload_span(run)
    t_min, t_max = (int(run["time"][0]), int(run["time"][-1])) if len(run) else (0, 0)
    problem = "payload past the heap" if hi > heap_size else None
    problem = problem or implausible(run, int(lo), int(hi), t_min, t_max, who)
    if problem is None and len(run) and (t_min != int(row["t_min"]) or t_max != int(row["t_max"])):
        problem = "index time span differs from its events"
    if problem is None and len(run) > 1 and not bool(np.all(ordered_steps(run))):
        problem = "run not in total order"
    if problem is None:
        k.keep(row, lo, hi)
    else:
        k.lose(len(run), problem)


def _rebuilt(events: np.ndarray) -> np.ndarray:
    runs = _sorted_runs(events)
    index = np.zeros(len(runs), WINDOW_V1)
    for i, (a, n) in enumerate(runs):
        index[i] = (-1, a, n, events["time"][a], events["time"][a + n - 1], 0, 0)
    return index


def _v1_problems(index: np.ndarray, n_events: int) -> list[str]:
    covered = np.zeros(n_events, np.int64)
    out = []
    for w in index:
        a, n = int(w["first_row"]), int(w["n_rows"])
        if a + n > n_events:
            out.append(f"index row for window {int(w['window'])} points past the events ({a}+{n} > {n_events})")
            continue
        covered[a : a + n] += 1
    if np.any(covered > 1):
        out.append("index rows overlap")
    if np.any(covered == 0):
        out.append(f"{int(np.sum(covered == 0))} event rows are not covered by the index")
    return out


def _plan_v2(
    k: _Keeper, index: np.ndarray, events: np.ndarray, heap: np.ndarray, partial: bool, who: RunClients
) -> None:
    """Schema 2: every run against its hashes; uncovered rows back by a damaged row's data hash."""
    n_ev, covered = len(events), np.zeros(len(events), bool)
    orphans: dict[int, int] = {}  # data hash of a damaged index row -> its window
    claimed = 0  # how far the index (damaged rows too) says the committed rows go
    for i in range(len(index)):
        w = index[i : i + 1]
        a, n = int(w["first_row"][0]), int(w["n_rows"][0])
        h0, nb = int(w["heap0"][0]), int(w["heap_bytes"][0])
        claimed = max(claimed, min(a + n, n_ev))
        if row_sum(w) != int(w["row_checksum"][0]):
            orphans[int(w["checksum"][0])] = int(w["window"][0])
            k.sp.problems.append(f"index row {i} fails its checksum")
            continue
        if a + n > n_ev or h0 + nb > len(heap):
            k.lose(max(0, min(a + n, n_ev) - a), "index row points past the data (truncated)")
            continue
        if n and covered[a : a + n].any():
            k.sp.problems.append(f"index row {i} covers rows of another")
            continue
        run = events[a : a + n]
        problem = run_problem(w, run, heap[h0 : h0 + nb])
        problem = problem or implausible(run, int(h0), int(h0 + nb), int(w["t_min"][0]), int(w["t_max"][0]), who)
        covered[a : a + n] = True
        if problem is None:
            k.keep(w, h0, h0 + nb)
        else:
            k.lose(n, problem)
    end = n_ev if not partial else claimed  # rows past a part's index were never committed
    gaps = np.flatnonzero(np.diff(np.concatenate(([0], (~covered[:end]).astype(np.int8), [0]))))
    for a, b in zip(gaps[0::2], gaps[1::2]):
        run = events[a:b]
        lo, hi = _payload_span(run)
        if orphans and hi <= len(heap) and data_sum(run, (heap[lo:hi],)) in orphans:
            row = np.zeros(1, WINDOW)
            values = (orphans[data_sum(run, (heap[lo:hi],))], a, b - a, run["time"][0], run["time"][-1], lo, hi - lo)
            for name, value in zip(("window", "first_row", "n_rows", "t_min", "t_max", "heap0", "heap_bytes"), values):
                row[name] = value
            if implausible(run, int(lo), int(hi), int(run["time"][0]), int(run["time"][-1]), who) is None:
                k.keep(row, lo, hi)  # the damaged row's own data hash vouches for these rows
                continue
        k.lose(int(b - a), "index row damaged" if orphans else "rows no index row covers")


def plan_story(g: h5py.Group, key: str, partial: bool, who: RunClients | None = None, data: bool = False) -> StoryPlan:
    """What a repaired segment keeps of story ``key`` (see the module doc).

    A partial segment keeps only runs its windows index covers (rows past the index may be half
    written). ``data``: keep the events and heap as read in the plan (to write them)."""
    who = who if who is not None else run_clients(None, key)
    problems = _dataset_problems(g)
    usable = isinstance(g.get("events"), h5py.Dataset) and isinstance(g.get("payload"), h5py.Dataset)
    if not usable or g["events"].dtype != EVENT or g["payload"].dtype != np.uint8:
        sp = StoryPlan(key, np.empty(0, WINDOW), np.empty(0, np.int64), np.empty(0, np.int64), problems)
        n = g["events"].shape[0] if isinstance(g.get("events"), h5py.Dataset) else 0
        sp.lost["events or payload dataset missing or of the wrong type"] += n
        return sp
    events, ev_refused = read_all(g["events"])
    heap, heap_refused = read_all(g["payload"])
    index = None
    if not problems:
        try:
            index, wi_refused = read_all(g["windows"])
        except _DAMAGE as exc:
            problems = [f"unreadable windows index ({' '.join(str(exc).split())})"]
    if index is not None and has_sums(index.dtype):
        k = _Keeper(key, WINDOW)
        _plan_v2(k, index, events, heap, partial, who)
    elif index is not None:
        k = _Keeper(key, WINDOW_V1)
        found = _v1_problems(index, len(events)) + (["unreadable chunks"] if ev_refused or heap_refused else [])
        if found and not partial:  # a closed segment: rebuild the index from the events' sorted runs
            k.sp.problems.extend(found)
            index = _rebuilt(events)
        for w in index:
            a, n = int(w["first_row"]), int(w["n_rows"])
            if a + n <= len(events):
                _plausible_run(k, w, events[a : a + n], len(heap), who)
    else:
        k = _Keeper(key, WINDOW_V1)
        k.sp.problems.extend(problems)
        if not partial:  # no index at all: its runs again from the events (no hash left to check them)
            for w in _rebuilt(events):
                a, n = int(w["first_row"]), int(w["n_rows"])
                _plausible_run(k, w, events[a : a + n], len(heap), who)
        else:
            k.lose(len(events), "no usable windows index")
    sp = k.plan()
    if sp.lost and not sp.problems:
        sp.problems.append("damaged runs")
    if data:
        sp.data = (events, heap)
    return sp


def check_story(g: h5py.Group) -> list[str]:
    """Problems of one story group of a closed segment (empty list: sound)."""
    sp = plan_story(g, g.name.strip("/"), partial=False)
    return sp.problems + [f"{n} events quarantined: {why}" for why, n in sp.lost.items()]


def story_keys(f: h5py.File) -> list[str]:
    return [f"{c}/{s}" for c in f if isinstance(f[c], h5py.Group) for s in f[c] if isinstance(f[c][s], h5py.Group)]


def plan_segment(
    f: h5py.File, partial: bool, record: dict[str, object] | None = None, data: bool = False
) -> list[StoryPlan]:
    """Plans for every story of a segment (see :func:`plan_story`); ``record``: its run's record."""
    return [plan_story(f[key], key, partial, run_clients(record, key), data) for key in story_keys(f)]


def segment_image(src: h5py.File, stories: list[StoryPlan]) -> memoryview:
    """The bytes of a clean closed schema-2 segment holding what ``stories`` keep, built in memory
    (the stories must carry their ``data``); every kept run gets its hashes anew."""
    from .format import SCHEMA_VERSION

    buf = io.BytesIO()
    with h5py.File(buf, "w", libver=("v110", "v110")) as out:  # h5dump 1.10 reads it
        for k, v in src.attrs.items():
            out.attrs[k] = v
        out.attrs["schema"] = SCHEMA_VERSION
        out.attrs["recovered"] = time.time_ns()
        for sp in stories:
            assert sp.data is not None, "segment_image needs plans made with data=True"
            events, heap = sp.data
            grp = out.require_group(sp.key)
            ev_out = np.empty(sp.events, EVENT)
            pl_out = np.empty(sp.bytes, np.uint8)
            index = np.zeros(len(sp.index), WINDOW)
            row = off = 0
            for i, w in enumerate(sp.index):
                a, n = int(w["first_row"]), int(w["n_rows"])
                lo, hi = int(sp.b0[i]), int(sp.b1[i])
                run = ev_out[row : row + n]
                run[...] = events[a : a + n]
                run["offset"] = run["offset"] - lo + off
                pl_out[off : off + hi - lo] = heap[lo:hi]
                for name in ("window", "t_min", "t_max", "late", "committed"):
                    index[name][i] = w[name]
                index["first_row"][i], index["n_rows"][i] = row, n
                index["heap0"][i], index["heap_bytes"][i] = off, hi - lo
                index["checksum"][i] = data_sum(run, (pl_out[off : off + hi - lo],))
                index["row_checksum"][i] = row_sum(index[i : i + 1])
                row += n
                off += hi - lo
            for name, arr, chunk in (("events", ev_out, 16384), ("payload", pl_out, 1 << 20), ("windows", index, 256)):
                grp.create_dataset(name, data=arr, maxshape=(None,), chunks=(max(1, min(len(arr), chunk)),))
    return buf.getbuffer()
