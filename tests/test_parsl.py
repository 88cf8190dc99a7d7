"""Parsl monitoring into chronompi: encoding, export logic, radio, and real workflows under mpirun.

The end-to-end tests run the same workflow (ThreadPoolExecutor and HighThroughputExecutor runs, retries=2,
apps failing on their first try and apps failing on every try) twice: under ``mpirun -n 4`` with
:class:`ChronompiHub` (then ``chronompi export parsl``), and without MPI with Parsl's own SQLite
monitoring; the two databases must hold the same workflow, task, try and status rows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import pickle
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

parsl = pytest.importorskip("parsl")
pytest.importorskip("sqlalchemy")  # Parsl's own SQLite monitoring (the reference) needs it

from conftest import APPS, mpirun  # noqa: E402
from parsl.monitoring.message_type import MessageType  # noqa: E402

from chronompi.errors import ChronoError  # noqa: E402
from chronompi.launch import mpi_env  # noqa: E402
from chronompi.parsl import EncodingError, decode_message, encode_message  # noqa: E402
from chronompi.parsl.encoding import decode_value, encode_value  # noqa: E402
from chronompi.parsl.export import COLUMNS, TABLES, Rebuild, main_export_parsl, write_sqlite  # noqa: E402

ALL_TYPES = {t.name for t in MessageType}


# -- encoding ---------------------------------------------------------------------------------------------------
def test_encoding_round_trips_what_parsl_sends() -> None:
    now = dt.datetime(2026, 11, 25, 7, 41, 2, 123456)
    body = {
        "run_id": "abc",
        "timestamp": now,
        "aware": now.replace(tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "day": now.date(),
        "clock": now.time(),
        "took": dt.timedelta(days=1, seconds=2, microseconds=3),
        "drain_time": float("inf"),
        "neg": float("-inf"),
        "blob": b"\x00\xffpickle-free",
        "state": MessageType.NODE_INFO,
        "pair": (1, "a"),
        "tags": {3, 1, 2},
        "by_int": {1: "one", (2, 3): "tuple key"},
        "$dollar": {"$datetime": "not a tag"},
        "nested": [{"a": [now, None, True, 1.5]}],
    }
    payload = encode_message("NODE_INFO", body, version=1)
    assert payload.isascii()
    doc = json.loads(payload)  # plain JSON, no NaN/Infinity literals
    assert doc["v"] == 1 and doc["type"] == "NODE_INFO"
    assert "$dict" in doc["msg"]  # a key starting with "$" makes the whole dict a list of pairs
    plain = json.loads(encode_message("TASK_INFO", {"timestamp": now, "n": 1}, version=1))["msg"]
    assert plain == {"timestamp": {"$datetime": "2026-11-25T07:41:02.123456"}, "n": 1}
    kind, back = decode_message(payload)
    assert kind == "NODE_INFO"
    assert back == body
    assert type(back["state"]) is MessageType and type(back["pair"]) is tuple and back["by_int"][(2, 3)] == "tuple key"
    assert math.isnan(decode_value(encode_value(float("nan"))))


def test_encoding_is_lossy_only_for_unknown_objects_and_never_unpickles() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 7>"

    enc = encode_value({"x": Thing()})
    assert enc == {
        "x": {
            "$repr": [
                f"{__name__}:test_encoding_is_lossy_only_for_unknown_objects_and_never_unpickles.<locals>.Thing",
                "<Thing 7>",
            ]
        }
    }
    assert decode_value(enc) == {"x": "<Thing 7>"}
    # an enum whose module is not imported decodes to its name instead of importing anything
    assert decode_value({"$enum": ["no_such_module_xyz:E", "RED", 1]}) == "RED"
    for bad in (
        b"\x80\x04K\x01.",
        b"[1, 2]",
        b'{"v": 99, "type": "X", "msg": 1}',
        b'{"v":1,"type":"X","msg":{"$nope":1}}',
    ):
        with pytest.raises(EncodingError) as ei:
            decode_message(bad)
        assert isinstance(ei.value, ChronoError)


# -- export logic ------------------------------------------------------------------------------------------------
def test_schema_copy_matches_parsls_schema(tmp_path: Path) -> None:
    from parsl.monitoring.db_manager import Database

    meta = Database.Base.metadata
    assert set(meta.tables) == set(TABLES)
    for t in TABLES:
        assert list(meta.tables[t].c.keys()) == COLUMNS[t], t
    # the sqlite3 fallback creates the same tables and columns as Parsl's SQLAlchemy schema
    write_sqlite(Rebuild(), tmp_path / "copy.db", use_parsl_schema=False)
    write_sqlite(Rebuild(), tmp_path / "parsl.db", use_parsl_schema=True)
    schemas = []
    for name in ("copy.db", "parsl.db"):
        con = sqlite3.connect(tmp_path / name)
        schemas.append(
            {t: [(r[1], r[2], r[3], r[5]) for r in con.execute(f'PRAGMA table_info("{t}")')] for t in TABLES}
        )
        con.close()
    assert schemas[0] == schemas[1]


def test_rebuild_defers_running_until_the_try_exists_and_updates_like_parsl() -> None:
    t = dt.datetime(2026, 1, 1)
    rb = Rebuild()
    start = {
        "run_id": "r",
        "python_version": "3.11",
        "time_began": t,
        "host": "h",
        "user": "u",
        "rundir": "d",
        "tasks_failed_count": 0,
        "tasks_completed_count": 0,
        "workflow_name": "w",
    }
    task = {
        "run_id": "r",
        "task_id": 0,
        "try_id": 0,
        "task_func_name": "f",
        "task_memoize": False,
        "task_fail_count": 0,
        "task_fail_cost": 0.0,
        "task_executor": "x",
        "tasks_failed_count": 0,
        "tasks_completed_count": 0,
    }
    worker = {
        "run_id": "r",
        "task_id": 0,
        "try_id": 0,
        "hostname": "node7",
        "block_id": "0",
        "first_msg": True,
        "last_msg": False,
        "timestamp": t + dt.timedelta(seconds=1),
    }
    rb.apply(1, "WORKFLOW_INFO", start)
    rb.apply(2, "WORKER_TASK_INFO", worker)  # before the try row exists: deferred, as Parsl does
    assert rb.table("status") == [] and rb.table("try") == []
    rb.apply(3, "TASK_INFO", {**task, "task_status_name": "launched", "timestamp": t})
    rb.apply(
        4,
        "TASK_INFO",
        {
            **task,
            "task_status_name": "exec_done",
            "timestamp": t + dt.timedelta(seconds=2),
            "tasks_completed_count": 1,
            "task_time_returned": t,
        },
    )
    rb.apply(5, "WORKER_TASK_INFO", {**worker, "first_msg": False, "last_msg": True})
    rb.apply(
        6, "WORKFLOW_INFO", {"run_id": "r", "tasks_failed_count": 0, "tasks_completed_count": 1, "time_completed": t}
    )
    (tr,) = rb.table("try")
    assert (tr["hostname"], tr["block_id"], tr["task_try_time_running"]) == ("node7", "0", worker["timestamp"])
    assert [s["task_status_name"] for s in rb.table("status")] == ["launched", "running", "exec_done", "running_ended"]
    (wf,) = rb.table("workflow")
    assert wf["tasks_completed_count"] == 1 and wf["time_completed"] == t
    (tk,) = rb.table("task")
    assert tk["task_time_returned"] == t
    rb.apply(7, "TASK_INFO", {**task, "task_status_name": "exec_done", "timestamp": t + dt.timedelta(seconds=2)})
    assert rb.duplicates == {"status": 1}  # a repeated primary key is skipped (Parsl would lose the whole batch)


# -- radio -------------------------------------------------------------------------------------------------------
SENT: list[object] = []


class _ListSender:
    def send(self, message: object) -> None:
        SENT.append(message)


class _ListRadio:
    """A stand-in fallback radio (module level, so it pickles by reference)."""

    def create_sender(self) -> _ListSender:
        return _ListSender()


def test_radio_config_pickles_and_falls_back_without_a_client() -> None:
    from chronompi.parsl import ChronompiRadio, RadioError
    from chronompi.parsl.radio import ChronompiRadioSender

    with pytest.raises(RadioError, match="no chronompi client") as ei:
        ChronompiRadio().create_sender()
    assert isinstance(ei.value, ChronoError)
    radio = pickle.loads(pickle.dumps(ChronompiRadio("mine", fallback=_ListRadio())))  # type: ignore[arg-type]
    assert radio.chronicle == "mine"
    sender = radio.create_sender()
    assert not isinstance(sender, ChronompiRadioSender)
    sender.send((MessageType.RESOURCE_INFO, {"x": 1}))
    assert SENT == [(MessageType.RESOURCE_INFO, {"x": 1})]


def test_hub_logging_endpoint_is_sqlite_and_never_overwrites_a_database_it_did_not_write(tmp_path: Path) -> None:
    from chronompi.parsl import ChronompiHub, ParslMonitoringError
    from chronompi.parsl.hub import database_path, written_here

    assert database_path("sqlite:///runinfo/monitoring.db") == Path("runinfo/monitoring.db")
    assert database_path("sqlite:////abs/monitoring.db") == Path("/abs/monitoring.db")
    for bad in ("postgresql://host/db", "sqlite:///", "monitoring.db"):
        with pytest.raises(ParslMonitoringError, match="SQLite files only"):
            database_path(bad)
    foreign = tmp_path / "monitoring.db"  # e.g. Parsl's own hub's, from an earlier run
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE workflow (run_id TEXT)")
    con.commit()
    con.close()
    assert not written_here(foreign)
    hub = ChronompiHub(store=tmp_path / "store", logging_endpoint=f"sqlite:///{foreign}")
    with pytest.raises(ParslMonitoringError, match="not written by chronompi"):
        hub.start(str(tmp_path / "run" / "000"), str(tmp_path / "run"), None)  # refused before any session starts
    assert not hub.monitoring_hub_active and hub.client is None
    con = sqlite3.connect(foreign)
    assert con.execute("SELECT name FROM sqlite_master").fetchall() == [("workflow",)]  # left as it was
    con.close()


# -- end to end --------------------------------------------------------------------------------------------------
XS = ("hello.txt-hello.txt", "None-")  # test_stdouterr's stream given as a file name, and not given
PARSL_OWN = [
    *(f"test_basic::test_row_counts_base[{c}]" for c in ("thread_config", "htex_config", "htex_filesystem_config")),
    "test_basic::test_row_counts_base[htex_udp_config]",
    *(f"test_app_names::test_app_name[{a}]" for a in ("regular_decorated_app", "for_decoration_later")),
    "test_app_names::test_app_name[decorated_closure]",
    "test_incomplete_futures::test_future_representation",
    "test_memoization_representation::test_hashsum",  # (Parsl's default database: RUN_DIR/monitoring.db)
    *(f"test_htex_init_blocks_vs_monitoring::test_row_counts[{s}]" for s in ("none", "simple", "htex_auto_scale")),
    # through pytest (caplog: no log record at ERROR or above); 4 of its 20, `parsl_own_tests.py DIR --all` runs all
    *(f"test_stdouterr::test_stdstream_to_monitoring[{s}-{x}]" for s in ("stdout", "stderr") for x in XS),
]
#: Parsl's tests that cannot pass against the hub, and what their failure shows: each waits for the log file that
#: Parsl's database-manager process makes for itself; the hub is no process of its own (docs/parsl.md)
PARSL_OWN_CANNOT_PASS = {
    "test_log_config::test_log_default_config": '"database_manager.log"',
    "test_log_config::test_log_json_config": '"database_manager.jsonlog"',
}


@pytest.mark.mpi
def test_parsls_own_monitoring_tests_pass_against_the_drop_in_hub(tmp_path: Path) -> None:
    """Parsl's own tests (its installed parsl/tests/test_monitoring: test_basic's row counts for the thread pool and
    HTEX with each radio, app names, incomplete futures, memoization hashsums, the block rows of an HTEX block
    under each scaling strategy, auto-scale included, and the stdout/stderr names, no error logged) run unchanged
    with ChronompiHub where they make MonitoringHub: they query the database the hub wrote through
    logging_endpoint, or where Parsl's hub writes it by default (tests/apps/parsl_own_tests.py; Parsl's conftest
    does not load under pytest 9, so the fixtures they use are given there: Parsl's own, over a directory of
    ours). test_log_config's two fail, for the documented reason."""
    r = run_plain([str(tmp_path)], tmp_path, 600, app="parsl_own_tests.py")
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    results = json.loads((tmp_path / "parsl-own.json").read_text())
    why = {k[4:]: results.pop(k) for k in list(results) if k.startswith("why ")}
    want = dict.fromkeys(PARSL_OWN, "PASS") | dict.fromkeys(PARSL_OWN_CANNOT_PASS, "FAIL")
    assert results == want, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    for name, file in PARSL_OWN_CANNOT_PASS.items():  # the try_assert on that file failed, nothing else
        assert f"/ {file}).exists()" in why[name] and "Still failing after timeout" in why[name], why[name]
    assert set(why) == set(PARSL_OWN_CANNOT_PASS)


