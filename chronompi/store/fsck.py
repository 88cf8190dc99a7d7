"""``chronompi fsck``: check a store and repair what a crash can leave behind.

What it looks at, and what repairing does:

- leftover temporary files (``*.tmp-<pid>`` of an interrupted move or record
  write): removed;
- partial segments (``*.h5.part``) of runs that did not end, in the store or in
  a staging directory visible from here: the committed windows (those in the
  windows index) are copied into a closed segment in the store, then the part
  is removed; a part whose closed segment is already in the store is removed;
  a part modified in the last ``live_s`` seconds is left alone (its job may be
  running);
- closed segments: every story's index must cover its rows exactly once, in
  sorted runs, with payloads inside the heap; a segment whose index is damaged
  gets it rebuilt from the events; a segment that cannot be read at all is moved
  to ``STORE/damaged/``;
- runs left ``running`` whose parts are all recovered are marked ``crashed``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..codec import EVENT
from ..merge import ordered_steps
from .format import SEGMENTS, WINDOW, check_store, open_segment, read_runs, write_run

DAMAGED = "damaged"


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)  # found and not repaired
    repaired: list[str] = field(default_factory=list)
    segments: int = 0
    events: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _story_keys(f: h5py.File) -> list[str]:
    return [f"{c}/{s}" for c in f for s in f[c] if isinstance(f[c][s], h5py.Group)]


def check_story(g: h5py.Group) -> list[str]:
    """Problems of one story group of a segment (empty list: sound)."""
    out = []
    for name in ("events", "payload", "windows"):
        if name not in g:
            return [f"missing dataset {name!r}"]
    ev, pl, wi = g["events"], g["payload"], g["windows"]
    if ev.dtype != EVENT or wi.dtype.names is None or "first_row" not in wi.dtype.names:
        return ["datasets have the wrong types"]
    index = wi[...]
    events = ev[...]
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
    if len(events) and np.any(events["offset"] + events["length"] > pl.shape[0]):
        out.append("payload offsets point past the payload heap")
    if np.any(covered > 1):
        out.append("index rows overlap")
    if np.any(covered == 0):
        out.append(f"{int(np.sum(covered == 0))} event rows are not covered by the index")
    return out


def _sorted_runs(events: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of rows in strict (time, client, seq) order: (first row, length)."""
    if not len(events):
        return []
    cuts = np.concatenate(([0], np.flatnonzero(~ordered_steps(events)) + 1, [len(events)]))
    return [(int(a), int(b - a)) for a, b in zip(cuts[:-1], cuts[1:])]


def rewrite(src: h5py.File, dst_path: Path, trust_index: bool = True) -> int:
    """Write a clean closed segment holding what ``src`` committed; returns its event count.

    With ``trust_index`` only rows covered by the windows index are copied (a
    partial segment: rows past the index may be half written); otherwise the index
    is rebuilt from the sorted runs of the events (a closed segment whose index broke).
    """
    tmp = dst_path.with_name(dst_path.name + f".tmp-{os.getpid()}")
    total = 0
    with h5py.File(tmp, "w", libver="latest") as out:
        for k, v in src.attrs.items():
            out.attrs[k] = v
        out.attrs["recovered"] = time.time_ns()
        for key in _story_keys(src):
            g = src[key]
            if "events" not in g or "payload" not in g:
                continue
            events = g["events"][...]
            if trust_index and "windows" in g:
                index = g["windows"][...]
            else:
                runs = _sorted_runs(events)
                index = np.zeros(len(runs), WINDOW)
                for i, (a, n) in enumerate(runs):
                    index[i] = (-1, a, n, events["time"][a], events["time"][a + n - 1], 0, 0)
            heap_size = g["payload"].shape[0]
            new_ev, new_idx, pieces = [], [], []
            row = off = 0
            for w in index:
                a, n = int(w["first_row"]), int(w["n_rows"])
                run = events[a : a + n].copy()
                if len(run) != n or (n and int(run["offset"][-1]) + int(run["length"][-1]) > heap_size):
                    continue  # not fully there: not committed
                b0 = int(run["offset"][0]) if n else 0
                b1 = int(run["offset"][-1]) + int(run["length"][-1]) if n else 0
                pieces.append(g["payload"][b0:b1] if b1 > b0 else np.empty(0, np.uint8))
                run["offset"] = run["offset"] - b0 + off
                w2 = w.copy()
                w2["first_row"] = row
                new_ev.append(run)
                new_idx.append(w2)
                row += n
                off += b1 - b0
            grp = out.require_group(key)
            ev_all = np.concatenate(new_ev) if new_ev else np.empty(0, EVENT)
            grp.create_dataset("events", data=ev_all, maxshape=(None,), chunks=True)
            heap = np.concatenate(pieces) if pieces else np.empty(0, np.uint8)
            grp.create_dataset("payload", data=heap, maxshape=(None,), chunks=True)
            idx = np.array(new_idx, WINDOW) if new_idx else np.empty(0, WINDOW)
            grp.create_dataset("windows", data=idx, maxshape=(None,), chunks=True)
            total += len(ev_all)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dst_path)
    return total


