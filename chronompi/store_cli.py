"""The store tools of the ``chronompi`` command: ls, replay, stats, export, fsck.

Each ``cmd_*`` takes the command's argv and returns an exit status; ``chronompi.cli.main``
turns any error into one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from .errors import ChronoError, DamagedSegment


def one_line(msg: str) -> str:
    return " ".join(str(msg).split())


class UsageError(ChronoError, ValueError):
    """Bad command-line input (printed as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line (UsageError) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _nonneg_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return n


def _pos_int(text: str) -> int:
    n = _nonneg_int(text)
    if n == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _parser(cmd: str, description: str) -> _Parser:
    p = _Parser(prog=f"chronompi {cmd}", description=description)
    p.add_argument("store", help="the store directory")
    return p


def _add_reading(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-damaged",
        action="store_true",
        help="read past segments that cannot be opened (warn on stderr) instead of stopping with an error",
    )


def _add_plain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain", action="store_true", help="tab-separated text even on a terminal")


def _add_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", help="first time, inclusive: ns since the epoch or ISO-8601 (no zone = UTC)")
    p.add_argument("--end", help="end time, exclusive: ns since the epoch or ISO-8601")
    p.add_argument("--limit", type=_nonneg_int, default=None, help="stop after N events")
    p.add_argument(
        "--batch-events", type=_pos_int, default=1 << 16, help="events read per batch (memory bound; default 65536)"
    )


SKIPPING = "skipping unreadable segment "


@contextlib.contextmanager
def _reading(store: str, skip_damaged: bool, cmd: str) -> Iterator[Any]:
    """Open ``store``; a damaged segment stops the command with one line naming it and the fsck to run
    (an unreadable file's DamagedSegment warning made an error) unless ``skip_damaged``."""
    from .store import open_store

    with warnings.catch_warnings():
        if skip_damaged:

            def show(
                message: Any, category: Any, filename: Any, lineno: Any, file: Any = None, line: Any = None
            ) -> None:
                print(f"chronompi {cmd}: warning: {one_line(str(message))}", file=sys.stderr)

            warnings.showwarning = show
            warnings.filterwarnings("always", category=DamagedSegment)
        else:
            warnings.filterwarnings("error", category=DamagedSegment)
        with open_store(store, skip_damaged=skip_damaged) as st:
            yield st


def _range(a: argparse.Namespace) -> tuple[int | None, int | None]:
    from .export import iso_ns, parse_time

    t0, t1 = parse_time(a.start, "--start"), parse_time(a.end, "--end")
    if t0 is not None and t1 is not None and t0 > t1:
        raise UsageError(f"--start {iso_ns(t0)} is after --end {iso_ns(t1)}; give --start <= --end")
    return t0, t1


def _names(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return (shown + f", ... ({len(names)} in all)") if len(names) > limit else (shown or "none")


def _check_story(st: Any, chronicle: str, story: str) -> None:
    """A one-line error naming what the store does have, before anything is written."""
    from .names import check_name

    check_name(chronicle, "chronicle")
    check_name(story, "story")
    chronicles = st.chronicles()
    if chronicle not in chronicles:
        raise UsageError(f"no chronicle {chronicle!r} in store {str(st.path)!r} (chronicles: {_names(chronicles)})")
    stories = st.stories(chronicle)
    if story not in stories:
        raise UsageError(f"no story {story!r} in chronicle {chronicle!r} (stories: {_names(stories)})")


def _human(a: argparse.Namespace) -> bool:
    """Rich tables on a terminal (not a dumb one: a batch job's TERM=dumb gets the plain rows)."""
    from .report import stdout_is_terminal

    return not getattr(a, "plain", False) and stdout_is_terminal()


Column = tuple[str, str]  # (title, format spec: "" text, "d" integer, ".3f" float ...)


def _cell(v: Any, spec: str, human: bool) -> str:
    if v is None:
        return "-"
    if spec and isinstance(v, (int, float)):
        return format(v, ("," + spec) if human else spec)
    return str(v)


def _tables(sections: Sequence[tuple[str, Sequence[Column], Sequence[Sequence[Any]]]], human: bool) -> None:
    """Print tables: rich on a terminal; else each as a header line plus tab-separated rows, blank line between."""
    if human:
        from rich import box
        from rich.console import Console
        from rich.table import Table

        console = Console(file=sys.stdout, highlight=False, markup=False)
        for title, cols, rows in sections:
            cells = [[_cell(v, s, True) for v, (_, s) in zip(r, cols)] for r in rows]
            widths = [max([len(name)] + [len(r[j]) for r in cells]) for j, (name, _) in enumerate(cols)]
            t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
            for (name, spec), w in zip(cols, widths):  # never squeeze a cell: wrap the line instead
                t.add_column(name, justify="right" if spec else "left", no_wrap=True, min_width=w)
            for r in cells:
                t.add_row(*r)
            need = sum(widths) + 3 * len(widths) + 4
            wide = (
                console
                if need <= console.width
                else Console(file=sys.stdout, highlight=False, markup=False, width=need)
            )
            wide.print(t, crop=False)
        return
    out = sys.stdout
    for i, (_, cols, rows) in enumerate(sections):
        lines = ["\n"] if i else []
        lines.append("\t".join(name for name, _ in cols) + "\n")
        lines.extend("\t".join(_cell(v, s, False) for v, (_, s) in zip(r, cols)) + "\n" for r in rows)
        out.write("".join(lines))
    out.flush()


def _iso(t: Any) -> str | None:
    from .export import iso_ns

    return iso_ns(int(t)) if isinstance(t, int) else None


RUN_COLUMNS: list[Column] = [("run", ""), ("status", ""), ("start", ""), ("end", ""), ("ranks", "d"), ("hosts", "")]


def _run_row(r: dict[str, Any]) -> list[Any]:
    hosts = r.get("hosts")
    return [
        r.get("run"),
        r.get("status"),
        _iso(r.get("start")),
        _iso(r.get("end")),
        r.get("ranks"),
        ",".join(map(str, hosts)) if isinstance(hosts, list) else hosts,
    ]


def cmd_ls(argv: Sequence[str]) -> int:
    p = _parser("ls", "chronicles, stories, event counts and time spans of a store; its runs")
    _add_plain(p)
    _add_reading(p)
    a = p.parse_args(argv)
    with _reading(a.store, a.skip_damaged, "ls") as st:
        stories: list[list[Any]] = []
        for c in st.chronicles():
            for s in st.stories(c):
                span = st.span(c, s)
                first, last = span if span is not None else (None, None)
                stories.append([c, s, st.count(c, s), _iso(first), _iso(last)])
        runs = [_run_row(r) for r in st.runs()]
    _tables(
        [
            (
                f"{a.store}: stories",
                [("chronicle", ""), ("story", ""), ("events", "d"), ("first", ""), ("last", "")],
                stories,
            ),
            (f"{a.store}: runs", RUN_COLUMNS, runs),
        ],
        _human(a),
    )
    return 0


def cmd_replay(argv: Sequence[str]) -> int:
    from .export import FORMATS_REPLAY, iso_ns, stream, text_writer

    p = _Parser(prog="chronompi replay", description="print the events of a story in total order (time, client, seq)")
    p.add_argument("store", help="the store directory")
    p.add_argument("chronicle")
    p.add_argument("story")
    p.add_argument(
        "--format",
        choices=FORMATS_REPLAY,
        default="text",
        help="text: TIME_ISO CLIENT SEQ PAYLOAD, tab-separated (default); jsonl; csv with a header",
    )
    _add_range(p)
    _add_reading(p)
    a = p.parse_args(argv)
    t0, t1 = _range(a)
    with _reading(a.store, a.skip_damaged, "replay") as st:
        _check_story(st, a.chronicle, a.story)
        writer = text_writer(a.format, sys.stdout)
        written = stream(st, [(a.chronicle, a.story)], writer, t0, t1, a.limit, a.batch_events)
        writer.close()
        if not written and (t0, t1) != (None, None) and a.limit != 0:
            # an empty range is an answer, not an error (exit 0), but say so: a range copied from an example
            # or from another store returned nothing in silence
            span = st.span(a.chronicle, a.story)
            where = f"it spans {iso_ns(span[0])} to {iso_ns(span[1])}" if span else "it has no events"
            given = f"[{'...' if t0 is None else iso_ns(t0)}, {'...' if t1 is None else iso_ns(t1)})"
            print(f"chronompi replay: no events of {a.chronicle}/{a.story} in {given}; {where}", file=sys.stderr)
    return 0


def cmd_export(argv: Sequence[str]) -> int:
    if argv and argv[0] == "parsl":  # chronompi export parsl STORE monitoring.db: Parsl's monitoring database
        from .parsl.export import main_export_parsl

        return main_export_parsl(list(argv[1:]))
    from .export import FORMATS_EXPORT, ParquetWriter, have_pyarrow, stream, temp_beside, text_writer

    p = _parser(
        "export", "write every event of a store (or of some chronicles / stories) as JSON lines, CSV or Parquet"
    )
    p.add_argument("--format", choices=FORMATS_EXPORT, default="jsonl", help="default: jsonl")
    p.add_argument("--output", "-o", default="-", help="file to write (default: stdout; parquet needs a file)")
    p.add_argument("--chronicle", action="append", default=None, help="only this chronicle (repeatable)")
    p.add_argument("--story", action="append", default=None, help="only stories of this name (repeatable)")
    _add_range(p)
    _add_reading(p)
    a = p.parse_args(argv)
    t0, t1 = _range(a)
    if a.format == "parquet":
        if a.output == "-":
            raise UsageError("--format parquet needs --output FILE (Parquet cannot be streamed to stdout)")
        if not have_pyarrow():
            raise UsageError("--format parquet needs pyarrow: pip install pyarrow")
    with _reading(a.store, a.skip_damaged, "export") as st:
        from .names import check_name

        for c in a.chronicle or []:
            check_name(c, "chronicle")
        for s in a.story or []:
            check_name(s, "story")
        have = st.chronicles()
        if a.chronicle:
            missing = [c for c in a.chronicle if c not in have]
            if missing:
                raise UsageError(f"no chronicle {missing[0]!r} in store {str(st.path)!r} (chronicles: {_names(have)})")
        chronicles = [c for c in have if not a.chronicle or c in a.chronicle]
        targets = [(c, s) for c in chronicles for s in st.stories(c) if not a.story or s in a.story]
        if a.story:
            found = {s for _, s in targets}
            missing = [s for s in a.story if s not in found]
            if missing:
                raise UsageError(f"no story {missing[0]!r} in chronicle(s) {_names(chronicles)}")
        if a.output == "-":
            writer = text_writer(a.format, sys.stdout)
            stream(st, targets, writer, t0, t1, a.limit, a.batch_events)
            writer.close()
            return 0
        out = Path(a.output)
        if out.is_dir() or not out.parent.is_dir():
            raise UsageError(
                f"cannot write {str(out)!r}: " + ("it is a directory" if out.is_dir() else "no such directory")
            )
        tmp = temp_beside(out)
        try:
            if a.format == "parquet":
                pw = ParquetWriter(tmp)
                try:
                    n = stream(st, targets, pw, t0, t1, a.limit, a.batch_events)
                finally:
                    pw.close()
            else:
                with open(tmp, "w", encoding="utf-8", newline="") as fh:
                    tw = text_writer(a.format, fh)
                    n = stream(st, targets, tw, t0, t1, a.limit, a.batch_events)
                    tw.close()
            os.replace(tmp, out)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    stories = f"{len(targets)} stor{'y' if len(targets) == 1 else 'ies'}"
    print(f"chronompi export: {n} events of {stories} written to {out} ({a.format})", file=sys.stderr)
    return 0


# -- stats ----------------------------------------------------------------------------------------------------------
@dataclass
class _StoryStats:
    events: int = 0
    bytes: int = 0
    first: int | None = None
    last: int | None = None
    segments: int = 0
    windows: int = 0
    late: int = 0
    runs: set[str] = field(default_factory=set)


@dataclass
class _RunStats:
    events: int = 0
    bytes: int = 0
    segments: int = 0


_SEGMENT_RUN = re.compile(r"r([0-9a-f]{16})-")


def scan(st: Any) -> tuple[dict[tuple[str, str], _StoryStats], dict[str, _RunStats]]:
    """Per story and per run totals from the windows indexes of every segment the reader would read.

    Counts only rows covered by the index (what a replay returns). Payload bytes of a
    story in a segment are where its last committed row ends: rows and payloads are
    appended in order. An unreadable segment is reported like the reader does (a warning).
    """
    import h5py
    import numpy as np

    from .store.format import fsck_hint, open_segment
    from .store.reader import index_rows

    stories: dict[tuple[str, str], _StoryStats] = {}
    runs: dict[str, _RunStats] = {}
    for path in st.segments():
        try:
            f = open_segment(path)
        except (OSError, ValueError) as exc:
            why = " ".join(str(exc).split())
            hint = fsck_hint(path, "move it to damaged/" if path.suffix != ".part" else "recover it")
            warnings.warn(DamagedSegment(f"unreadable segment {path} ({why})", path, hint), stacklevel=2)
            continue
        with f:
            m = _SEGMENT_RUN.match(path.name)
            if "run" in f.attrs:
                run = f"{int(f.attrs['run']):016x}"
            else:
                run = m.group(1) if m else "?"
            rs = runs.setdefault(run, _RunStats())
            rs.segments += 1
            for c in sorted(f.keys()):
                if not isinstance(f[c], h5py.Group):
                    continue
                for s in sorted(f[c].keys()):
                    try:  # the reader's checks: a damaged story is an error, or skipped with a warning
                        index_rows(f, f"{c}/{s}", None, None)
                    except DamagedSegment as exc:
                        st._skip(exc)
                        continue
                    g = f[c][s]
                    index = g["windows"][...]
                    ss = stories.setdefault((c, s), _StoryStats())
                    n = int(index["n_rows"].sum()) if len(index) else 0
                    if not n:  # a segment opened after the story's last write still lists it (SWMR)
                        continue
                    ss.segments += 1
                    ss.runs.add(run)
                    ends = index["first_row"].astype(np.int64) + index["n_rows"].astype(np.int64)
                    last = g["events"][int(ends.max()) - 1]
                    nbytes = int(last["offset"]) + int(last["length"])
                    ss.events += n
                    ss.bytes += nbytes
                    ss.windows += len(index)
                    if index.dtype.names is not None and "late" in index.dtype.names:
                        ss.late += int(np.count_nonzero(index["late"]))
                    t_min, t_max = int(index["t_min"].min()), int(index["t_max"].max())
                    ss.first = t_min if ss.first is None else min(ss.first, t_min)
                    ss.last = t_max if ss.last is None else max(ss.last, t_max)
                    rs.events += n
                    rs.bytes += nbytes
    return stories, runs


def epoch_rows(st: Any, records: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """One row per membership epoch of every run that changed its membership: when, why, members,
    how long the change took, and the run's events stamped inside the epoch (and their rate)."""
    import numpy as np

    from .protocol import client_id

    rows: list[list[Any]] = []
    for r in records:
        epochs = r.get("epochs") or []
        if len(epochs) < 2:
            continue
        run_id = int(str(r["run"]), 16)
        ids = np.array([client_id(run_id, k) for k in range(int(r.get("ranks") or 0))], np.uint64)
        starts = np.array([e["start"] if e.get("start") is not None else -(2**63) for e in epochs], np.int64)
        counts = np.zeros(len(epochs), np.int64)
        first = last = None
        for c in st.chronicles():
            for s in st.stories(c):
                for ev, _heap in st.iter_replay_raw(c, s):
                    t = ev["time"][np.isin(ev["client"], ids)]
                    if len(t):
                        counts += np.bincount(np.searchsorted(starts, t, side="right") - 1, minlength=len(epochs))
                        first = int(t[0]) if first is None else min(first, int(t[0]))
                        last = int(t[-1]) if last is None else max(last, int(t[-1]))
        for i, e in enumerate(epochs):
            begin = e.get("start") if e.get("start") is not None else first
            end = epochs[i + 1]["start"] if i + 1 < len(epochs) else last
            span = (end - begin) / 1e9 if isinstance(begin, int) and isinstance(end, int) and end > begin else None
            rows.append(
                [r["run"], e["epoch"], _iso(e.get("start")), len(e["keepers"]), len(e["graphers"]),
                 e.get("reason", ""), e.get("change_s"), int(counts[i]), counts[i] / span if span else None]
            )  # fmt: skip
    return rows


def cmd_stats(argv: Sequence[str]) -> int:
    p = _parser("stats", "per story: events, bytes, time span, rate, segments, runs, late runs; per run totals")
    _add_plain(p)
    _add_reading(p)
    a = p.parse_args(argv)
    with _reading(a.store, a.skip_damaged, "stats") as st:
        per_story, per_run = scan(st)
        records = st.runs()
        epochs = epoch_rows(st, records)
    story_rows: list[list[Any]] = []
    for (c, s), ss in sorted(per_story.items()):
        span_s = (ss.last - ss.first) / 1e9 if ss.first is not None and ss.last is not None else None
        rate = ss.events / span_s if span_s else None
        story_rows.append(
            [c, s, ss.events, ss.bytes, _iso(ss.first), _iso(ss.last), span_s, rate, ss.segments, len(ss.runs),
             ss.windows, ss.late]
        )  # fmt: skip
    run_rows: list[list[Any]] = []
    seen: set[str] = set()
    for r in records:
        rid = str(r.get("run"))
        seen.add(rid)
        found = per_run.get(rid, _RunStats())
        start, end = r.get("start"), r.get("end")
        duration = (end - start) / 1e9 if isinstance(start, int) and isinstance(end, int) else None
        run_rows.append(
            [rid, r.get("status"), _iso(start), duration, r.get("ranks"), r.get("events_stored"), found.events,
             found.bytes, found.segments, r.get("dropped")]
        )  # fmt: skip
    for rid, found in sorted(per_run.items()):
        if rid not in seen:  # segments without a run record
            run_rows.append([rid, "no record", None, None, None, None, found.events, found.bytes, found.segments, None])
    _tables(
        [
            (
                f"{a.store}: stories",
                [("chronicle", ""), ("story", ""), ("events", "d"), ("bytes", "d"), ("first", ""), ("last", ""),
                 ("span_s", ".3f"), ("events_per_s", ".1f"), ("segments", "d"), ("runs", "d"), ("windows", "d"),
                 ("late", "d")],
                story_rows,
            ),
            (
                f"{a.store}: runs",
                [("run", ""), ("status", ""), ("start", ""), ("duration_s", ".3f"), ("ranks", "d"),
                 ("events", "d"), ("in_store", "d"), ("bytes", "d"), ("segments", "d"), ("dropped", "d")],
                run_rows,
            ),
        ]
        + (
            [
                (
                    f"{a.store}: membership epochs",
                    [("run", ""), ("epoch", "d"), ("start", ""), ("keepers", "d"), ("graphers", "d"), ("reason", ""),
                     ("change_s", ".3f"), ("events", "d"), ("events_per_s", ".1f")],
                    epochs,
                )
            ]
            if epochs
            else []
        ),
        _human(a),
    )  # fmt: skip
    return 0


# -- fsck -----------------------------------------------------------------------------------------------------------
def cmd_fsck(argv: Sequence[str]) -> int:
    p = _parser("fsck", "check a store and repair what a crash can leave behind (exit 1 when problems remain)")
    p.add_argument("--dry-run", action="store_true", help="only report: change nothing")
    p.add_argument(
        "--job-ended",
        action="store_true",
        help="the job that wrote the store has ended (crashed, killed, cancelled): repair its files now; without "
        "it, files and run records changed in the last 60 s are left alone, since their job may be running",
    )
    a = p.parse_args(argv)
    try:
        from .store.fsck import fsck
    except ImportError as exc:
        raise ChronoError(f"fsck is not available in this chronompi ({exc})") from None
    rep = fsck(a.store, repair=not a.dry_run, live_s=0.0 if a.job_ended else 60.0)
    out = sys.stdout
    for line in rep.repaired:
        out.write(f"repaired: {one_line(line)}\n")
    for line in rep.problems:
        out.write(f"problem: {one_line(line)}\n")
    verdict = "ok" if rep.ok else ("problems found (dry run: nothing changed)" if a.dry_run else "problems remain")
    events = getattr(rep, "events", None)
    counted = f", {events} events" if isinstance(events, int) else ""
    lost = getattr(rep, "quarantined", None)
    if lost:  # events of damaged runs taken out of the store, by reason
        counted += f", {sum(lost.values())} quarantined ({'; '.join(f'{n} {why}' for why, n in sorted(lost.items()))})"
    out.write(
        f"{a.store}: {rep.segments} segments{counted}, {len(rep.repaired)} repaired, {len(rep.problems)} problems: "
        f"{verdict}\n"
    )
    out.flush()
    return 0 if rep.ok else 1


# -- entry point ----------------------------------------------------------------------------------------------------