def _rows(db: Path, table: str, cols: list[str], order: str = "") -> list[tuple[Any, ...]]:
    """``cols`` of every row of ``table``, each led by its workflow's name; sorted, or with ``order`` (a column)
    in that column's order, as recorded."""
    con = sqlite3.connect(db)
    try:
        names = dict(con.execute("SELECT run_id, workflow_name FROM workflow"))
        by = f" ORDER BY {order}" if order else ""
        out = []
        for r in con.execute(f'SELECT run_id, {", ".join(cols)} FROM "{table}"{by}'):
            out.append((names.get(r[0], "?"), *r[1:]))
        return out if order else sorted(out, key=repr)
    finally:
        con.close()


def run_plain(
    args: list[str], cwd: Path, timeout: float, app: str = "parsl_workflow.py"
) -> subprocess.CompletedProcess[str]:
    """``python APP ARGS`` as a user starts a driver: no mpirun, no MPI identity inherited."""
    env = mpi_env()  # puts the venv's bin (interchange.py, process_worker_pool.py) on PATH
    for k in [k for k in env if k.startswith(("OMPI_", "PMIX_", "PRTE_"))]:
        del env[k]
    argv = [sys.executable, str(APPS / app), *args]
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def reference_run(ref: Path, executors: str = "threads,htex") -> Path:
    """parsl_workflow.py with Parsl's own SQLite monitoring, without MPI; returns its database."""
    ref.mkdir()
    r = run_plain(["parsl", str(ref), executors], ref, 120)
    assert r.returncode == 0, f"reference run failed:\n{r.stdout}\n{r.stderr}"
    return ref / "reference.db"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One chronompi run under mpirun (4 ranks) and one reference run with Parsl's own monitoring."""
    out = tmp_path_factory.mktemp("parsl")
    ref = out / "ref"
    reference_run(ref)
    chrono = out / "chrono"
    chrono.mkdir()
    store = chrono / "store"
    mpirun(4, "parsl_workflow.py", "chronompi", str(chrono), str(store), timeout=240)
    exported = chrono / "monitoring.db"
    assert main_export_parsl([str(store), str(exported)]) == 0
    assert main_export_parsl([str(store), str(exported)]) == 1  # refuses to overwrite
    return {
        "ref": ref / "reference.db",
        "exp": exported,
        "store": store,
        "chrono": chrono,
        "result": json.loads((chrono / "result-chronompi.json").read_text()),
        "ref_result": json.loads((ref / "result-parsl.json").read_text()),
    }


