"""``chronompi fsck``: check a store and repair what a crash can leave behind.

What it looks at, and what repairing does:

- leftover temporary files (``*.tmp-<pid>`` of an interrupted move, repair or
  record write): removed;
- partial segments (``*.h5.part``) of runs that did not end, in the store or in
  a staging directory visible from here (each file once, however its directory
  is spelled): the committed windows (those in the windows index) are copied
  into a closed segment in the store, then the part is removed; a part whose
  closed segment is already in the store is removed; a part modified in the
  last ``live_s`` seconds is left alone (its job may be running);
- closed segments: every story's index must cover its rows exactly once, in
  sorted runs, with payloads inside the heap; a story whose index is damaged
  gets it rebuilt from the events' sorted runs (the other stories keep theirs);
  a segment that cannot be read at all is moved to ``STORE/damaged/``;
- runs left ``running`` whose parts are all recovered are marked ``crashed``.

One plan, two uses: :func:`plan` decides every action and counts what the store
will hold after it; a dry run reports the plan, a repair carries it out, so both
report the same segments and events.

A repair never leaves a file half written and never loses what was there: a
repaired segment is built in memory (HDF5 never writes to a disk that can fill
up: it segfaults on ENOSPC), then written beside its target as ``*.tmp-<pid>``
after checking the free space, fsynced and renamed over it. A repair that fails
(full disk, I/O error) removes its temporary file, leaves the original as it was
and is reported as a problem naming the path.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..codec import EVENT
from ..merge import ordered_steps
from .format import (
    SEGMENTS,
    WINDOW,
    check_store,
    open_segment,
    part_files,
    read_runs,
    space_margin,
    write_atomic,
    write_run,
)

log = logging.getLogger(__name__)

DAMAGED = "damaged"
_DAMAGE = (KeyError, OSError, ValueError, TypeError, RuntimeError)  # what h5py raises on a broken file


@dataclass
class FsckReport:
    """What fsck found and did. ``segments`` and ``events``: the closed segments and the
    events in them that the store holds after the repair (a dry run: would hold)."""

    problems: list[str] = field(default_factory=list)  # found and not repaired
    repaired: list[str] = field(default_factory=list)
    segments: int = 0
    events: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _story_keys(f: h5py.File) -> list[str]:
    return [f"{c}/{s}" for c in f if isinstance(f[c], h5py.Group) for s in f[c] if isinstance(f[c][s], h5py.Group)]


def _dataset_problems(g: h5py.Group) -> list[str]:
    for name in ("events", "payload", "windows"):
        if not isinstance(g.get(name), h5py.Dataset):
            return [f"missing dataset {name!r}"]
    if g["events"].dtype != EVENT or g["windows"].dtype != WINDOW or g["payload"].dtype != np.uint8:
        return ["datasets have the wrong types"]
    return []


def _row_problems(index: np.ndarray, events: np.ndarray, heap_size: int) -> list[str]:
    out = []
    covered = np.zeros(len(events), np.int64)
    for w in index:
        a, n = int(w["first_row"]), int(w["n_rows"])
        if a + n > len(events):
            out.append(f"index row for window {int(w['window'])} points past the events ({a}+{n} > {len(events)})")
            continue
        covered[a : a + n] += 1
        run = events[a : a + n]
        if n and (run["time"][0] != w["t_min"] or run["time"][-1] != w["t_max"]):
            out.append(f"index row for window {int(w['window'])} has a wrong time span")
        keys = np.lexsort((run["seq"], run["client"], run["time"]))
        if n and not np.array_equal(keys, np.arange(n)):
            out.append(f"run of window {int(w['window'])} is not in total order")
    if len(events) and np.any(events["offset"] + events["length"] > heap_size):
        out.append("payload offsets point past the payload heap")
    if np.any(covered > 1):
        out.append("index rows overlap")
    if np.any(covered == 0):
        out.append(f"{int(np.sum(covered == 0))} event rows are not covered by the index")
    return out


def check_story(g: h5py.Group) -> list[str]:
    """Problems of one story group of a segment (empty list: sound)."""
    problems = _dataset_problems(g)
    if problems:
        return problems
    return _row_problems(g["windows"][...], g["events"][...], g["payload"].shape[0])


def _sorted_runs(events: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of rows in strict (time, client, seq) order: (first row, length)."""
    if not len(events):
        return []
    cuts = np.concatenate(([0], np.flatnonzero(~ordered_steps(events)) + 1, [len(events)]))
    return [(int(a), int(b - a)) for a, b in zip(cuts[:-1], cuts[1:])]


