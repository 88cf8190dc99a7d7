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

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .format import (
    SEGMENTS,
    check_store,
    open_segment,
    part_files,
    read_runs,
    space_margin,
    write_atomic,
    write_run,
)
from .salvage import StoryPlan, check_story, plan_segment, plan_story, segment_image

__all__ = ["fsck", "FsckReport", "StoryPlan", "check_story", "plan_segment", "plan_story", "segment_image"]

log = logging.getLogger(__name__)

DAMAGED = "damaged"
_DAMAGE = (KeyError, OSError, ValueError, TypeError, RuntimeError)  # what h5py raises on a broken file


@dataclass
class FsckReport:
    """What fsck found and did. ``segments`` and ``events``: the closed segments and the
    events in them that the store holds after the repair (a dry run: would hold);
    ``quarantined``: events of damaged runs taken out (a dry run: would be), by reason."""

    problems: list[str] = field(default_factory=list)  # found and not repaired, or data lost
    repaired: list[str] = field(default_factory=list)
    segments: int = 0
    events: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems


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
    held_data: bool = False  # a quarantined file that held committed events (never "ok")

    @property
    def events(self) -> int:
        return sum(sp.events for sp in self.stories)

    @property
    def lost(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for sp in self.stories:
            out.update(sp.lost)
        return out


@dataclass
class Plan:
    """Everything fsck would do; ``problems`` it cannot do anything about (left for later)."""

    leftovers: list[Path] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pending_runs: set[str] = field(default_factory=set)  # runs with parts left alone: not marked crashed


def _records(root: Path) -> dict[str, dict[str, object]]:
    return {str(r.get("run")): r for r in read_runs(root)}


def plan(root: Path, live_s: float = 60.0) -> Plan:
    """Decide what fsck does to the store at ``root``, reading it only."""
    pl = Plan()
    records = _records(root)
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
            src = open_segment(part)
        except _DAMAGE as exc:  # not even a superblock: a job killed before the part's first flush
            pl.actions.append(Action("quarantine", part, why=f"unreadable partial segment ({_why(exc)})"))
            continue
        try:
            with src:
                stories = plan_segment(src, partial=True, record=records.get(run))
                pl.actions.append(Action("recover", part, final, stories))
        except _DAMAGE as exc:  # it opened, so it had been written: what it held is lost
            why = f"damaged partial segment ({_why(exc)})"
            pl.actions.append(Action("quarantine", part, why=why, held_data=True))
    for p in sorted(seg.glob("*.h5")):
        try:
            with open_segment(p) as f:
                stories = plan_segment(f, partial=False, record=records.get(p.name[1:17]))
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
        lost = [f"{sp.key}: {p}" for sp in a.stories for p in sp.problems if not sp.lost]
        extra = f" (without {'; '.join(lost)})" if lost else ""
        if repair:
            return [f"recovered {a.events} committed events of {a.path.name} into {a.target.name}{extra}"]
        return [f"partial segment {a.path} (recoverable: {a.events} committed events into {a.target.name}){extra}"]
    out = []
    for sp in a.stories:
        if sp.lost:  # the quarantine itself is a problem line of its own (_lost_lines)
            verb = "rewritten with" if repair else "a repair rewrites it with"
            out.append(f"{a.path.name}:{sp.key}: {verb} its {sp.events} verified events")
            continue
        for p in sp.problems:
            if repair:
                out.append(f"{a.path.name}:{sp.key}: {p} (index rebuilt, {sp.events} events kept)")
            else:
                out.append(f"{a.path.name}:{sp.key}: {p} (a repair rebuilds the index and keeps {sp.events} events)")
    return out


def _lost_lines(a: Action, repair: bool) -> list[str]:
    """Problem lines for the events of damaged runs an action quarantines (they are data lost)."""
    out = []
    for sp in a.stories:
        if not sp.lost:
            continue
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(sp.lost.items()))
        where = (
            f"the original is in {DAMAGED}/{a.path.name}" if repair else f"a repair moves the original to {DAMAGED}/"
        )
        verb = "quarantined" if repair else "would quarantine"
        out.append(
            f"{a.path.name}:{sp.key}: {verb} {sp.quarantined} events of damaged runs ({why}), "
            f"{'kept' if repair else 'keeps'} {sp.events} verified events; {where}"
        )
    return out


def _carry_out(a: Action, root: Path) -> None:
    """Do one action; raises OSError (the store as it was) when it cannot."""
    if a.kind == "drop-part":
        a.path.unlink()
    elif a.kind == "quarantine":
        _quarantine(root, a.path)
    elif a.kind in ("recover", "rewrite"):
        assert a.target is not None
        record = _records(root).get(a.path.name[1:17])
        try:  # planned again, with the data this time (the plan of the whole store keeps none in memory)
            with open_segment(a.path) as src:
                stories = plan_segment(src, partial=a.kind == "recover", record=record, data=True)
                image = segment_image(src, stories)
        except OSError:
            raise
        except _DAMAGE as exc:  # h5py's other errors of a file that broke between plan and repair
            raise OSError(f"{a.path} cannot be read ({_why(exc)})") from None
        if any(sp.lost for sp in stories):  # the original, damage and all, is kept aside for a post-mortem
            (root / DAMAGED).mkdir(exist_ok=True)
            kept = root / DAMAGED / a.path.name
            write_atomic(kept, a.path.read_bytes(), space_margin(a.path.stat().st_size))
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
        for sp in a.stories:
            rep.quarantined.update(sp.lost)
        if not repair:
            rep.problems.extend(_describe(a, repair=False))
            rep.problems.extend(_lost_lines(a, repair=False))
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
        rep.problems.extend(_lost_lines(a, repair=True))  # data lost is never "ok", though repaired
        if a.kind == "quarantine" and (a.path.suffix == ".h5" or a.held_data):  # it held committed events
            rep.problems.append(f"{a.path.name}: its events are lost to the store (the file is in {DAMAGED}/)")
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
