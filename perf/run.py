"""Run the perf suite: ``python perf/run.py [hydra overrides]`` (config: ``perf/conf/perf.yaml``).

Launches one ``mpirun`` job per benchmark (and one per layout of the scaling sweep), each with a
wall-clock limit, and collects their results as JSON lines in ``perf/out/<date>-<host>.jsonl`` (ignored
by git: a run leaves the tree clean; ``out=FILE`` elsewhere). Then writes ``summary.md`` and PNG plots
(when matplotlib is installed) beside it with ``perf/plot.py`` and prints the peer table: chronompi's
``log`` and ``log_many`` against ADIOS2 and h5py, same events, median over rounds (each run its own job).
``publish=true`` also writes them into ``perf/results`` (committed) and copies the results file there.

Examples::

    python perf/run.py                                   # quick suite (~4 min on 2 cores)
    python perf/run.py benches=[ingest]                  # only the ingest comparison (peer table)
    python perf/run.py quick=false                       # full suite
    python perf/run.py layout.clients=30 layout.keepers=2 layout.graphers=2 quick=false
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent
BENCHES = ("ingest", "client_cost", "durable", "scaling", "baselines")


def compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(PERF / "conf"), version_base=None):
        cfg = hydra_compose(config_name="perf", overrides=overrides)
    return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


def jobs(cfg: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(bench, ranks, params) of every mpirun job of the suite."""
    prof = dict(cfg["profiles"]["quick" if cfg["quick"] else "full"])
    lay = cfg["layout"]
    params: dict[str, Any] = {
        **prof,
        "layout": {"keepers": lay["keepers"], "graphers": lay["graphers"]},
        "chronompi": cfg["chronompi"],
        "scratch": cfg["scratch"],
        "baselines": cfg["baselines"],
        "peers": cfg["peers"],
        "peer_batch": cfg["peer_batch"],
        "peer_shapes": cfg["peer_shapes"],
        "warm_runs": cfg["warm_runs"],
        "hang_s": max(10.0, float(cfg["timeout_s"]) - 10.0),
        "profile": "quick" if cfg["quick"] else "full",
    }
    n_main = 1 + lay["keepers"] + lay["graphers"] + lay["clients"]
    out = []
    for bench in cfg["benches"]:
        if bench not in BENCHES:
            raise SystemExit(f"unknown bench {bench!r}; known: {', '.join(BENCHES)}")
        if bench == "scaling":
            for clients, keepers, graphers in prof["scaling"]["configs"]:
                p = {**params, "layout": {"keepers": keepers, "graphers": graphers}}
                out.append((bench, 1 + keepers + graphers + clients, p))
        else:
            out.append((bench, n_main, params))
    return out


def ingest_jobs(n: int, params: dict[str, Any], out: Path, cfg: dict[str, Any], log: Path) -> list[dict[str, Any]]:
    """The ingest comparison with every run in a job of its own (``isolate=true``), as a user runs one system
    after the other (and as ``perf/user_ingest.py`` does): for each payload, ``rounds`` rounds of one job per
    system (the order rotated by one each round; a chronompi job on the whole layout, a peer's on as many
    ranks as chronompi has clients), each writing one ``run`` line to ``<out>.ingest-runs.jsonl``; then one
    job on the layout aggregates them into the rows and runs the baselines. One job for everything
    (``isolate=false``) made chronompi's later sessions up to ~15 % faster than a user's (README)."""
    sys.path.insert(0, str(PERF))
    from harness import system_names

    names, _ = system_names(params)
    runs = out.with_name(out.stem + ".ingest-runs.jsonl")
    tag = f"{time.time_ns():x}"  # this suite's run lines (a results file given again appends to the same runs file)
    statuses = []
    for payload in params.get("payloads", [64, 1024]):
        one = {**params, "payloads": [payload], "runs_tag": tag}
        for r in range(max(1, int(params.get("rounds", 3)))):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                ranks = n if name.startswith("chronompi ") else int(cfg["layout"]["clients"])
                job = {**one, "only": name, "round": r}
                statuses.append(launch("ingest", ranks, job, runs, cfg, log, f"ingest, {name}, {payload} B, round {r}"))
        statuses.append(launch("ingest", n, {**one, "finish": str(runs)}, out, cfg, log, f"ingest, {payload} B, rows"))
    return statuses