# -- planning -------------------------------------------------------------------------------------------------------
@dataclass
class StoryPlan:
    """What of one story a repaired segment keeps: index rows (``first_row`` into the source's
    events) and the payload byte range of each."""

    key: str
    index: np.ndarray  # WINDOW
    b0: np.ndarray  # int64, first payload byte of each row's run in the source heap
    b1: np.ndarray  # int64, end of it
    problems: list[str] = field(default_factory=list)  # what was wrong (empty: kept as it is)

    @property
    def events(self) -> int:
        return int(self.index["n_rows"].sum()) if len(self.index) else 0

    @property
    def bytes(self) -> int:
        return int((self.b1 - self.b0).sum()) if len(self.index) else 0


def _complete(key: str, index: np.ndarray, events: np.ndarray, heap_size: int) -> StoryPlan:
    """The rows of ``index`` whose events and payload bytes are all there (the others were
    not committed, or are damaged), with their payload ranges."""
    keep, b0, b1 = [], [], []
    for i, w in enumerate(index):
        a, n = int(w["first_row"]), int(w["n_rows"])
        if a + n > len(events):
            continue
        if n:  # the run's payload span (a grapher writes payloads as they came, not in event order)
            run = events[a : a + n]
            lo = int(run["offset"].min())
            hi = int((run["offset"] + run["length"]).max())
            if hi > heap_size or hi < lo:
                continue
        else:
            lo = hi = 0
        keep.append(i)
        b0.append(lo)
        b1.append(hi)
    return StoryPlan(key, index[keep], np.array(b0, np.int64), np.array(b1, np.int64))


def _rebuilt_index(events: np.ndarray) -> np.ndarray:
    runs = _sorted_runs(events)
    index = np.zeros(len(runs), WINDOW)
    for i, (a, n) in enumerate(runs):
        index[i] = (-1, a, n, events["time"][a], events["time"][a + n - 1], 0, 0)
    return index


def plan_story(g: h5py.Group, key: str, partial: bool) -> StoryPlan:
    """What a repaired segment keeps of story ``key``.

    A partial segment keeps the rows its windows index covers that are fully there
    (rows past the index may be half written: without a usable index nothing is
    known to be committed). A closed segment keeps a sound story as it is and
    rebuilds a damaged index from the sorted runs of its events. Raises what h5py
    raises when the story's data cannot be read.
    """
    nothing = StoryPlan(key, np.empty(0, WINDOW), np.empty(0, np.int64), np.empty(0, np.int64))
    problems = _dataset_problems(g)
    usable = isinstance(g.get("events"), h5py.Dataset) and isinstance(g.get("payload"), h5py.Dataset)
    if not usable or g["events"].dtype != EVENT or g["payload"].dtype != np.uint8:
        nothing.problems = problems  # no events or no payloads: nothing to keep
        return nothing
    events, heap_size = g["events"][...], g["payload"].shape[0]
    index = g["windows"][...] if not problems else None
    if partial:
        if index is None:
            nothing.problems = problems
            return nothing
        return _complete(key, index, events, heap_size)  # rows past a part's index are expected
    if index is not None:
        problems = _row_problems(index, events, heap_size)
    kept = _rebuilt_index(events) if problems or index is None else index
    sp = _complete(key, kept, events, heap_size)
    sp.problems = problems
    return sp


def plan_segment(f: h5py.File, partial: bool) -> list[StoryPlan]:
    """Plans for every story of a segment (see :func:`plan_story`)."""
    return [plan_story(f[key], key, partial) for key in _story_keys(f)]


