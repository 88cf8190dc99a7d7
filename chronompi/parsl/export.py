"""Rebuild Parsl's monitoring SQLite database from the chronicle a :class:`ChronompiHub` recorded.

The result has the tables and columns ``parsl.monitoring.db_manager`` creates
(workflow, task, try, status, resource, node, block), made from Parsl's own
SQLAlchemy schema when Parsl and SQLAlchemy are importable, else from a copy
of it (``SCHEMA``, checked against Parsl's by the tests), so ``parsl-visualize``
and ``parsl.monitoring.queries.pandas`` work on it unchanged.

Rows are derived exactly as Parsl's ``DatabaseManager`` derives them, message
by message in recording order (the merge of every story of the chronicle by
``(time, client, seq)``): WORKFLOW_INFO inserts (start) or updates (end) a
workflow row; each TASK_INFO updates the workflow counters, inserts or updates
the task and try rows and inserts a status row; WORKER_TASK_INFO adds
``running``/``running_ended`` status rows and the try's running time, block and
host (deferred, as Parsl does, until the try row exists); NODE_INFO,
BLOCK_INFO (a list of rows per message) and RESOURCE_INFO insert rows.
Differences from Parsl's manager, on purpose: no message is lost to its
batching or to a failed batch insert (a row whose primary key repeats an
earlier one is skipped and counted), and a workflow without an end message
gets ``time_completed`` = the time of its last recorded message (Parsl uses
the time its manager shut down).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..store.reader import Store, open_store
from .encoding import EncodingError, decode_message
from .extract import Change, Extractor, make_extractor
from .schema import COLUMNS, PRIMARY_KEYS, SCHEMA, TABLES  # noqa: F401 - SCHEMA: public here since version 1
from .sink import DEFAULT_CHRONICLE, ParslMonitoringError

# the columns Parsl's DatabaseManager updates, per kind of update
_WORKFLOW_END = ["run_id", "tasks_failed_count", "tasks_completed_count", "time_completed"]
_WORKFLOW_COUNTS = ["run_id", "tasks_failed_count", "tasks_completed_count"]
_TASK_UPDATE = [
    "task_time_invoked",
    "task_time_returned",
    "run_id",
    "task_id",
    "task_fail_count",
    "task_fail_cost",
    "task_hashsum",
    "task_inputs",
]
_TRY_UPDATE = [
    "run_id",
    "task_id",
    "try_id",
    "task_fail_history",
    "task_try_time_launched",
    "task_try_time_returned",
    "task_joins",
]
_TRY_RUNNING = ["task_try_time_running", "run_id", "task_id", "try_id", "block_id", "hostname"]


def iter_messages(store: Store, chronicle: str = DEFAULT_CHRONICLE) -> Iterator[tuple[int, str, Any]]:
    """(time ns, type name, body) of every recorded message of ``chronicle``, in recording order."""
    times: list[np.ndarray] = []
    clients: list[np.ndarray] = []
    seqs: list[np.ndarray] = []
    payloads: list[Any] = []
    for story in store.stories(chronicle):
        ev = store.replay(chronicle, story)
        times.append(ev["time"])
        clients.append(ev["client"])
        seqs.append(ev["seq"])
        payloads.extend(ev["payload"].tolist())
    if not payloads:
        return
    t, c, q = np.concatenate(times), np.concatenate(clients), np.concatenate(seqs)
    for i in np.lexsort((q, c, t)).tolist():
        kind, body = decode_message(payloads[i])
        yield int(t[i]), kind, body


@dataclass
class Rebuild:
    """Parsl's DatabaseManager logic, applied message by message to in-memory tables."""

    rows: dict[str, dict[Any, dict[str, Any]]] = field(default_factory=lambda: {t: {} for t in TABLES})
    duplicates: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    _deferred: dict[tuple[Any, Any, Any], dict[str, Any]] = field(default_factory=dict)
    _ended: set[Any] = field(default_factory=set)
    _last_time: dict[Any, int] = field(default_factory=dict)
    _node_id: int = 0
    #: keys of rows inserted or updated since the last :meth:`take_changes`, per table
    dirty: dict[str, set[Any]] = field(default_factory=lambda: {t: set() for t in TABLES})

    def _insert(self, table: str, msg: dict[str, Any]) -> None:
        row = {c: msg.get(c) for c in COLUMNS[table]}
        if table == "node" and row["id"] is None:
            self._node_id += 1
            row["id"] = self._node_id
        key = tuple(row[k] for k in PRIMARY_KEYS[table])
        rows = self.rows[table]
        if key in rows:
            self.duplicates[table] = self.duplicates.get(table, 0) + 1
            return
        rows[key] = row
        self.dirty[table].add(key)

    def _update(self, table: str, columns: list[str], msg: dict[str, Any]) -> None:
        key = tuple(msg.get(k) for k in PRIMARY_KEYS[table])
        row = self.rows[table].get(key)
        if row is not None:  # like SQL UPDATE ... WHERE pk: no row, no effect; absent values become NULL
            for c in columns:
                row[c] = msg.get(c)
            self.dirty[table].add(key)

    def apply(self, time_ns: int, kind: str, msg: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "BLOCK_INFO":
            for m in msg if isinstance(msg, list) else [msg]:
                self._insert("block", m)
            return
        if not isinstance(msg, dict):
            self.skipped += 1
            return
        run = msg.get("run_id")
        self._last_time[run] = time_ns
        if kind == "WORKFLOW_INFO":
            if "python_version" in msg:
                self._insert("workflow", msg)
            else:
                self._update("workflow", _WORKFLOW_END, msg)
                self._ended.add(run)
        elif kind == "TASK_INFO":
            self._update("workflow", _WORKFLOW_COUNTS, msg)
            if (msg.get("task_id"), run) in self.rows["task"]:
                self._update("task", _TASK_UPDATE, msg)
            else:
                self._insert("task", msg)
            self._insert("status", msg)
            tkey = (msg.get("try_id"), msg.get("task_id"), run)
            if tkey in self.rows["try"]:
                self._update("try", _TRY_UPDATE, msg)
            else:
                self._insert("try", msg)
                deferred = self._deferred.pop(tkey, None)
                if deferred is not None:
                    self._running(deferred)
        elif kind == "WORKER_TASK_INFO":
            msg = dict(msg)
            if msg.get("first_msg"):
                msg["task_status_name"] = "running"
                msg["task_try_time_running"] = msg.get("timestamp")
                tkey = (msg.get("try_id"), msg.get("task_id"), run)
                if tkey in self.rows["try"]:
                    self._running(msg)
                else:
                    self._deferred[tkey] = msg
            elif msg.get("last_msg"):
                msg["task_status_name"] = "running_ended"
                self._insert("status", msg)
            else:
                self.skipped += 1
        elif kind == "NODE_INFO":
            self._insert("node", msg)
        elif kind == "RESOURCE_INFO":
            self._insert("resource", msg)
        else:
            self.skipped += 1

    def _running(self, msg: dict[str, Any]) -> None:
        self._insert("status", msg)
        self._update("try", _TRY_RUNNING, msg)

    def finish(self) -> None:
        """A workflow that never sent its end message ends at its last recorded message."""
        for (run,), row in self.rows["workflow"].items():
            if run not in self._ended and row.get("time_completed") is None and run in self._last_time:
                row["time_completed"] = _dt.datetime.fromtimestamp(self._last_time[run] / 1e9)
                self.dirty["workflow"].add((run,))

    def take_changes(self) -> dict[str, Change]:
        """The rows inserted or updated since the previous call, per table (the dirty marks are cleared)."""
        out = {t: Change(upsert=[dict(self.rows[t][k]) for k in keys]) for t, keys in self.dirty.items() if keys}
        self.dirty = {t: set() for t in TABLES}
        return out

    def table(self, name: str) -> list[dict[str, Any]]:
        return list(self.rows[name].values())


def diff(old: dict[str, dict[Any, dict[str, Any]]], new: dict[str, dict[Any, dict[str, Any]]]) -> dict[str, Change]:
    """What turns tables ``old`` into ``new``: rows to upsert and keys to delete, per table."""
    out = {}
    for t in TABLES:
        o, n = old.get(t, {}), new.get(t, {})
        ch = Change(upsert=[dict(r) for k, r in n.items() if o.get(k) != r], delete=[k for k in o if k not in n])
        if ch:
            out[t] = ch
    return out


def write_sqlite(rb: Rebuild, db_path: str | os.PathLike[str], use_parsl_schema: bool = True) -> dict[str, int]:
    """Write the rebuilt tables into a new SQLite file; returns rows per table."""
    write_tables(rb, make_extractor("sqlite", db_path, use_parsl_schema=use_parsl_schema))
    return {t: len(rb.rows[t]) for t in TABLES}


def write_tables(rb: Rebuild, extractor: Extractor) -> None:
    """Everything ``rb`` holds, in one step, into a new output of ``extractor``."""
    with extractor:
        extractor.write(rb.rows, {t: Change(upsert=rb.table(t)) for t in TABLES}, final=True)


def export_parsl(
    store: str | os.PathLike[str] | Store,
    db_path: str | os.PathLike[str],
    chronicle: str = DEFAULT_CHRONICLE,
    use_parsl_schema: bool = True,
    fmt: str = "sqlite",
) -> Rebuild:
    """Rebuild Parsl's monitoring database from ``store`` into a new SQLite file ``db_path``
    (``fmt="parquet"``: a new directory of Parquet files, one per table)."""
    st = store if isinstance(store, Store) else open_store(store)
    try:
        rb = Rebuild()
        try:
            for t, kind, body in iter_messages(st, chronicle):
                rb.apply(t, kind, body)
        except EncodingError as exc:
            raise ParslMonitoringError(
                f"chronicle {chronicle!r} holds a payload that is not a Parsl message: {exc}"
            ) from None
        rb.finish()
        options = {"use_parsl_schema": use_parsl_schema} if fmt == "sqlite" else {}
        write_tables(rb, make_extractor(fmt, db_path, **options))
        return rb
    finally:
        if not isinstance(store, Store):
            st.close()


def main_export_parsl(argv: list[str] | None = None) -> int:
    """``chronompi export parsl STORE OUT [--format sqlite|parquet] [--follow ...] [--chronicle parsl]``."""
    p = argparse.ArgumentParser(
        prog="chronompi export parsl",
        description="Rebuild Parsl's monitoring database (SQLite, for parsl-visualize; or Parquet files) "
        "from a chronompi store, once or (--follow) live while the workflow runs.",
    )
    p.add_argument("store", help="the chronompi store directory (with --follow it may not exist yet)")
    p.add_argument("db", help="the SQLite file (or, --format parquet, the directory) to create (must not exist)")
    p.add_argument("--chronicle", default=DEFAULT_CHRONICLE, help="chronicle the hub recorded into (default: parsl)")
    p.add_argument("--no-parsl-schema", action="store_true", help="use chronompi's copy of Parsl's schema")
    p.add_argument("--format", default="sqlite", choices=["sqlite", "parquet"], help="output format (sqlite)")
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep the output current while the job records: stop when its run ends, after --until-idle, or Ctrl-C",
    )
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="--follow: poll every S seconds (1)")
    p.add_argument(
        "--hold", type=float, default=None, metavar="S", help="--follow: apply events S seconds after reading them"
    )
    p.add_argument("--until-idle", type=float, default=None, metavar="S", help="--follow: stop after S s idle")
    p.add_argument(
        "--new-run",
        action="store_true",
        help="--follow: wait for a run that has not ended yet (the store holds finished runs, the job is starting)",
    )
    args = p.parse_args(argv)
    from ..errors import ChronoError

    options = {"use_parsl_schema": not args.no_parsl_schema} if args.format == "sqlite" else {}
    try:
        if args.follow:
            return _follow(args, options)
        rb = export_parsl(args.store, args.db, args.chronicle, not args.no_parsl_schema, fmt=args.format)
    except (ChronoError, KeyError) as exc:
        print(f"chronompi export parsl: {exc}", file=sys.stderr)
        return 1
    tables = ", ".join(f"{t} {len(rb.rows[t])}" for t in TABLES)
    print(f"{args.db}: {tables} rows from {sum(rb.counts.values())} messages")
    if rb.duplicates:
        print(f"skipped rows with a repeated primary key: {rb.duplicates}", file=sys.stderr)
    return 0


def _follow(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from .follow import Follower

    if args.format == "sqlite":
        options["wal"] = True  # parsl-visualize reads while we write
    fol = Follower(
        args.store,
        make_extractor(args.format, args.db, **options),
        args.chronicle,
        interval_s=args.interval,
        hold_s=args.hold,
        until_idle_s=args.until_idle,
        new_run=args.new_run,
    )
    fol.extractor.open()
    print(f"following {args.store} into {args.db} (every {args.interval:g} s; Ctrl-C stops)", flush=True)
    try:
        st = fol.run()
    finally:
        fol.close()
    tables = ", ".join(f"{t} {len(fol.rb.rows[t])}" for t in TABLES)
    print(
        f"{args.db}: {tables} rows from {st.messages} messages; stopped: {st.stopped}; {st.polls} polls, "
        f"{st.steps} steps, {st.reorders} re-derivations; lag message -> output: median {st.lag(0.5):.2f} s, "
        f"max {st.lag(1.0):.2f} s",
        flush=True,
    )
    if fol.rb.duplicates:
        print(f"skipped rows with a repeated primary key: {fol.rb.duplicates}", file=sys.stderr)
    return 0