def launch(
    bench: str, n: int, params: dict[str, Any], out: Path, cfg: dict[str, Any], log: Path, label: str = ""
) -> dict[str, Any]:
    """Run one benchmark job under mpirun; kill its process group past ``timeout_s``."""
    from chronompi.launch import LAUNCH_ATTEMPTS, launcher_failed, mpi_env, mpirun_argv

    pfile = out.parent / ".params" / f"{out.stem}-{bench}-{n}-{time.time_ns()}.json"
    pfile.parent.mkdir(parents=True, exist_ok=True)
    pfile.write_text(json.dumps(params))
    env = mpi_env()
    env["PYTHONUNBUFFERED"] = "1"
    argv = mpirun_argv(
        n, [sys.executable, str(PERF / f"bench_{bench}.py"), "@" + str(pfile), str(out)], list(cfg["mpirun_args"]), env
    )
    t0 = time.perf_counter()
    print(f"== {label or bench}: {' '.join(argv[:3])} ... ({n} ranks, limit {cfg['timeout_s']} s)", flush=True)
    for attempt in range(LAUNCH_ATTEMPTS):  # as chronompi mpirun does: a launcher that never started is retried
        proc, tail, timed_out = _run_logged(argv, env, log, float(cfg["timeout_s"]), f"{bench} {n} ranks")
        if timed_out or not launcher_failed(proc.returncode or 0, "".join(tail)) or attempt == LAUNCH_ATTEMPTS - 1:
            break
        print(f"   the launcher did not start (exit {proc.returncode}); trying again", flush=True)
        time.sleep(0.5 * (attempt + 1))
    pfile.unlink(missing_ok=True)
    wall = time.perf_counter() - t0
    status = {
        "bench": bench,
        **({"label": label} if label else {}),
        "ranks": n,
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "wall_s": round(wall, 2),
    }
    if proc.returncode != 0 or timed_out:
        print(f"!! {bench} failed (rc={proc.returncode}, timed out={timed_out}); see {log}", flush=True)
        print("".join(tail[-15:]), flush=True)
        status["tail"] = "".join(tail[-15:])
    return status


def _run_logged(
    argv: list[str], env: dict[str, str], log: Path, timeout: float, label: str
) -> tuple[subprocess.Popen[str], list[str], bool]:
    """One mpirun, its output appended to ``log`` (result lines echoed); (process, last 40 lines, timed out)."""
    with log.open("a") as lf:
        lf.write(f"\n== {label}: {' '.join(argv)}\n")
        lf.flush()
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        tail: list[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lf.write(line)
                tail.append(line)
                del tail[:-40]
                if line.startswith("{"):
                    print("  " + line[:200].rstrip(), flush=True)

        th = threading.Thread(target=pump, daemon=True)
        th.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc)
        th.join(timeout=10)
    return proc, tail, timed_out


def _kill(proc: subprocess.Popen[str]) -> None:
    """Terminate the job we started (its own process group), then kill it if it lingers."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    cfg = compose(overrides)
    if cfg["publish"]:
        sys.path.insert(0, str(PERF))
        from benchlib import git_commit

        if git_commit().endswith("+dirty"):
            print("run.py: publish=true needs a clean tree (commit first): published results must trace to a commit")
            return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(cfg["out"]) if cfg["out"] else PERF / "out" / f"{stamp}-{socket.gethostname()}.jsonl"
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    statuses = []
    for bench, n, params in jobs(cfg):
        if bench == "ingest" and cfg["isolate"]:
            statuses += ingest_jobs(n, params, out, cfg, log)
        else:
            statuses.append(launch(bench, n, params, out, cfg, log))
    wall = time.perf_counter() - t0
    suite = {
        "bench": "suite",
        "kind": "suite",
        "overrides": overrides,
        "config": cfg,
        "jobs": statuses,
        "wall_s": round(wall, 2),
        "host": socket.gethostname(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with out.open("a") as f:
        f.write(json.dumps(suite) + "\n")
    print(f"== suite done in {wall:.1f} s: {out}", flush=True)
    if cfg["summary"] or cfg["publish"]:
        sys.path.insert(0, str(PERF))
        import plot

        md = plot.main([str(out), "--outdir", str(out.parent)])
        print(f"== summary: {md}", flush=True)
        if cfg["publish"]:
            results = PERF / "results"
            if out.parent.resolve() != results.resolve():
                shutil.copy2(out, results / out.name)
            md = plot.main([str(results / out.name), "--outdir", str(results)])
            print(f"== published: {md} and its PNGs, {results / out.name}", flush=True)
        rows = plot.load([out])
        if plot.peer_rows(rows):
            head = f"== peers ({plot.how(rows)}, same events; median over rounds)"
            print(f"\n{head}\n" + plot.peer_table(rows), flush=True)
    return 0 if all(s["returncode"] == 0 and not s["timed_out"] for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