# -- writing --------------------------------------------------------------------------------------------------------
def segment_image(src: h5py.File, stories: list[StoryPlan]) -> memoryview:
    """The bytes of a clean closed segment holding what ``stories`` keep of ``src``, built in memory."""
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver=("v110", "v110")) as out:  # h5dump 1.10 reads it
        for k, v in src.attrs.items():
            out.attrs[k] = v
        out.attrs["recovered"] = time.time_ns()
        for sp in stories:
            g = src[sp.key]
            grp = out.require_group(sp.key)
            n_ev, n_b = sp.events, sp.bytes
            ev_out = grp.create_dataset(
                "events", shape=(n_ev,), maxshape=(None,), dtype=EVENT, chunks=(max(1, min(n_ev, 16384)),)
            )
            pl_out = grp.create_dataset(
                "payload", shape=(n_b,), maxshape=(None,), dtype=np.uint8, chunks=(max(1, min(n_b, 1 << 20)),)
            )
            index = sp.index.copy()
            row = off = 0
            for i, w in enumerate(sp.index):
                a, n = int(w["first_row"]), int(w["n_rows"])
                lo, hi = int(sp.b0[i]), int(sp.b1[i])
                if n:
                    run = g["events"][a : a + n]
                    run["offset"] = run["offset"] - lo + off
                    ev_out[row : row + n] = run
                if hi > lo:
                    pl_out[off : off + hi - lo] = g["payload"][lo:hi]
                index[i]["first_row"] = row
                row += n
                off += hi - lo
            grp.create_dataset("windows", data=index, maxshape=(None,), chunks=(max(1, min(len(index), 256)),))
    return buf.getbuffer()


def write_segment(src: h5py.File, stories: list[StoryPlan], dst: Path) -> int:
    """Write what ``stories`` keep of ``src`` as the closed segment ``dst`` (atomically, after a
    free-space check); returns its event count. Raises OSError when it cannot, leaving ``dst`` as it was."""
    image = segment_image(src, stories)
    write_atomic(dst, image, space_margin(len(image)))
    return sum(sp.events for sp in stories)


def _quarantine(root: Path, path: Path) -> str:
    """Move a file no reader can use out of the way, into ``STORE/damaged/``; returns what was done."""
    (root / DAMAGED).mkdir(exist_ok=True)
    os.replace(path, root / DAMAGED / path.name)
    return f"{path.name} to {DAMAGED}/"


