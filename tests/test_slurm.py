"""A real Slurm on this machine runs jobscripts/chronompi.sbatch; the store the job leaves is checked.

The session fixture brings up a one-node Slurm with .ci/slurm-up.sh (slurm-wlm and munge from Debian's
packages; needs root). Where that is impossible the tests skip with the reason, unless
CHRONOMPI_REQUIRE_SLURM=1 makes that a failure. Every sbatch is bounded by a timeout; a job still
queued or running when the test ends is cancelled by its (unique) name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import chronompi
from chronompi.store.format import read_runs

pytestmark = [pytest.mark.mpi, pytest.mark.slurm, pytest.mark.timeout(720)]

ROOT = Path(__file__).resolve().parent.parent
SLURM_UP = ROOT / ".ci" / "slurm-up.sh"
SBATCH = ROOT / "jobscripts" / "chronompi.sbatch"
RANKS = 8  # per_node layout on one node: visor, keeper, grapher and 5 clients
EVENTS = 2000  # per client
UP_TIMEOUT = 300
JOB_TIMEOUT = 300


def _unavailable(why: str) -> None:
    if os.environ.get("CHRONOMPI_REQUIRE_SLURM") == "1":
        pytest.fail(f"Slurm is required (CHRONOMPI_REQUIRE_SLURM=1) but {why}")
    pytest.skip(why)


def slurm_up(started: Path) -> subprocess.CompletedProcess[str]:
    """Run .ci/slurm-up.sh; it appends the daemons it started (those not running before) to ``started``."""
    env = dict(os.environ, SLURM_UP_STARTED=str(started))
    return subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=UP_TIMEOUT, env=env)


def slurm_down(started: Path) -> list[str]:
    """Stop what ``slurm_up`` started (last started first) and nothing else; returns those names."""
    names = started.read_text().split() if started.exists() else []
    if names:
        subprocess.run(["bash", str(SLURM_UP), "--stop", *reversed(names)], capture_output=True, timeout=120)
        started.unlink()
    return names


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A one-node Slurm, up and idle (or skip with the reason); at the end of the session the daemons that
    were started for it (munged, slurmctld, slurmd) are stopped again, those already running are left alone."""
    if not sys.platform.startswith("linux"):
        _unavailable("the local Slurm needs Linux")
    started = tmp_path_factory.mktemp("slurm") / "started"
    try:
        try:
            r = slurm_up(started)
        except subprocess.TimeoutExpired:
            _unavailable(f".ci/slurm-up.sh did not finish in {UP_TIMEOUT} s")
        if r.returncode != 0:
            lines = (r.stderr or r.stdout).strip().splitlines()
            _unavailable(f".ci/slurm-up.sh failed: {lines[-1] if lines else f'exit status {r.returncode}'}")
        for tool in ("sbatch", "scancel", "squeue", "srun"):
            if shutil.which(tool) is None:
                _unavailable(f"{tool} is not on PATH after .ci/slurm-up.sh")
        yield
    finally:
        slurm_down(started)


def daemons() -> set[str]:
    """Names of the Slurm and munge daemons running now (zombies not counted: nothing may reap them here)."""
    out = set()
    for p in Path("/proc").glob("[0-9]*"):
        try:
            name, state = (p / "comm").read_text().strip(), (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            out.add(name)
    return out & {"munged", "slurmctld", "slurmd"}


def test_slurm_up_stops_only_what_it_started(slurm: None, tmp_path: Path) -> None:
    """Daemons already running are not recorded (so never stopped); one that slurm-up starts is, and --stop
    ends exactly it. Here slurmd is stopped and brought back, as a test session that started it would."""
    record = tmp_path / "started"
    r = slurm_up(record)
    assert r.returncode == 0, r.stderr
    assert not record.exists() or record.read_text() == "", "nothing was started: everything was up"
    subprocess.run(["bash", str(SLURM_UP), "--stop", "slurmd"], capture_output=True, timeout=120, check=True)
    assert "slurmd" not in daemons()
    r = slurm_up(record)  # brings slurmd back (and waits until the node takes jobs)
    assert r.returncode == 0, r.stderr
    assert record.read_text().split() == ["slurmd"]
    assert daemons() == {"munged", "slurmctld", "slurmd"}
    record.write_text("slurmd\n")
    assert slurm_down(record) == ["slurmd"] and daemons() == {"munged", "slurmctld"}
    assert slurm_up(record).returncode == 0 and daemons() == {"munged", "slurmctld", "slurmd"}  # for the others


@pytest.fixture
def job_name() -> Iterator[str]:
    """A unique job name; whatever job carries it is cancelled when the test ends (a hang leaves nothing queued)."""
    name = f"chronompi-test-{uuid.uuid4().hex[:12]}"
    yield name
    subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=30)
    left = subprocess.run(["squeue", "-h", f"--name={name}", "-o", "%i %T"], capture_output=True, text=True, timeout=30)
    assert not left.stdout.strip(), f"job {name} is still queued after scancel: {left.stdout}"


