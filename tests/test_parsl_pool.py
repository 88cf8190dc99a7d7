"""HTEX worker pools as client ranks (chronompi.parsl.serve_pools, ChronompiPoolProvider, ChronompiPoolRadio).

The end-to-end test runs parsl_workflow.py's HTEX workflow (successes, tasks failing on their first try and
on every try, retries=2, resource monitoring every 0.2 s) under ``mpirun -n 6`` (visor, keeper, grapher,
the driver, 2 pool ranks) and compares the export with Parsl's own monitoring of the same workflow, with
test_parsl.py's helpers. The channel and the pool environment are checked without MPI.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("parsl")
pytest.importorskip("sqlalchemy")

from conftest import APPS, mpirun  # noqa: E402
from parsl.monitoring.message_type import MessageType  # noqa: E402
from test_parsl import STATUS, TASK, TRY, WORKFLOW, _rows, reference_run  # noqa: E402
from test_slurm import job_env, job_name, sbatch, slurm  # noqa: E402, F401  (fixtures: the local Slurm)

from chronompi.errors import ChronoError  # noqa: E402
from chronompi.parsl import ChronompiPoolRadio, decode_message, main_export_parsl  # noqa: E402
from chronompi.parsl.channel import SOCKET_ENV, ChannelReceiver  # noqa: E402
from chronompi.parsl.pool import pool_env  # noqa: E402
from chronompi.parsl.radio import RadioError  # noqa: E402


# -- without MPI -------------------------------------------------------------------------------------------------
def test_pool_env_drops_the_ranks_mpi_identity() -> None:
    base = {
        "PATH": "/x/bin",
        "OMPI_COMM_WORLD_RANK": "3",
        "PMIX_RANK": "3",
        "PMIX_NAMESPACE": "prterun-vm-1@1",
        "PMI_RANK": "3",
        "PRTE_MCA_x": "1",
        "HOME": "/root",
    }
    assert pool_env(base, "/tmp/s") == {"PATH": "/x/bin", "HOME": "/root", SOCKET_ENV: "/tmp/s"}


def _send_from_child(path: str, n: int) -> None:
    """In a fresh process, as an HTEX worker would: the radio from the environment, n messages."""
    code = (
        "import datetime, pickle, sys\n"
        "from parsl.monitoring.message_type import MessageType\n"
        "radio = pickle.loads(sys.stdin.buffer.read())\n"
        f"for i in range({n}):\n"
        "    body = {'task_id': i, 'timestamp': datetime.datetime(2026, 1, 1)}\n"
        "    radio.create_sender().send((MessageType.RESOURCE_INFO, body))\n"
        "radio.create_sender().send(('not', 'tagged', 'by', 'parsl'))\n"
        "print('mpi4py.MPI' in sys.modules)\n"
    )
    env = dict(os.environ, **{SOCKET_ENV: path})
    r = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(ChronompiPoolRadio()), capture_output=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == "False"  # the worker side never starts MPI


def test_channel_carries_encoded_messages_from_worker_processes_in_order() -> None:
    rx = ChannelReceiver()
    got: list[tuple[str, bytes]] = []
    t = threading.Thread(target=rx.serve, args=(lambda k, p: got.append((k, p)),))
    t.start()
    try:
        _send_from_child(rx.path, 200)
    finally:
        rx.stop()
        t.join(30)
        rx.close()
        rx.close()  # safe twice
    assert not t.is_alive() and not os.path.exists(rx.dir)
    assert [k for k, _ in got] == ["RESOURCE_INFO"] * 200 + ["MALFORMED"]
    bodies = [decode_message(p) for _, p in got[:-1]]
    assert [(k, b["task_id"], b["timestamp"]) for k, b in bodies] == [
        ("RESOURCE_INFO", i, dt.datetime(2026, 1, 1)) for i in range(200)
    ]


def test_pool_radio_outside_a_pool_falls_back_or_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_parsl import SENT, _ListRadio

    monkeypatch.delenv(SOCKET_ENV, raising=False)
    with pytest.raises(RadioError, match="serve_pools") as ei:
        ChronompiPoolRadio().create_sender()
    assert isinstance(ei.value, ChronoError)
    radio = pickle.loads(pickle.dumps(ChronompiPoolRadio(fallback=_ListRadio())))  # type: ignore[arg-type]
    n = len(SENT)
    radio.create_sender().send((MessageType.RESOURCE_INFO, {"x": 2}))
    assert SENT[n:] == [(MessageType.RESOURCE_INFO, {"x": 2})]
    del SENT[n:]  # test_parsl's radio test checks the whole list


class _OneRank:
    def Get_size(self) -> int:  # noqa: N802 - mpi4py's name
        return 1


def test_serve_pools_needs_a_pool_rank_and_says_so_before_any_message() -> None:
    from types import SimpleNamespace

    from chronompi.parsl import serve_pools

    with pytest.raises(ValueError, match="at least one other client rank.*mpirun -n 5"):
        serve_pools(SimpleNamespace(comm=_OneRank()))  # type: ignore[arg-type]


# -- end to end --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The workflow with 2 pool ranks under mpirun -n 6, and the reference run with Parsl's own monitoring."""
    out = tmp_path_factory.mktemp("pools")
    ref = reference_run(out / "ref", "htex")
    run = out / "chrono"
    run.mkdir()
    store = run / "store"
    mpirun(6, "parsl_pools.py", str(run), str(store), timeout=150)
    db = run / "monitoring.db"
    assert main_export_parsl([str(store), str(db)]) == 0
    return {
        "ref": ref,
        "exp": db,
        "store": store,
        "result": json.loads((run / "result-pools.json").read_text()),
    }