def _why(exc: BaseException) -> str:
    """One line for an error: an OSError's own words (without its "[Errno n]" and repeated file name)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__


# -- the whole store ------------------------------------------------------------------------------------------------
@dataclass
class Action:
    """One thing fsck does (``kind``) to one file; ``stories`` for the kinds that write a segment."""

    kind: str  # recover | rewrite | keep | drop-part | quarantine
    path: Path
    target: Path | None = None
    stories: list[StoryPlan] = field(default_factory=list)
    why: str = ""

    @property
    def events(self) -> int:
        return sum(sp.events for sp in self.stories)


@dataclass
class Plan:
    """Everything fsck would do; ``problems`` it cannot do anything about (left for later)."""

    leftovers: list[Path] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pending_runs: set[str] = field(default_factory=set)  # runs with parts left alone: not marked crashed


def plan(root: Path, live_s: float = 60.0) -> Plan:
    """Decide what fsck does to the store at ``root``, reading it only."""
    pl = Plan()
    seg = root / SEGMENTS
    pl.leftovers = sorted(list(seg.glob("*.tmp-*")) + list((root / "runs").glob("*.tmp-*")))
    for part in part_files(root):
        run = part.name[1:17]
        final = seg / part.name[: -len(".part")]
        try:
            age = time.time() - part.stat().st_mtime
        except FileNotFoundError:  # closed by its job since it was listed
            continue
        if age < live_s:
            pl.problems.append(f"{part} was modified {age:.0f} s ago: its job may be running; left alone")
            pl.pending_runs.add(run)
            continue
        if final.exists():
            pl.actions.append(Action("drop-part", part, final))
            continue
        try:
            with open_segment(part) as src:
                pl.actions.append(Action("recover", part, final, plan_segment(src, partial=True)))
        except _DAMAGE as exc:
            pl.actions.append(Action("quarantine", part, why=f"unreadable partial segment ({_why(exc)})"))
    for p in sorted(seg.glob("*.h5")):
        try:
            with open_segment(p) as f:
                stories = plan_segment(f, partial=False)
        except _DAMAGE as exc:
            pl.actions.append(Action("quarantine", p, why=f"unreadable segment ({_why(exc)})"))
            continue
        kind = "rewrite" if any(sp.problems for sp in stories) else "keep"
        pl.actions.append(Action(kind, p, p, stories))
    return pl


def _describe(a: Action, repair: bool) -> list[str]:
    """Report lines of one action: what was done (repair) or what a repair would do (dry run)."""
    if a.kind == "drop-part":
        return [
            f"removed {a.path.name}: its closed segment is in the store"
            if repair
            else f"{a.path.name} duplicates closed segment {a.path.name[: -len('.part')]}"
        ]
    if a.kind == "quarantine":
        return [f"moved {a.why} {a.path.name} to {DAMAGED}/" if repair else f"{a.why}: {a.path}; would be moved aside"]
    if a.kind == "recover":
        assert a.target is not None
        lost = [f"{sp.key}: {p}" for sp in a.stories for p in sp.problems]
        extra = f" (without {'; '.join(lost)})" if lost else ""
        if repair:
            return [f"recovered {a.events} committed events of {a.path.name} into {a.target.name}{extra}"]
        return [f"partial segment {a.path} (recoverable: {a.events} committed events into {a.target.name}){extra}"]
    out = []
    for sp in a.stories:
        for p in sp.problems:
            if repair:
                out.append(f"{a.path.name}:{sp.key}: {p} (index rebuilt, {sp.events} events kept)")
            else:
                out.append(f"{a.path.name}:{sp.key}: {p} (a repair rebuilds the index and keeps {sp.events} events)")
    return out


def _carry_out(a: Action, root: Path) -> None:
    """Do one action; raises OSError (the store as it was) when it cannot."""
    if a.kind == "drop-part":
        a.path.unlink()
    elif a.kind == "quarantine":
        _quarantine(root, a.path)
    elif a.kind in ("recover", "rewrite"):
        assert a.target is not None
        try:
            with open_segment(a.path) as src:
                image = segment_image(src, a.stories)
        except OSError:
            raise
        except _DAMAGE as exc:  # h5py's other errors of a file that broke between plan and repair
            raise OSError(f"{a.path} cannot be read ({_why(exc)})") from None
        write_atomic(a.target, image, space_margin(len(image)))
        if a.kind == "recover":
            a.path.unlink()  # a crash before this: the next fsck finds the closed segment and drops the part


def fsck(path: str | os.PathLike[str], repair: bool = True, live_s: float = 60.0) -> FsckReport:
    """Check the store at ``path``; with ``repair``, fix what can be fixed (see the module doc)."""
    root = check_store(path)
    rep = FsckReport()
    pl = plan(root, live_s)
    rep.problems.extend(pl.problems)
    for tmp in pl.leftovers:
        if not repair:
            rep.problems.append(f"leftover temporary file {tmp.name}")
            continue
        try:
            tmp.unlink()
            rep.repaired.append(f"removed leftover temporary file {tmp.name}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            rep.problems.append(f"could not remove leftover temporary file {tmp}: {_why(exc)}")
    for a in pl.actions:
        run = a.path.name[1:17]
        writes = a.kind in ("keep", "recover", "rewrite")
        if a.kind == "keep":
            rep.segments += 1
            rep.events += a.events
            continue
        if not repair:
            rep.problems.extend(_describe(a, repair=False))
            if a.kind in ("recover", "quarantine") and a.path.suffix == ".part":
                pl.pending_runs.add(run)
            if writes:
                rep.segments += 1
                rep.events += a.events
            continue
        try:
            _carry_out(a, root)
        except OSError as exc:
            rep.problems.append(f"could not repair {a.path}: {_why(exc)}; it is left as it was")
            log.debug("fsck: could not repair %s: %s", a.path, exc)
            if a.path.suffix == ".part":
                pl.pending_runs.add(run)
            continue
        rep.repaired.extend(_describe(a, repair=True))
        if writes:
            rep.segments += 1
            rep.events += a.events
    for record in read_runs(root):
        rid = str(record.get("run"))
        if record.get("status") != "running" or rid in pl.pending_runs:
            continue
        beat = (root / "runs" / f"r{rid}.json").stat().st_mtime
        if time.time() - beat < live_s:  # the visor rewrites the record every few seconds while it lives
            rep.problems.append(f"run {rid} is running (its record is {time.time() - beat:.0f} s old); left alone")
            continue
        if not repair:
            rep.problems.append(f"run {rid} did not end (status running)")
            continue
        new = {**record, "status": "crashed", "fsck": time.time_ns()}
        try:
            write_run(root, new, space_margin=space_margin(0), fsync=True)
            rep.repaired.append(f"run {rid} did not end: marked crashed")
        except OSError as exc:
            rep.problems.append(f"could not mark run {rid} crashed: {_why(exc)}; its record is left as it was")
    return rep