def job_env(**extra: str) -> dict[str, str]:
    """This environment minus Slurm's own variables (SBATCH_* would override options), plus this venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if (Path(sys.prefix) / "bin" / "activate").is_file():
        env["CHRONOMPI_VENV"] = sys.prefix
    env.update(extra)
    return env


def sbatch(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[int, str, Path]:
    """``sbatch --wait`` the job script with RANKS ranks on one node; returns (exit status, job id, output file)."""
    argv = [
        "sbatch",
        "--wait",
        "--parsable",
        f"--job-name={name}",
        "--nodes=1",
        f"--ntasks={RANKS}",
        "--overcommit",  # 8 ranks on 2 CPUs
        "--time=5",  # minutes: Slurm ends the job itself if everything else fails
        f"--chdir={tmp_path}",
        f"--output={tmp_path}/job-%j.out",
        str(SBATCH),
    ]
    try:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=30)
        outs = "\n".join(p.read_text(errors="replace")[-4000:] for p in tmp_path.glob("job-*.out"))
        pytest.fail(f"sbatch --wait did not return in {JOB_TIMEOUT} s; job {name} cancelled. Its output:\n{outs}")
    job_id = r.stdout.strip().split(";")[0]
    assert job_id.isdigit(), f"sbatch --parsable printed no job id: stdout {r.stdout!r} stderr {r.stderr!r}"
    out = tmp_path / f"job-{job_id}.out"
    assert out.is_file(), f"job {job_id} wrote no output file {out}: sbatch stderr {r.stderr!r}"
    return r.returncode, job_id, out


def check_store(store: Path, clients: int) -> int:
    """Every event of the run is in the store, each story in total order, seq dense from 0 per client."""
    runs = sorted((store / "runs").glob("*.json"))
    assert len(runs) == 1, f"expected one run record in {store}/runs, found {[p.name for p in runs]}"
    m = json.loads(runs[0].read_text())
    assert m["status"] == "complete", m["status"]
    assert not m["failures"], m["failures"]
    assert m["events_logged"] == m["events_stored"] == clients * EVENTS, (m["events_logged"], m["events_stored"])
    total = 0
    with chronompi.open_store(store) as st:
        stories = [(c, s) for c in st.chronicles() for s in st.stories(c)]
        assert stories, "the store holds no story"
        for c, s in stories:
            ev = st.replay(c, s)
            n = len(ev)
            total += n
            keys = np.lexsort((ev["seq"], ev["client"], ev["time"]))
            assert np.array_equal(keys, np.arange(n)), f"{c}/{s}: replay is not in total order (time, client, seq)"
            clients_here = np.unique(ev["client"])
            for cid in clients_here:
                seq = ev["seq"][ev["client"] == cid]
                assert np.array_equal(seq, np.arange(len(seq))), f"{c}/{s} client {cid:#x}: seq not dense from 0"
            assert all(len(p) == 64 for p in ev["payload"]), f"{c}/{s}: a payload is not 64 B"
            assert len(clients_here) == clients, f"{c}/{s}: {len(clients_here)} clients wrote, expected {clients}"
    assert total == m["events_stored"], f"replay returned {total} events, the run record says {m['events_stored']}"
    return total


def manifest(store: Path) -> dict:
    return json.loads(next((store / "runs").glob("*.json")).read_text())


def run_workload(tmp_path: Path, job_name: str, **env: str) -> tuple[Path, str, str]:
    store = tmp_path / "store"
    local = tmp_path / "node-local"  # stands in for the node-local $SLURM_TMPDIR that sites set
    local.mkdir()
    rc, job_id, out = sbatch(
        tmp_path,
        job_name,
        job_env(
            STORE=str(store),
            SLURM_TMPDIR=str(local),
            WORKLOAD=f"workload.events={EVENTS} client.batch_ms=10 keeper.window_ms=20",
            **env,
        ),
    )
    text = out.read_text(errors="replace")
    assert rc == 0, f"job {job_id} exited {rc}:\n{text[-6000:]}"
    assert str(store) in text, f"the job output does not name the store {store}:\n{text[-3000:]}"
    assert "verify: OK" in text, f"chronompi run --verify did not pass:\n{text[-3000:]}"
    m = manifest(store)
    assert m["config"]["layout"]["per_node"] is True, m["config"]["layout"]
    clients = len(m["roles"]["client"])
    assert clients == RANKS - 3, f"per_node on one node should leave {RANKS - 3} clients, got {clients}"
    assert check_store(store, clients) == clients * EVENTS
    # the staging tier was the node-local directory, and nothing is left in it
    stagings = {g["staging"] for g in m["graphers"]}
    assert all(Path(s).parent == local for s in stagings), f"staging {stagings} is not under $SLURM_TMPDIR {local}"
    assert not list(local.rglob("*.h5.part")), "open segments were left in the staging directory"
    # the run log sits in a directory named after the job
    log = tmp_path / "chronompi-runs" / job_id / "run.log"
    assert log.is_file() and "verify: OK" in log.read_text(errors="replace"), f"no run log at {log}"
    return store, job_id, text


def test_sbatch_workload_mpirun(slurm: None, tmp_path: Path, job_name: str) -> None:
    """The default launcher: the pip Open MPI's mpirun (--bind-to none) inside the allocation."""
    _, _, text = run_workload(tmp_path, job_name)
    assert "chronompi mpirun -n 8" in text and "--bind-to none" in text