@pytest.mark.mpi
def test_workers_messages_are_recorded_by_the_pool_ranks(pools: dict[str, Any]) -> None:
    import chronompi

    res = pools["result"]
    assert res["total"] == sum(i * i for i in range(16)) and res["flaky"] == [0, 1, 2, 3, 4]
    assert res["doomed"] == ["RuntimeError", "RuntimeError"] and res["hub_errors"] == 0
    # the driver's hub recorded the DFK's and the interchange's messages, never a worker's
    assert set(res["hub_counts"]) == {"WORKFLOW_INFO", "TASK_INFO", "BLOCK_INFO", "NODE_INFO"}
    stats = res["pools"]
    assert len(stats) == 2 and all(s["errors"] == 0 for s in stats.values())
    pool_clients = {s["client"] for s in stats.values()}
    driver = res["driver_client"]
    with chronompi.open_store(pools["store"]) as st:
        by_story = {s: Counter(st.replay("parsl", s)["client"].tolist()) for s in st.stories("parsl")}
    for story in ("RESOURCE_INFO", "WORKER_TASK_INFO"):
        assert by_story[story] and set(by_story[story]) <= pool_clients, story
        assert sum(by_story[story].values()) == sum(s["counts"][story] for s in stats.values())
    assert sum(by_story["WORKER_TASK_INFO"].values()) == 2 * 34  # a first and a last message for each try
    for story in ("WORKFLOW_INFO", "TASK_INFO", "BLOCK_INFO", "NODE_INFO"):
        assert set(by_story[story]) == {driver}, story


NO_BLOCK = [c for c in TRY if c != "block_id"]  # which pool ran a try is up to the interchange


@pytest.mark.mpi
@pytest.mark.parametrize("table,cols", [("workflow", WORKFLOW), ("task", TASK), ("try", NO_BLOCK), ("status", STATUS)])
def test_export_equals_parsls_own_database(pools: dict[str, Any], table: str, cols: list[str]) -> None:
    ref = _rows(pools["ref"], table, cols)
    assert ref and _rows(pools["exp"], table, cols) == ref


@pytest.mark.mpi
def test_export_has_resources_of_every_try_and_both_pools(pools: dict[str, Any]) -> None:
    exp = pools["exp"]
    names = Counter(r[3] for r in _rows(exp, "status", STATUS))
    assert names["fail_retryable"] == 5 + 2 * 2 and names["failed"] == 2 and names["running_ended"] == 34
    ref_tries = {r[:3] for r in _rows(pools["ref"], "resource", ["task_id", "try_id"])}
    exp_tries = {r[:3] for r in _rows(exp, "resource", ["task_id", "try_id"])}
    assert exp_tries == ref_tries and len(exp_tries) == 34
    blocks = {r[1] for r in _rows(exp, "try", ["block_id"])}
    assert blocks <= {"0", "1"} and len(_rows(exp, "node", ["block_id"])) > 0


