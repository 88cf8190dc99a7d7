"""Parsl monitoring sinks on one message stream: chronompi's ChronompiHub vs Parsl's own database manager.

One job, one stream: a generator makes a realistic monitoring stream (per task: TASK_INFO pending /
launched / exec_done, WORKER_TASK_INFO first and last, one RESOURCE_INFO; a NODE_INFO every 50 tasks, a
BLOCK_INFO every 500; WORKFLOW_INFO start and end), built once, in memory, before any timing. Each sink
gets the same messages through ``resource_msgs`` exactly as the DataFlowKernel delivers them, and is timed
from the first put to the return of ``close()`` (everything recorded: Parsl's rows committed to SQLite;
chronompi's events flushed to the keeper). Then, for chronompi, the export of the store back to Parsl's
SQLite database is timed (after the session ended, so the store is complete).

Run: ``chronompi mpirun -n 4 -- python perf/bench_parsl.py '{"tasks": 5000}' [out.jsonl]``
(4 ranks: visor, keeper, grapher, 1 client; client rank 0 runs both sinks one after the other).
mpi4py and chronompi are imported inside main(): Parsl's database manager is a spawned process that
re-imports this module (docs/parsl.md, pitfall 1).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from parsl.monitoring.message_type import MessageType


def make_stream(tasks: int, run_id: str = "bench-run") -> list[tuple[MessageType, Any]]:
    t = dt.datetime(2026, 11, 25, 8, 0, 0)
    us = dt.timedelta(microseconds=1)
    clock = [0]

    def now() -> dt.datetime:
        clock[0] += 7
        return t + clock[0] * us

    msgs: list[tuple[MessageType, Any]] = [
        (
            MessageType.WORKFLOW_INFO,
            {
                "python_version": "3.11.7",
                "parsl_version": "2026.10.26",
                "time_began": now(),
                "run_id": run_id,
                "workflow_name": "bench",
                "workflow_version": "1",
                "rundir": "/tmp/runinfo/000",
                "tasks_completed_count": 0,
                "tasks_failed_count": 0,
                "user": "bench",
                "host": "node0",
            },
        )
    ]
    done = 0
    for i in range(tasks):
        base = {
            "task_func_name": "square",
            "task_memoize": False,
            "task_hashsum": None,
            "task_fail_count": 0,
            "task_fail_cost": 0.0,
            "task_id": i,
            "task_time_invoked": now(),
            "task_try_time_launched": None,
            "task_time_returned": None,
            "task_try_time_returned": None,
            "task_executor": "htex",
            "run_id": run_id,
            "try_id": 0,
            "tasks_memo_completed_count": 0,
            "from_memo": None,
            "task_inputs": "None",
            "task_outputs": "None",
            "task_stdin": None,
            "task_stdout": "",
            "task_stderr": "",
            "task_fail_history": "",
            "task_depends": "",
            "task_joins": None,
        }
        for status in ("pending", "launched"):
            msgs.append(
                (
                    MessageType.TASK_INFO,
                    {
                        **base,
                        "timestamp": now(),
                        "task_status_name": status,
                        "tasks_failed_count": 0,
                        "tasks_completed_count": done,
                    },
                )
            )
        worker = {"run_id": run_id, "try_id": 0, "task_id": i, "hostname": "node1", "block_id": "0"}
        msgs.append(
            (MessageType.WORKER_TASK_INFO, {**worker, "first_msg": True, "last_msg": False, "timestamp": now()})
        )
        msgs.append(
            (
                MessageType.RESOURCE_INFO,
                {
                    "psutil_process_pid": 4242,
                    "psutil_process_memory_percent": 0.12,
                    "psutil_process_num_threads": 3,
                    "psutil_process_status": "running",
                    "run_id": run_id,
                    "task_id": i,
                    "try_id": 0,
                    "resource_monitoring_interval": 1.0,
                    "hostname": "node1",
                    "timestamp": now(),
                    "psutil_cpu_count": 2,
                    "psutil_cpu_num": 1,
                    "psutil_process_num_ctx_switches_voluntary": 12,
                    "psutil_process_num_ctx_switches_involuntary": 3,
                    "psutil_process_memory_virtual": 123456789,
                    "psutil_process_memory_resident": 23456789,
                    "psutil_process_time_user": 0.01,
                    "psutil_process_time_system": 0.002,
                    "psutil_process_children_count": 0,
                    "psutil_process_disk_write": 0,
                    "psutil_process_disk_read": 1024,
                },
            )
        )
        msgs.append(
            (MessageType.WORKER_TASK_INFO, {**worker, "first_msg": False, "last_msg": True, "timestamp": now()})
        )
        done += 1
        msgs.append(
            (
                MessageType.TASK_INFO,
                {
                    **base,
                    "timestamp": now(),
                    "task_status_name": "exec_done",
                    "task_time_returned": now(),
                    "task_try_time_returned": now(),
                    "tasks_failed_count": 0,
                    "tasks_completed_count": done,
                },
            )
        )
        if i % 50 == 0:
            msgs.append(
                (
                    MessageType.NODE_INFO,
                    {
                        "block_id": "0",
                        "start_time": 1.0,
                        "tasks": [i],
                        "worker_count": 2,
                        "max_capacity": 2,
                        "active": True,
                        "draining": False,
                        "drain_time": float("inf"),
                        "hostname": "node1",
                        "last_heartbeat": now(),
                        "idle_since": None,
                        "timestamp": now(),
                        "parsl_version": "2026.10.26",
                        "python_version": "3.11.7",
                        "python_v": "3.11.7",
                        "uid": "abc123",
                        "cpu_count": 2,
                        "total_memory": 8 << 30,
                        "run_id": run_id,
                    },
                )
            )
        if i % 500 == 0:
            msgs.append(
                (
                    MessageType.BLOCK_INFO,
                    [
                        {
                            "run_id": run_id,
                            "status": "RUNNING",
                            "timestamp": now(),
                            "executor_label": "htex",
                            "job_id": "1234",
                            "block_id": "0",
                        }
                    ],
                )
            )
    msgs.append(
        (
            MessageType.WORKFLOW_INFO,
            {
                "tasks_failed_count": 0,
                "tasks_completed_count": done,
                "time_completed": now(),
                "run_id": run_id,
                "rundir": "/tmp/runinfo/000",
            },
        )
    )
    return msgs


def push(hub: Any, msgs: list[Any], run_dir: str) -> dict[str, float]:
    hub.start(run_dir, run_dir, None)
    q = hub.resource_msgs
    t0 = time.perf_counter()
    for m in msgs:
        q.put(m)
    t_put = time.perf_counter() - t0
    hub.close()
    total = time.perf_counter() - t0
    return {"seconds": total, "msgs_per_s": len(msgs) / total, "put_s": t_put}


def main() -> int:
    params = json.loads(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else {}
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    tasks = int(params.get("tasks", 5000))
    from mpi4py import MPI

    import chronompi  # lazily (see the module docstring)
    from chronompi.parsl import ChronompiHub, export_parsl

    # one directory for the whole job: the session's store is where rank 0 says it is
    work = Path(MPI.COMM_WORLD.bcast(params.get("dir") or tempfile.mkdtemp(prefix="bench-parsl-"), root=0))
    work.mkdir(parents=True, exist_ok=True)
    msgs = make_stream(tasks)

    store = work / "store"
    results: list[dict[str, Any]] = []
    with chronompi.session(cfg={"storage": {"root": str(store)}}) as client:
        if client is None or client.comm.Get_rank() != 0:
            return 0
        from parsl.monitoring import MonitoringHub

        db = work / "parsl.db"
        parsl_hub = MonitoringHub(logging_endpoint=f"sqlite:///{db}", resource_monitoring_enabled=False)
        r = push(parsl_hub, msgs, str(work / "runinfo-parsl"))
        r.update(sink="parsl DatabaseManager -> SQLite", bytes_on_disk=os.path.getsize(db))
        results.append(r)
        hub = ChronompiHub(client, resource_monitoring_enabled=False, register=False)
        r = push(hub, msgs, str(work / "runinfo-chronompi"))
        r.update(sink="chronompi ChronompiHub -> keeper", counts=hub.counts)
        results.append(r)
    t0 = time.perf_counter()
    rb = export_parsl(store, work / "exported.db")
    t = time.perf_counter() - t0
    results.append(
        {
            "sink": "chronompi export -> SQLite",
            "seconds": t,
            "msgs_per_s": len(msgs) / t,
            "rows": len(rb.rows["status"]),
        }
    )
    seg_bytes = sum(p.stat().st_size for p in (store / "segments").glob("*.h5"))
    results[1]["bytes_on_disk"] = seg_bytes
    # bytes per message by encoding (payload only; each event adds a 36-byte row) and Parsl's rows
    from chronompi.parsl.encoding import encode_message

    for v in (1, 3):
        results[1][f"payload_v{v}_bytes_per_msg"] = sum(len(encode_message(k.name, b, v)) for k, b in msgs) / len(msgs)
    import sqlite3

    con = sqlite3.connect(db)
    results[0]["rows"] = sum(
        con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        for t in ("workflow", "task", "try", "status", "resource", "node", "block")
    )
    con.close()
    print(f"{len(msgs)} monitoring messages ({tasks} tasks), {os.cpu_count()} cores")
    print(f"{'sink':36} {'seconds':>8} {'msg/s':>10} {'B/msg on disk':>14}")
    for r in results:
        per = f"{r['bytes_on_disk'] / len(msgs):.0f}" if "bytes_on_disk" in r else "-"
        print(f"{r['sink']:36} {r['seconds']:8.3f} {r['msgs_per_s']:10.0f} {per:>14}")
    print(
        f"payload bytes per message: JSON (v1) {results[1]['payload_v1_bytes_per_msg']:.0f}, "
        f"msgpack (v3, recorded) {results[1]['payload_v3_bytes_per_msg']:.0f}, + 36 per event row; "
        f"Parsl's SQLite: {results[0]['rows']} rows"
    )
    if out is not None:
        with out.open("a") as f:
            for r in results:
                f.write(json.dumps({"bench": "parsl", "messages": len(msgs), "tasks": tasks, **r}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
