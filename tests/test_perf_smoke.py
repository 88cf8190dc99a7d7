"""Smoke test of the perf suite: runs ``perf/run.py`` on a tiny size and checks the JSON lines it writes.

Correctness only (fields present, numbers positive, events stored == events logged): never timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "perf" / "run.py"

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

TINY = [
    "layout.clients=2",
    "timeout_s=45",
    "profiles.quick.payloads=[64]",
    "peer_shapes=[arrays,made]",
    "profiles.quick.events=3000",
    "profiles.quick.rounds=1",
    "profiles.quick.baseline_seconds=0.2",
    "profiles.quick.baseline_events=2000",
    "profiles.quick.rpc_seconds=0.2",
    "profiles.quick.client_calls=2000",
    "profiles.quick.client_payloads=[64]",
    "profiles.quick.science_steps_us=[10]",
    "profiles.quick.science_seconds=0.05",
    "profiles.quick.durable_seconds=0.5",
    "profiles.quick.scaling.weak_events=2000",
    "profiles.quick.scaling.strong_total=3000",
    "profiles.quick.scaling.configs=[[1,1,1]]",
]

MACHINE_KEYS = {"hostname", "cores", "mpi_library", "h5py", "hdf5", "git_commit", "date", "ranks"}


def _positive(row: dict, *keys: str) -> None:
    for k in keys:
        assert isinstance(row.get(k), (int, float)) and row[k] > 0, (
            f"{row.get('bench')}/{row.get('kind')}: {k}={row.get(k)!r}"
        )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    d = tmp_path_factory.mktemp("perf")
    out = d / "results.jsonl"
    argv = [sys.executable, str(RUN), f"out={out}", f"scratch={d / 'scratch'}", *TINY]
    try:
        r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=200)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"perf/run.py hung:\n{exc.stdout}\n{exc.stderr}")
    assert r.returncode == 0, f"perf/run.py exited {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return rows, d


def test_every_bench_wrote_results(results: tuple[list[dict], Path]) -> None:
    rows, _ = results
    kinds = {(r["bench"], r["kind"]) for r in rows}
    for want in [
        ("ingest", "chronompi"),
        ("ingest", "baseline"),
        ("client_cost", "log_call"),
        ("client_cost", "science_loop"),
        ("durable", "peak"),
        ("durable", "durable"),
        ("scaling", "weak"),
        ("scaling", "strong"),
        ("suite", "suite"),
    ]:
        assert want in kinds, f"no {want} row; got {sorted(kinds)}"
    suite = next(r for r in rows if r["kind"] == "suite")
    assert all(j["returncode"] == 0 and not j["timed_out"] for j in suite["jobs"]), suite["jobs"]
    for r in rows:
        if r["kind"] != "suite":
            assert MACHINE_KEYS <= set(r["machine"]), r["machine"].keys()
            assert r["machine"]["mpi_library"] and r["machine"]["cores"] > 0


def test_ingest_rows(results: tuple[list[dict], Path]) -> None:
    rows, _ = results
    chron = [r for r in rows if r["kind"] == "chronompi"]
    assert {r["mode"] for r in chron} == {"log", "log_many", "log_made", "log_many_made"}
    for r in chron:
        _positive(r, "events", "seconds", "events_per_s", "mb_per_s", "cpu_s_per_million", "log_seconds")
        assert r["events_stored"] == r["events"] and r["dropped"] == 0
        assert {"transport", "storage", "logging", "rpc", "h5py"} <= set(r["vs"])
        assert all(v > 0 for v in r["vs"].values())
        assert r["events_per_s_min"] <= r["events_per_s"] <= r["events_per_s_max"]
        assert r["loadavg_start"] and r["loadavg_end"]
        if r.get("durable_method"):
            _positive(r, "samples", "durable_ms_p50", "durable_ms_p99", "durable_ms_max")
            assert r["unmatched"] == 0
    base = {r["baseline"]: r for r in rows if r["kind"] == "baseline"}
    assert set(base) == {"transport", "storage", "logging", "rpc"}
    for r in base.values():
        _positive(r, "events", "seconds", "events_per_s", "mb_per_s")


def test_peer_rows(results: tuple[list[dict], Path]) -> None:
    """h5py always runs; ADIOS2 runs when installed (the perf extra), else its row says why it was skipped."""
    rows, _ = results
    peers = {r["system"]: r for r in rows if r["kind"] == "peer"}
    assert {"h5py", "adios2", "adios2_mpi", "h5py made"} <= set(peers), sorted(peers)
    if not peers["adios2"].get("skipped"):  # (a skipped peer has one row, not one per shape)
        assert "adios2 made" in peers, sorted(peers)
    for name, r in peers.items():
        if r.get("skipped"):
            assert name != "h5py" and isinstance(r["skipped"], str)
            continue
        _positive(r, "events", "seconds", "events_per_s", "events_per_s_min", "cpu_s_per_million")
        assert r["events_stored"] == r["events"] == 2 * 3000, r
    chron = next(r for r in rows if r["kind"] == "chronompi")
    assert chron["events"] == peers["h5py"]["events"]  # the same events per client for every system


def test_client_cost_and_durable_rows(results: tuple[list[dict], Path]) -> None:
    rows, _ = results
    call = next(r for r in rows if r["kind"] == "log_call")
    _positive(call, "calls", "log_ns_p50", "log_ns_p99", "raw_ns_p50", "block_ns_per_call")
    assert call["log_ns_p99"] >= call["log_ns_p50"]
    sci = next(r for r in rows if r["kind"] == "science_loop")
    _positive(sci, "step_ns", "step_with_log_ns", "cpu_step_ns")
    dur = next(r for r in rows if r["bench"] == "durable" and r["kind"] == "durable")
    _positive(dur, "events", "target_rate", "peak_events_per_s")
    if dur.get("durable_method"):
        _positive(dur, "samples", "durable_ms_p50", "durable_ms_p99")
        assert dur["durable_ms_max"] >= dur["durable_ms_p99"] >= dur["durable_ms_p50"]
    else:
        assert dur["durable_skipped"]
    for r in (r for r in rows if r["bench"] == "scaling" and r["kind"] in ("weak", "strong")):
        _positive(r, "events", "events_per_s", "clients", "keepers", "graphers")


def test_summary_written(results: tuple[list[dict], Path]) -> None:
    _, d = results
    md = (d / "summary.md").read_text()
    assert "## Targets" in md and "## Ingest" in md
