"""A real Parsl workflow under each monitoring sink, as a user runs one: what each sink kept, and the time taken.

    python perf/bench_parsl_sinks.py [--tasks 2000] [--rounds 2] [--load 0] [--out perf/out/parsl-sinks.jsonl]

Each round runs the same workflow, ``--tasks`` no-op ``python_app`` calls on one HighThroughputExecutor block
(LocalProvider, 2 workers, resource monitoring off: per task 3 TASK_INFO and 2 WORKER_TASK_INFO messages),
in a fresh process started as a user starts a driver (``python``, no mpirun), once per sink, the order
alternating between rounds:

- ``parsl``: ``Config(monitoring=MonitoringHub(logging_endpoint="sqlite:///DB"))``, Parsl's own sink (its
  router and database manager processes);
- ``chronompi``: ``Config(monitoring=ChronompiHub(store=STORE, logging_endpoint="sqlite:///DB"))``, the
  drop-in: the hub's own session (service ranks spawned), Parsl's database written from the store at close.

Timed from ``parsl.load`` to the end of its ``with`` block (the DFK's cleanup, which stops the sink). Then each
database is counted: the ``status`` rows (one per task state the messages carry: pending, launched, running,
running_ended, exec_done, so 5 per task when nothing is lost), the ``task`` rows and those with a return time,
the ``try`` rows. ``kept`` = status rows / (5 x tasks). With ``--load K``, K busy processes (a tight Python
loop each) run beside every workflow: a machine loaded by other work, where Parsl's database manager falls
behind and is terminated a fixed time after shutdown begins. One JSON line per workflow; a summary per sink.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STATES_PER_TASK = 5  # pending, launched, running, running_ended, exec_done


def workflow(mode: str, outdir: Path, tasks: int) -> dict[str, Any]:
    """One workflow in this process (the child of main): ``mode`` is the sink."""
    import parsl
    from parsl.app.app import python_app
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    @python_app
    def noop(i: int) -> int:
        return i

    db = outdir / f"{mode}.db"
    if mode == "parsl":
        from parsl.monitoring import MonitoringHub

        hub: Any = MonitoringHub(
            workflow_name="sinks", logging_endpoint=f"sqlite:///{db}", resource_monitoring_interval=0
        )
    else:
        from chronompi.parsl import ChronompiHub

        hub = ChronompiHub(
            store=str(outdir / "store"),
            workflow_name="sinks",
            logging_endpoint=f"sqlite:///{db}",
            resource_monitoring_interval=0,
        )
    ex = HighThroughputExecutor(
        label="htex",
        address="127.0.0.1",
        max_workers_per_node=2,
        heartbeat_period=1,
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        encrypted=False,
    )
    config = Config(
        executors=[ex], monitoring=hub, run_dir=str(outdir / "runinfo"), strategy="none", initialize_logging=False
    )
    t0 = time.perf_counter()
    with parsl.load(config):
        done = sum(1 for f in [noop(i) for i in range(tasks)] if f.result() is not None)
        t_results = time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    return {"tasks_done": done, "results_s": round(t_results, 3), "seconds": round(seconds, 3), "db": str(db)}


def count(db: Path) -> dict[str, int]:
    if not db.exists():
        return {"status": 0, "task": 0, "task_returned": 0, "try": 0}
    con = sqlite3.connect(db)
    try:

        def one(sql: str) -> int:
            try:
                return int(con.execute(sql).fetchone()[0])
            except sqlite3.Error:
                return 0

        return {
            "status": one("SELECT COUNT(*) FROM status"),
            "task": one("SELECT COUNT(*) FROM task"),
            "task_returned": one("SELECT COUNT(*) FROM task WHERE task_time_returned IS NOT NULL"),
            "try": one('SELECT COUNT(*) FROM "try"'),
        }
    finally:
        con.close()


def _busy(stop: Any) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


def one_run(mode: str, tasks: int, load: int, timeout: float, scratch: Path) -> dict[str, Any]:
    outdir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=scratch))
    stop = multiprocessing.Event()
    busy = [multiprocessing.Process(target=_busy, args=(stop,), daemon=True) for _ in range(load)]
    for p in busy:
        p.start()
    load_before = os.getloadavg()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PRTE_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # the venv (interchange.py)
    argv = [sys.executable, __file__, "--child", mode, str(outdir), str(tasks)]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=outdir, env=env)
    finally:
        stop.set()
        for p in busy:
            p.join(5)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{mode} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    child = json.loads(r.stdout.strip().splitlines()[-1])
    rows = count(Path(child["db"]))
    return {
        "bench": "parsl_sinks",
        "sink": mode,
        "tasks": tasks,
        "load_procs": load,
        "tasks_done": child["tasks_done"],
        "results_s": child["results_s"],
        "workflow_s": child["seconds"],
        "process_s": round(wall, 3),
        **{f"rows_{k}": v for k, v in rows.items()},
        "expected_status_rows": STATES_PER_TASK * tasks,
        "kept": round(rows["status"] / (STATES_PER_TASK * tasks), 4),
        "load1": round(load_before, 2),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, outdir, tasks = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(workflow(mode, outdir, tasks)), flush=True)
        return
    sys.path.insert(0, str(HERE))
    from benchlib import JsonLines

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--load", type=int, default=0, help="busy processes beside each workflow")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", default=str(ROOT / "perf" / "out" / "parsl-sinks.jsonl"))
    a = p.parse_args()
    out = JsonLines(a.out)
    rows = out.rows
    with tempfile.TemporaryDirectory(prefix="bench-parsl-sinks-") as tmp:
        for rnd in range(a.rounds):
            for mode in ("parsl", "chronompi") if rnd % 2 == 0 else ("chronompi", "parsl"):
                out.add({**one_run(mode, a.tasks, a.load, a.timeout, Path(tmp)), "round": rnd})
    print(f"\n{a.tasks} tasks, {a.load} busy processes beside each workflow, {a.rounds} rounds")
    print("| sink | kept (status rows / 5 per task) | workflow s | tasks/s | load |")
    print("| --- | --- | --- | --- | --- |")
    for mode in ("parsl", "chronompi"):
        rs = [r for r in rows if r["sink"] == mode]
        kept = ", ".join(f"{r['kept']:.3f}" for r in rs)
        sec = statistics.median(r["workflow_s"] for r in rs)
        load = f"{min(r['load1'] for r in rs):.1f}-{max(r['load1'] for r in rs):.1f}"
        print(f"| {mode} | {kept} | {sec:.2f} | {a.tasks / sec:.0f} | {load} |")


if __name__ == "__main__":
    main()
