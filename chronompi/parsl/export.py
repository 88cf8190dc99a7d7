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
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..store.reader import Store, open_store
from .encoding import EncodingError, decode_message
from .sink import DEFAULT_CHRONICLE, ParslMonitoringError

TABLES = ("workflow", "task", "try", "status", "resource", "node", "block")

#: Parsl's monitoring schema (parsl 2026.10.26, as SQLAlchemy creates it on SQLite); used when Parsl is not importable.
SCHEMA = """
CREATE TABLE workflow (
    run_id TEXT NOT NULL, workflow_name TEXT, workflow_version TEXT, time_began DATETIME NOT NULL,
    time_completed DATETIME, host TEXT NOT NULL, user TEXT NOT NULL, rundir TEXT NOT NULL,
    tasks_failed_count INTEGER NOT NULL, tasks_completed_count INTEGER NOT NULL, PRIMARY KEY (run_id));
CREATE TABLE task (
    task_id INTEGER NOT NULL, run_id TEXT NOT NULL, task_depends TEXT, task_func_name TEXT NOT NULL,
    task_memoize TEXT NOT NULL, task_hashsum TEXT, task_inputs TEXT, task_outputs TEXT, task_stdin TEXT,
    task_stdout TEXT, task_stderr TEXT, task_time_invoked DATETIME, task_time_returned DATETIME,
    task_fail_count INTEGER NOT NULL, task_fail_cost FLOAT NOT NULL, PRIMARY KEY (task_id, run_id));
CREATE INDEX ix_task_task_hashsum ON task (task_hashsum);
CREATE TABLE try (
    try_id INTEGER NOT NULL, task_id INTEGER NOT NULL, run_id TEXT NOT NULL, block_id TEXT, hostname TEXT,
    task_executor TEXT NOT NULL, task_try_time_launched DATETIME, task_try_time_running DATETIME,
    task_try_time_returned DATETIME, task_fail_history TEXT, task_joins TEXT,
    PRIMARY KEY (try_id, task_id, run_id));
CREATE TABLE node (
    id INTEGER NOT NULL, run_id TEXT NOT NULL, hostname TEXT NOT NULL, uid TEXT NOT NULL, block_id TEXT NOT NULL,
    cpu_count INTEGER NOT NULL, total_memory BIGINT NOT NULL, active BOOLEAN NOT NULL, worker_count INTEGER NOT NULL,
    python_v TEXT NOT NULL, timestamp DATETIME NOT NULL, last_heartbeat DATETIME NOT NULL, PRIMARY KEY (id));
CREATE TABLE block (
    run_id TEXT NOT NULL, executor_label TEXT NOT NULL, block_id TEXT NOT NULL, job_id TEXT,
    timestamp DATETIME NOT NULL, status TEXT NOT NULL, PRIMARY KEY (run_id, block_id, executor_label, timestamp));
CREATE TABLE status (
    task_id INTEGER NOT NULL, task_status_name TEXT NOT NULL, timestamp DATETIME NOT NULL, run_id TEXT NOT NULL,
    try_id INTEGER NOT NULL, PRIMARY KEY (task_id, run_id, task_status_name, timestamp),
    FOREIGN KEY(run_id) REFERENCES workflow (run_id));
CREATE TABLE resource (
    try_id INTEGER NOT NULL, task_id INTEGER NOT NULL, run_id TEXT NOT NULL, timestamp DATETIME NOT NULL,
    resource_monitoring_interval FLOAT, psutil_process_pid INTEGER, psutil_process_memory_percent FLOAT,
    psutil_process_children_count FLOAT, psutil_process_time_user FLOAT, psutil_process_time_system FLOAT,
    psutil_process_memory_virtual FLOAT, psutil_process_memory_resident FLOAT, psutil_process_disk_read FLOAT,
    psutil_process_disk_write FLOAT, psutil_process_status TEXT, psutil_cpu_num TEXT,
    psutil_process_num_ctx_switches_voluntary FLOAT, psutil_process_num_ctx_switches_involuntary FLOAT,
    PRIMARY KEY (try_id, task_id, run_id, timestamp), FOREIGN KEY(run_id) REFERENCES workflow (run_id));
"""

