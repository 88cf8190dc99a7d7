"""Parsl's monitoring database schema: tables, columns, primary keys and column types.

A copy of what ``parsl.monitoring.db_manager`` creates with SQLAlchemy on SQLite
(parsl 2026.10.26), used when Parsl or SQLAlchemy is not importable and by the
extractors for column types; the tests check it against Parsl's, column by column.
"""

from __future__ import annotations

import re

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


def _column_types() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for table, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\);", SCHEMA, re.S):
        cols = {}
        for name, typ in re.findall(r"(\w+) (TEXT|INTEGER|BIGINT|FLOAT|DATETIME|BOOLEAN)\b", body):
            cols[name] = typ
        out[table] = cols
    return out


#: SQL type of every column: TEXT, INTEGER, BIGINT, FLOAT, DATETIME or BOOLEAN.
COLUMN_TYPES: dict[str, dict[str, str]] = _column_types()
assert all(list(COLUMN_TYPES[t]) == COLUMNS[t] for t in TABLES), "SCHEMA and COLUMNS disagree"