def test_sbatch_workload_srun_pmix(slurm: None, tmp_path: Path, job_name: str) -> None:
    """LAUNCHER=srun: Slurm starts the ranks itself (srun --mpi=pmix), as with a site MPI."""
    mpi = subprocess.run(["srun", "--mpi=list"], capture_output=True, text=True, timeout=30)
    if "pmix" not in mpi.stdout + mpi.stderr:
        pytest.skip(f"this Slurm has no pmix plugin (srun --mpi=list: {(mpi.stdout + mpi.stderr).split()})")
    _, _, text = run_workload(tmp_path, job_name, LAUNCHER="srun")
    assert "srun --mpi=pmix -n 8" in text


def test_sbatch_failure_is_the_exit_status(slurm: None, tmp_path: Path, job_name: str) -> None:
    """A run that fails (here: a bad layout) makes the job, and so sbatch --wait, exit non-zero."""
    rc, job_id, out = sbatch(
        tmp_path, job_name, job_env(STORE=str(tmp_path / "store"), WORKLOAD="layout.keepers=-1", VERIFY="0")
    )
    text = out.read_text(errors="replace")
    assert rc != 0, f"job {job_id} with layout.keepers=-1 exited 0:\n{text[-3000:]}"
    assert "keepers=-1" in text, f"the job output does not say what was wrong:\n{text[-3000:]}"


def test_sbatch_record_runs_an_unmodified_program(slurm: None, tmp_path: Path, job_name: str) -> None:
    """RECORD=1: the program (it never imports chronompi) gets all RANKS tasks as MPI.COMM_WORLD; its logging
    records are in the store, each exactly once, in total order."""
    store = tmp_path / "store"
    app = Path(__file__).parent / "apps" / "unmodified" / "jacobi.py"
    env = job_env(STORE=str(store), RECORD="1", PROGRAM=f"python {app}", ARGS="20 5")
    rc, job_id, out = sbatch(tmp_path, job_name, env)
    text = out.read_text(errors="replace")
    assert rc == 0, f"job {job_id} exited {rc}:\n{text[-6000:]}"
    assert f"jacobi: {RANKS} ranks" in text and f"chronompi record -n {RANKS}" in text
    with chronompi.open_store(store) as st:
        ev = st.replay("jacobi", "log")
    keys = list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist()))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    messages = sorted(json.loads(p)["message"] for p in ev["payload"])
    want = sorted(
        [f"iteration {i} rank {r} of {RANKS} residual" for i in range(5) for r in range(RANKS)]
        + [f"finished 5 iterations on {RANKS} ranks"]
    )
    assert [m.rsplit(" ", 1)[0] if m.startswith("iteration") else m for m in messages] == want
    assert len(np.unique(ev["client"])) == RANKS