COLUMNS: dict[str, list[str]] = {
    "workflow": "run_id workflow_name workflow_version time_began time_completed host user rundir "
    "tasks_failed_count tasks_completed_count".split(),
    "task": "task_id run_id task_depends task_func_name task_memoize task_hashsum task_inputs task_outputs "
    "task_stdin task_stdout task_stderr task_time_invoked task_time_returned task_fail_count task_fail_cost".split(),
    "try": "try_id task_id run_id block_id hostname task_executor task_try_time_launched task_try_time_running "
    "task_try_time_returned task_fail_history task_joins".split(),
    "status": "task_id task_status_name timestamp run_id try_id".split(),
    "resource": "try_id task_id run_id timestamp resource_monitoring_interval psutil_process_pid "
    "psutil_process_memory_percent psutil_process_children_count psutil_process_time_user "
    "psutil_process_time_system psutil_process_memory_virtual psutil_process_memory_resident "
    "psutil_process_disk_read psutil_process_disk_write psutil_process_status psutil_cpu_num "
    "psutil_process_num_ctx_switches_voluntary psutil_process_num_ctx_switches_involuntary".split(),
    "node": "id run_id hostname uid block_id cpu_count total_memory active worker_count python_v timestamp "
    "last_heartbeat".split(),
    "block": "run_id executor_label block_id job_id timestamp status".split(),
}
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "workflow": ("run_id",),
    "task": ("task_id", "run_id"),
    "try": ("try_id", "task_id", "run_id"),
    "status": ("task_id", "run_id", "task_status_name", "timestamp"),
    "resource": ("try_id", "task_id", "run_id", "timestamp"),
    "node": ("id",),
    "block": ("run_id", "block_id", "executor_label", "timestamp"),
}
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

    def _update(self, table: str, columns: list[str], msg: dict[str, Any]) -> None:
        key = tuple(msg.get(k) for k in PRIMARY_KEYS[table])
        row = self.rows[table].get(key)
        if row is not None:  # like SQL UPDATE ... WHERE pk: no row, no effect; absent values become NULL
            for c in columns:
                row[c] = msg.get(c)

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

    def table(self, name: str) -> list[dict[str, Any]]:
        return list(self.rows[name].values())


def _sql_value(v: Any) -> Any:
    """A value as SQLAlchemy's SQLite dialect stores it (for the sqlite3 fallback)."""
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, bool):
        return int(v)
    if v is None or isinstance(v, (int, float, str, bytes)):
        return v
    return str(v)


def _parsl_metadata() -> Any:
    try:
        from parsl.monitoring.db_manager import Database
    except Exception:  # noqa: BLE001 - Parsl or SQLAlchemy missing: use the copy
        return None
    return Database.Base.metadata


def write_sqlite(rb: Rebuild, db_path: str | os.PathLike[str], use_parsl_schema: bool = True) -> dict[str, int]:
    """Write the rebuilt tables into a new SQLite file; returns rows per table."""
    path = Path(db_path)
    if path.exists():
        raise ParslMonitoringError(f"{path} exists; remove it or choose another output file")
    meta = _parsl_metadata() if use_parsl_schema else None
    written = {t: len(rb.rows[t]) for t in TABLES}
    if meta is not None:
        import sqlalchemy as sa

        eng = sa.create_engine(f"sqlite:///{path}")
        try:
            meta.create_all(eng)
            with eng.begin() as conn:
                for t in TABLES:
                    rows = rb.table(t)
                    if rows:
                        conn.execute(meta.tables[t].insert(), rows)
        finally:
            eng.dispose()
        return written
    con = sqlite3.connect(path)
    try:
        con.executescript(SCHEMA)
        for t in TABLES:
            cols = COLUMNS[t]
            sql = f'INSERT INTO "{t}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})'
            con.executemany(sql, [[_sql_value(r[c]) for c in cols] for r in rb.table(t)])
        con.commit()
    finally:
        con.close()
    return written


def export_parsl(
    store: str | os.PathLike[str] | Store,
    db_path: str | os.PathLike[str],
    chronicle: str = DEFAULT_CHRONICLE,
    use_parsl_schema: bool = True,
) -> Rebuild:
    """Rebuild Parsl's monitoring database from ``store`` into a new SQLite file ``db_path``."""
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
        write_sqlite(rb, db_path, use_parsl_schema)
        return rb
    finally:
        if not isinstance(store, Store):
            st.close()


def main_export_parsl(argv: list[str] | None = None) -> int:
    """``chronompi export parsl STORE monitoring.db [--chronicle parsl]``."""
    p = argparse.ArgumentParser(
        prog="chronompi export parsl",
        description="Rebuild Parsl's monitoring SQLite database (for parsl-visualize) from a chronompi store.",
    )
    p.add_argument("store", help="the chronompi store directory")
    p.add_argument("db", help="the SQLite file to create (must not exist)")
    p.add_argument("--chronicle", default=DEFAULT_CHRONICLE, help="chronicle the hub recorded into (default: parsl)")
    p.add_argument("--no-parsl-schema", action="store_true", help="use chronompi's copy of Parsl's schema")
    args = p.parse_args(argv)
    from ..errors import ChronoError

    try:
        rb = export_parsl(args.store, args.db, args.chronicle, use_parsl_schema=not args.no_parsl_schema)
    except (ChronoError, KeyError) as exc:
        print(f"chronompi export parsl: {exc}", file=sys.stderr)
        return 1
    tables = ", ".join(f"{t} {len(rb.rows[t])}" for t in TABLES)
    print(f"{args.db}: {tables} rows from {sum(rb.counts.values())} messages")
    if rb.duplicates:
        print(f"skipped rows with a repeated primary key: {rb.duplicates}", file=sys.stderr)
    return 0