def _quarantine(root: Path, path: Path) -> str:
    """Move a file no reader can use out of the way, into ``STORE/damaged/``; returns what was done."""
    (root / DAMAGED).mkdir(exist_ok=True)
    os.replace(path, root / DAMAGED / path.name)
    return f"{path.name} to {DAMAGED}/"


def _part_files(root: Path) -> list[Path]:
    parts = sorted((root / SEGMENTS).glob("*.h5.part"))
    for run in read_runs(root):
        if run.get("status") == "complete":
            continue
        for g in run.get("graphers", []):  # type: ignore[attr-defined]
            stage = Path(g.get("staging", ""))
            if stage.is_dir() and stage != root / SEGMENTS:
                parts.extend(sorted(stage.glob("*.h5.part")))
    return list(dict.fromkeys(parts))


def fsck(path: str | os.PathLike[str], repair: bool = True, live_s: float = 60.0) -> FsckReport:
    """Check the store at ``path``; with ``repair``, fix what can be fixed (see the module doc)."""
    root = check_store(path)
    rep = FsckReport()
    seg = root / SEGMENTS
    for tmp in sorted(list(seg.glob("*.tmp-*")) + list((root / "runs").glob("*.tmp-*"))):
        if repair:
            tmp.unlink()
            rep.repaired.append(f"removed leftover temporary file {tmp.name}")
        else:
            rep.problems.append(f"leftover temporary file {tmp.name}")
    pending_runs: set[str] = set()
    for part in _part_files(root):
        run = part.name[1:17]
        final = seg / part.name[: -len(".part")]
        age = time.time() - part.stat().st_mtime
        if age < live_s:
            rep.problems.append(f"{part} was modified {age:.0f} s ago: its job may be running; left alone")
            pending_runs.add(run)
            continue
        if final.exists():
            if repair:
                part.unlink()
                rep.repaired.append(f"removed {part.name}: its closed segment is in the store")
            else:
                rep.problems.append(f"{part.name} duplicates closed segment {final.name}")
            continue
        try:
            src = open_segment(part)
        except (OSError, ValueError) as exc:
            if repair:
                rep.repaired.append(f"moved unreadable partial segment {_quarantine(root, part)} ({exc})")
            else:
                rep.problems.append(f"partial segment {part} is unreadable ({exc}); nothing to recover")
                pending_runs.add(run)
            continue
        with src:
            if repair:
                n = rewrite(src, final, trust_index=True)
                rep.repaired.append(f"recovered {n} committed events of {part.name} into {final.name}")
        if repair:
            part.unlink()
        else:
            rep.problems.append(f"partial segment {part} (recoverable)")
            pending_runs.add(run)
    for p in sorted(seg.glob("*.h5")):
        rep.segments += 1
        try:
            f = open_segment(p)
        except (OSError, ValueError) as exc:
            if repair:
                rep.repaired.append(f"moved unreadable segment {_quarantine(root, p)} ({exc})")
            else:
                rep.problems.append(f"segment {p.name} is unreadable: {exc}")
            continue
        broken: list[str] = []
        with f:
            for key in _story_keys(f):
                for problem in check_story(f[key]):
                    broken.append(f"{p.name}:{key}: {problem}")
                if "windows" in f[key]:
                    rep.events += int(f[key]["windows"]["n_rows"].sum()) if f[key]["windows"].shape[0] else 0
            if broken and repair:
                n = rewrite(f, p.with_name(p.name + ".fixed"), trust_index=False)
        if broken:
            if repair:
                os.replace(p.with_name(p.name + ".fixed"), p)
                rep.repaired.extend(f"{b} (index rebuilt, {n} events kept)" for b in broken)
            else:
                rep.problems.extend(broken)
    for record in read_runs(root):
        rid = str(record.get("run"))
        if record.get("status") != "running" or rid in pending_runs:
            continue
        beat = (root / "runs" / f"r{rid}.json").stat().st_mtime
        if time.time() - beat < live_s:  # the visor rewrites the record every few seconds while it lives
            rep.problems.append(f"run {rid} is running (its record is {time.time() - beat:.0f} s old); left alone")
            continue
        if repair:
            write_run(root, {**record, "status": "crashed", "fsck": time.time_ns()})
            rep.repaired.append(f"run {rid} did not end: marked crashed")
        else:
            rep.problems.append(f"run {rid} did not end (status running)")
    return rep