def test_scancel_batch_signal_drains_the_run(slurm: None, tmp_path: Path, job_name: str) -> None:
    """``scancel --batch --signal=TERM`` (what ``#SBATCH --signal=B:TERM@N`` sends before the time limit) reaches
    the job script, which passes it to ``chronompi mpirun``: the run drains. Every event the clients logged
    before the signal is in the store once with its payload, the run record says "stopped", the job output has
    chronompi's one line, and the job exits 143."""
    from test_stop import check_stopped, spec, wait_for_events  # (tests/test_stop.py: the same app, same check)

    store, refdir = tmp_path / "store", tmp_path / "ref"
    refdir.mkdir()
    crashy = Path(__file__).parent / "apps" / "crashy.py"
    env = job_env(STORE=str(store), CHRONOMPI_TEST_HANG_S="240")
    argv = ["sbatch", "--parsable", f"--job-name={job_name}", "--nodes=1", "--ntasks=5", "--overcommit", "--time=5"]
    argv += [f"--chdir={tmp_path}", f"--output={tmp_path}/job-%j.out", str(SBATCH)]
    argv += [sys.executable, str(crashy), str(store), str(refdir), json.dumps(spec())]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    job_id = r.stdout.strip().split(";")[0]
    assert r.returncode == 0 and job_id.isdigit(), r.stdout + r.stderr
    out = tmp_path / f"job-{job_id}.out"

    class Job:  # what wait_for_events polls: the job, as a process would be
        stdout = None

        @staticmethod
        def poll() -> int | None:
            q = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
            if q.stdout.strip():
                return None
            raise AssertionError(f"job {job_id} ended early:\n{out.read_text(errors='replace')[-4000:]}")

    wait_for_events(Job, refdir, 1000, timeout=JOB_TIMEOUT)  # type: ignore[arg-type]
    signalled = time.time_ns()
    subprocess.run(["scancel", "--batch", "--signal=TERM", job_id], check=True, timeout=30)
    t0 = time.monotonic()
    while subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True, timeout=30).stdout.strip():
        assert time.monotonic() - t0 < 120, f"job {job_id} still runs 120 s after the signal"
        time.sleep(0.5)
    text = out.read_text(errors="replace")
    assert "exit:     143 after" in text, text[-4000:]
    lines = [ln for ln in text.splitlines() if "chronompi: stopped by SIGTERM" in ln]
    assert len(lines) == 1 and "every one logged before the signal among them" in lines[0], text[-4000:]
    assert check_stopped(store, refdir, signalled) > 0


def test_time_limit_with_early_signal_stops_the_run(slurm: None, tmp_path: Path, job_name: str) -> None:
    """A real time limit: ``--time=2 --signal=B:TERM@60``, as docs/clusters.md advises. Slurm signals the job
    script about a minute before the limit (up to a minute earlier still: its timer is coarse), the script
    passes it to ``chronompi mpirun``, the run drains before the limit: the run record "stopped" by SIGTERM,
    every event logged before the visor saw the signal in the store once, one line, exit 143."""
    from test_stop import check_stopped, spec

    store, refdir = tmp_path / "store", tmp_path / "ref"
    refdir.mkdir()
    crashy = Path(__file__).parent / "apps" / "crashy.py"
    env = job_env(STORE=str(store), CHRONOMPI_TEST_HANG_S="280")
    app = {**spec(), "seconds": 300}  # logs until the signal
    argv = ["sbatch", "--parsable", f"--job-name={job_name}", "--nodes=1", "--ntasks=5", "--overcommit"]
    argv += ["--time=2", "--signal=B:TERM@60", f"--chdir={tmp_path}", f"--output={tmp_path}/job-%j.out", str(SBATCH)]
    argv += [sys.executable, str(crashy), str(store), str(refdir), json.dumps(app)]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    job_id = r.stdout.strip().split(";")[0]
    assert r.returncode == 0 and job_id.isdigit(), r.stdout + r.stderr
    out = tmp_path / f"job-{job_id}.out"
    t0 = time.monotonic()
    while subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True, timeout=30).stdout.strip():
        assert time.monotonic() - t0 < 240, f"job {job_id} still runs after 240 s (its limit is 120 s)"
        time.sleep(1)
    text = out.read_text(errors="replace")
    assert "got a stop signal: draining the run" in text and "exit:     143 after" in text, text[-4000:]
    assert "DUE TO TIME LIMIT" not in text, text[-4000:]  # it ended before Slurm had to end it
    lines = [ln for ln in text.splitlines() if "chronompi: stopped by SIGTERM" in ln]
    assert len(lines) == 1 and "every one logged before the signal among them" in lines[0], text[-4000:]
    run = read_runs(store)[0]
    assert check_stopped(store, refdir, run["reason"]["noted_ns"]) > 0