@pytest.mark.mpi
def test_workflow_really_ran_with_failures_and_retries(runs: dict[str, Any]) -> None:
    for ex in ("threads", "htex"):
        res = runs["result"][ex]
        assert res["total"] == sum(i * i for i in range(16)) and res["flaky"] == [0, 1, 2, 3, 4]
        assert res["doomed"] == ["RuntimeError", "RuntimeError"]
        assert res["hub_errors"] == 0
    # htex: every message type reached the hub; threads: the workers' messages went through ChronompiRadio
    assert set(runs["result"]["htex"]["hub_counts"]) == ALL_TYPES
    assert "WORKER_TASK_INFO" not in runs["result"]["threads"]["hub_counts"]


@pytest.mark.mpi
def test_store_has_one_story_per_message_type(runs: dict[str, Any]) -> None:
    import chronompi

    with chronompi.open_store(runs["store"]) as st:
        assert set(st.stories("parsl")) == ALL_TYPES
        counts = {s: st.count("parsl", s) for s in ALL_TYPES}
        kind, body = decode_message(st.replay("parsl", "TASK_INFO")["payload"][0])
    hub = Counter(runs["result"]["threads"]["hub_counts"]) + Counter(runs["result"]["htex"]["hub_counts"])
    radio_worker_msgs = counts["WORKER_TASK_INFO"] - hub["WORKER_TASK_INFO"]
    assert radio_worker_msgs == 68  # threads run: a first and a last message for each of its 34 tries
    assert {k: v for k, v in counts.items() if k != "WORKER_TASK_INFO"} == {
        k: hub[k] for k in ALL_TYPES if k != "WORKER_TASK_INFO"
    }
    assert kind == "TASK_INFO" and isinstance(body["timestamp"], dt.datetime) and body["task_id"] == 0