NODE = ["block_id", "hostname", "cpu_count", "total_memory", "worker_count", "python_v", "active"]
BLOCK = ["executor_label", "block_id", "job_id", "status"]


@pytest.mark.mpi
def test_a_pool_block_retired_at_cleanup_keeps_its_last_node_row(tmp_path: Path) -> None:
    """One task on a pool rank's block under htex_auto_scale, the block retired at the DataFlowKernel's cleanup
    (tests/apps/parsl_pool_scaling.py): Parsl holds the block's manager (the interchange sends the last NODE_INFO,
    active False), the provider cancels the block, the executor's shutdown terminates the interchange. The
    NODE and BLOCK rows recorded by ChronompiHub equal those of Parsl's own hub in the same job, the last NODE
    row included: the provider's cancel() returns once the pool has exited, so the interchange is not
    terminated a millisecond after it queued that message (it was lost now and then under load)."""
    rows = {}
    for mode in ("parsl", "chronompi"):
        out = tmp_path / mode
        out.mkdir()
        mpirun(5, "parsl_pool_scaling.py", mode, str(out), str(out / "store"), timeout=150)
        res = json.loads((out / f"result-scaling-{mode}.json").read_text())
        assert res["square"] == 49
        assert len(res["exit_codes_when_cancel_returned"]) == 1 and None not in res["exit_codes_when_cancel_returned"]
        db = out / "parsl.db"
        if mode == "chronompi":
            assert res["hub_errors"] == 0 and set(res["hub_counts"]) == {
                "WORKFLOW_INFO",
                "TASK_INFO",
                "BLOCK_INFO",
                "NODE_INFO",
            }
            assert main_export_parsl([str(out / "store"), str(db)]) == 0
        rows[mode] = {t: _rows(db, t, cols, order="timestamp") for t, cols in (("node", NODE), ("block", BLOCK))}
    # the manager registered, was sent the task, sent its result (active), and was held at cleanup (inactive)
    assert [r[-1] for r in rows["chronompi"]["node"]] == [1, 1, 1, 0]
    assert [r[-1] for r in rows["chronompi"]["block"]] == ["PENDING", "RUNNING", "SCALED_IN"]
    assert rows["chronompi"] == rows["parsl"]


@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_pools_under_sbatch(
    pools: dict[str, Any],
    slurm: None,  # noqa: F811
    tmp_path: Path,
    job_name: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same workflow submitted to the local Slurm with jobscripts/chronompi.sbatch: 6 ranks, 2 pool ranks."""
    import test_slurm

    import chronompi

    monkeypatch.setattr(test_slurm, "RANKS", 6)  # sbatch() asks for RANKS tasks

    out, store = tmp_path / "out", tmp_path / "store"
    out.mkdir()
    env = job_env(PROGRAM=f"{sys.executable} {APPS / 'parsl_pools.py'} {out} {store}")
    rc, job_id, log = sbatch(tmp_path, job_name, env)
    assert rc == 0, f"job {job_id} exited {rc}:\n{log.read_text(errors='replace')[-6000:]}"
    res = json.loads((out / "result-pools.json").read_text())
    assert len(res["pools"]) == 2 and res["doomed"] == ["RuntimeError", "RuntimeError"]
    pool_clients = {s["client"] for s in res["pools"].values()}
    with chronompi.open_store(store) as st:
        for story in ("RESOURCE_INFO", "WORKER_TASK_INFO"):
            assert set(st.replay("parsl", story)["client"].tolist()) <= pool_clients, story
    db = tmp_path / "monitoring.db"
    assert main_export_parsl([str(store), str(db)]) == 0
    for table, cols in (("task", TASK), ("try", NO_BLOCK), ("status", STATUS)):
        assert _rows(db, table, cols) == _rows(pools["ref"], table, cols), table