WORKFLOW = [
    "workflow_name",
    "host",
    "user",
    "tasks_failed_count",
    "tasks_completed_count",
    "time_completed IS NOT NULL",
    "time_began IS NOT NULL",
]
TASK = [
    "task_id",
    "task_func_name",
    "task_memoize",
    "task_depends",
    "task_inputs",
    "task_outputs",
    "task_stdin",
    "task_stdout",
    "task_stderr",
    "task_fail_count",
    "task_fail_cost",
    "task_hashsum",
    "task_time_invoked IS NOT NULL",
    "task_time_returned IS NOT NULL",
]
TRY = [
    "task_id",
    "try_id",
    "task_executor",
    "hostname",
    "block_id",
    "task_fail_history",
    "task_joins",
    "task_try_time_launched IS NOT NULL",
    "task_try_time_running IS NOT NULL",
    "task_try_time_returned IS NOT NULL",
]
STATUS = ["task_id", "try_id", "task_status_name"]


@pytest.mark.mpi
@pytest.mark.parametrize("table,cols", [("workflow", WORKFLOW), ("task", TASK), ("try", TRY), ("status", STATUS)])
def test_export_equals_parsls_own_database(runs: dict[str, Any], table: str, cols: list[str]) -> None:
    ref = _rows(runs["ref"], table, cols)
    exp = _rows(runs["exp"], table, cols)
    assert len(ref) > 0
    assert exp == ref


@pytest.mark.mpi
def test_export_has_the_meaningful_content(runs: dict[str, Any]) -> None:
    """Guards the comparison itself: the workflow did fail, retry and run tasks on HTEX workers."""
    exp = runs["exp"]
    wf = {r[0]: r[1:] for r in _rows(exp, "workflow", ["tasks_failed_count", "tasks_completed_count"])}
    assert wf == {"wf-threads": (2, 23), "wf-htex": (2, 23)}
    tries = Counter((r[0], r[1]) for r in _rows(exp, "try", ["task_id"]))
    # tasks 0-15 square, 16-20 flaky (2 tries), 21-22 doomed (3 tries), 23 total, 24 nap
    want = {i: 1 for i in range(16)} | {i: 2 for i in range(16, 21)} | {21: 3, 22: 3, 23: 1, 24: 1}
    assert tries == {(w, i): n for w in ("wf-threads", "wf-htex") for i, n in want.items()}
    names = Counter(r[3] for r in _rows(exp, "status", STATUS) if r[0] == "wf-htex")
    assert names["fail_retryable"] == 5 + 2 * 2 and names["failed"] == 2 and names["running_ended"] == 34


@pytest.mark.mpi
def test_export_has_htex_resource_node_and_block_rows(runs: dict[str, Any]) -> None:
    for table in ("resource", "node", "block"):
        exp = _rows(runs["exp"], table, ["1"])
        assert exp and {r[0] for r in exp} == {"wf-htex"}, table
    # every HTEX try sent at least its final resource message
    ref = {r[:3] for r in _rows(runs["ref"], "resource", ["task_id", "try_id"])}
    exp_tries = {r[:3] for r in _rows(runs["exp"], "resource", ["task_id", "try_id"])}
    assert exp_tries == ref and len(exp_tries) == 34
    node = _rows(runs["exp"], "node", ["hostname", "cpu_count", "worker_count", "block_id", "active"])
    assert {r[1:] for r in node} == {
        r[1:] for r in _rows(runs["ref"], "node", ["hostname", "cpu_count", "worker_count", "block_id", "active"])
    }


@pytest.mark.mpi
def test_parsl_pandas_queries_work_on_the_export(runs: dict[str, Any]) -> None:
    pytest.importorskip("pandas")
    from parsl.monitoring.queries import pandas as q

    results = []
    for db in (runs["ref"], runs["exp"]):
        con = sqlite3.connect(db)
        try:
            (run,) = con.execute("SELECT run_id FROM workflow WHERE workflow_name = 'wf-htex'").fetchone()
            counts = q.app_counts_for_workflow(run, con)
            tries = q.tries_for_workflow(run, con)
            results.append(
                (sorted(map(tuple, counts.values.tolist())), len(tries), len(q.resources_for_workflow(run, con)) > 0)
            )
        finally:
            con.close()
    assert results[0] == results[1]
    assert results[1][2] and results[1][1] == 34


@pytest.mark.mpi
def test_export_without_parsl_schema_gives_the_same_rows(runs: dict[str, Any], tmp_path: Path) -> None:
    db = tmp_path / "copy.db"
    assert main_export_parsl([str(runs["store"]), str(db), "--no-parsl-schema"]) == 0
    for table in TABLES:
        cols = [c for c in COLUMNS[table] if c not in ("run_id",)]
        assert _rows(db, table, cols) == _rows(runs["exp"], table, cols), table


def test_apps_do_not_import_mpi_at_module_level() -> None:
    """Pitfall 1: Parsl's spawned processes re-import the driver module; MPI_Init there hangs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    code = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='not_main'); print('mpi4py.MPI' in sys.modules)"
    for app in sorted(APPS.glob("parsl_*.py")):
        r = subprocess.run([sys.executable, "-c", code, str(app)], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "False", app.name


@pytest.mark.mpi
def test_radio_records_from_worker_ranks(tmp_path: Path) -> None:
    """Tasks run on another client rank (mpi4py.futures); that rank records its worker messages itself."""
    import chronompi

    store = tmp_path / "store"
    mpirun(5, "parsl_ranks.py", str(tmp_path), str(store), timeout=120)
    res = json.loads((tmp_path / "result-ranks.json").read_text())
    assert res["flaky"] == [0, 1, 2] and res["driver_pid"] not in res["pids"]  # the tasks really ran elsewhere
    assert "WORKER_TASK_INFO" not in res["hub_counts"]  # the driver's hub never saw the worker messages
    with chronompi.open_store(store) as st:
        workers = st.replay("parsl", "WORKER_TASK_INFO")
        assert len(workers) == 2 * (12 + 3 * 2)  # first + last message of each try
        assert set(st.replay("parsl", "TASK_INFO")["client"].tolist()) == {res["driver_client"]}
        worker_clients = set(workers["client"].tolist())
        assert len(worker_clients) == 1 and res["driver_client"] not in worker_clients
    db = tmp_path / "monitoring.db"
    assert main_export_parsl([str(store), str(db)]) == 0
    con = sqlite3.connect(db)
    try:
        names = dict(con.execute("SELECT task_status_name, count(*) FROM status GROUP BY 1").fetchall())
        running = con.execute("SELECT count(*) FROM try WHERE task_try_time_running IS NOT NULL").fetchone()[0]
    finally:
        con.close()
    assert names == {
        "pending": 18,
        "launched": 18,
        "running": 18,
        "running_ended": 18,
        "fail_retryable": 3,
        "exec_done": 15,
    }
    assert running == 18


def test_cli_export_parsl_subcommand(runs: dict[str, Any], tmp_path: Path) -> None:
    """`chronompi export parsl STORE DB` (the console script) writes the same database."""
    db = tmp_path / "cli.db"
    exe = Path(sys.executable).parent / "chronompi"
    r = subprocess.run(
        [str(exe), "export", "parsl", str(runs["store"]), str(db)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    cols = ["task_id", "task_func_name", "task_fail_count"]
    assert _rows(db, "task", cols, "task_id") == _rows(runs["exp"], "task", cols, "task_id")


@pytest.mark.mpi
def test_drop_in_hub_in_a_plain_python_driver(tmp_path: Path) -> None:
    """The one-line switch: ``Config(monitoring=ChronompiHub(store=...))`` in a driver started with plain
    ``python`` (no mpirun, no chronompi code): the hub starts a session of its own (service ranks spawned) and
    ends it at close. The exported database equals Parsl's own, table by table, for both executors."""
    ref = reference_run(tmp_path / "ref")
    out, store = tmp_path / "dropin", tmp_path / "dropin" / "store"
    out.mkdir()
    r = run_plain(["dropin", str(out), str(store)], out, 300)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    res = json.loads((out / "result-dropin.json").read_text())
    for ex in ("threads", "htex"):
        assert res[ex]["total"] == sum(i * i for i in range(16)) and res[ex]["hub_errors"] == 0, res[ex]
    assert set(res["htex"]["hub_counts"]) == ALL_TYPES
    exported = out / "monitoring.db"
    assert main_export_parsl([str(store), str(exported)]) == 0
    for table, cols in (("workflow", WORKFLOW), ("task", TASK), ("try", TRY), ("status", STATUS)):
        want = _rows(ref, table, cols)
        assert want and _rows(exported, table, cols) == want, table
        # logging_endpoint: the database the hub wrote at each close, both workflows in it, as Parsl's has
        assert _rows(out / "dropin.db", table, cols) == want, f"{table} (logging_endpoint)"
    import chronompi

    runs = chronompi.open_store(store).runs()
    assert len(runs) == 2 and all(run["status"] == "complete" for run in runs)  # a session per workflow, ended
