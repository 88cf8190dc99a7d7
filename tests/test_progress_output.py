"""What ``chronompi run`` prints: progress of the whole run (every client), plain text without escape codes when
the output is not a terminal.

Before: the bar counted client 0 only ("client 0 of 5") and, since Open MPI gives its ranks a pseudo-terminal
even when mpirun's output goes to a file, the file got ANSI escapes, cursor codes and progress frames.

Wall time and rate (chronompi/report.py) are one definition for the progress line, the summary table, the run
record and the one line a program's session prints. Before, the progress line's clock started after the clients'
start-up and stopped at the last count (255 k events/s "on average" in 0.2 s), while the table's started at the
visor's start and included the drain (141 k events/s in 0.42 s), for the same run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import APPS, manifest, mpirun

import chronompi
from chronompi.protocol import client_id
from chronompi.report import stdout_is_terminal, summary_line
from chronompi.workload import RecentRate, _Bar, _Lines, progress_mode

sys.path.insert(0, str(APPS))
from fill_store import payload  # noqa: E402

LAST = re.compile(
    r"progress: ([\d,]+)/([\d,]+) events of 3 clients in ([\d.]+) s: ([\d,]+) events/s; 1 keeper, 1 grapher"
)


@pytest.mark.mpi
def test_run_into_a_file_prints_plain_progress_of_all_clients(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "chronompi"
    if not exe.exists():
        pytest.skip("the chronompi console script is not installed (pip install -e .)")
    out = tmp_path / "run.out"
    env = {k: v for k, v in os.environ.items() if k not in ("CHRONOMPI_STDOUT_TTY", "SLURM_JOB_ID", "PBS_JOBID")}
    cmd = [str(exe), "mpirun", "-n", "6", str(exe), "run", "workload.events=3000", "storage.staging=none"]
    with out.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, timeout=180)
    text = out.read_text()
    assert r.returncode == 0, text
    assert "\x1b" not in text, "escape codes in a file"
    lines = [line for line in text.splitlines() if line.startswith("progress: ")]
    assert lines, text
    # 6 ranks = visor, keeper, grapher, 3 clients: the last line counts all of them
    last = LAST.fullmatch(lines[-1])
    assert last, lines[-1]
    assert last[1] == last[2] == "9,000"
    assert "client 0 of" not in text
    assert "store: " in text and "events stored" in text  # chronompi run keeps its table, plain
    assert "per role" in text and "wall time" in text

    # the same clock and the same definitions in the table, the run record and the progress line
    run = manifest(tmp_path / "chronompi-store")
    wall, events = run["wall_s"], run["events_stored"]
    assert events == 9000 and run["events_logged"] == 9000
    assert run["end"] - run["start"] == pytest.approx(wall * 1e9, abs=1e6)  # what chronompi stats shows
    assert events / run["rate_events_s"] == pytest.approx(wall, abs=6e-4)  # (wall_s is rounded to 1 ms)
    assert run["start"] <= run["first_time"] <= run["last_time"] <= run["end"]  # every event inside the wall time
    assert f"{wall:.2f} s" in text and f"{run['rate_events_s']:,.0f} events/s" in text  # the table shows them
    shown_s, shown_rate = float(last[3]), int(last[4].replace(",", ""))
    assert 9000 / shown_rate == pytest.approx(shown_s, abs=6e-3)  # rate = events / wall time so far (0.01 s shown)
    # the last progress line comes after the last event was logged and before the run ended, on the same
    # clock that starts with the session (the old one started after the clients' start-up: shorter than this)
    logging_ended_s = (run["last_time"] - run["start"]) / 1e9
    assert logging_ended_s - 0.05 <= shown_s <= wall + 0.05, (logging_ended_s, shown_s, wall)
    assert shown_rate >= run["rate_events_s"] * 0.95  # so its rate is the summary's or a little higher


@pytest.mark.mpi
def test_a_program_gets_one_line_on_stderr(tmp_path: Path) -> None:
    """session() in a program: no table, one line on the visor's stderr; events stored, the store and the run."""
    store, refdir = tmp_path / "store", tmp_path / "refs"
    refdir.mkdir()
    spec = {"cfg": {"storage": {"staging": "none"}}, "events": 200, "rate": 0}
    r = mpirun(6, "fill_store.py", str(store), str(refdir), json.dumps(spec), timeout=180)
    run = manifest(store)
    assert run["events_stored"] == 600
    lines = [line for line in r.stderr.splitlines() if line.startswith("chronompi: ")]
    assert lines == [summary_line(run)], r.stderr  # once, from the visor, with the record's figures
    assert re.fullmatch(
        rf"chronompi: 600 events in {re.escape(str(store.resolve()))} \(run {run['run']}, [\d.]+ s, [\d,]+ events/s; "
        r"[\d.]+ s since rank 0's process started\); "
        rf"chronompi stats {re.escape(str(store.resolve()))} for details",
        lines[0],
    ), lines[0]
    assert run["process_s"] > run["wall_s"]  # the job's launch and imports are outside the session
    assert "wall time" not in r.stdout + r.stderr and "per role" not in r.stdout + r.stderr  # no table
    rank_of = {client_id(int(run["run"], 16), r): r for r in range(6)}
    seen = set()
    with chronompi.open_store(store) as st:  # what the line counts is in the store, once, byte for byte
        for s in st.stories("c"):
            ev = st.replay("c", s)
            for cid, seq, data in zip(ev["client"].tolist(), ev["seq"].tolist(), ev["payload"].tolist()):
                assert (s, cid, seq) not in seen, f"{s}: event ({cid:x}, {seq}) stored twice"
                seen.add((s, cid, seq))
                assert data == payload(rank_of[cid], int(s[1:]), seq)
    assert len(seen) == 600


def test_lines_are_throttled_and_end_with_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _Lines(total=1000, n_clients=2)
    for i, t in enumerate([0.0, 0.5, 1.0, 2.1, 2.5]):
        lines.update(i * 100, 1000.0, t, "1 keeper, 1 grapher", last=False)
    lines.update(1000, 0.0, 3.0, "", last=True)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "progress: 0/1,000 events of 2 clients in 0.00 s: 0 events/s (now 1,000/s); 1 keeper, 1 grapher",
        "progress: 300/1,000 events of 2 clients in 2.10 s: 143 events/s (now 1,000/s); 1 keeper, 1 grapher",
        "progress: 1,000/1,000 events of 2 clients in 3.00 s: 333 events/s",
    ]


def test_recent_rate_when_the_display_loop_comes_round_late() -> None:
    """The rate of the last second, also when the loop that asks for it was away longer than a second (a busy
    machine): it was 0 events/s then, in every line of a run redirected to a file, while the count rose."""
    r = RecentRate(span_s=1.0)
    assert r.add(0.0, 0) == 0.0
    assert r.add(2.5, 29_000) == pytest.approx(29_000 / 2.5)
    assert r.add(2.6, 30_000) == pytest.approx(30_000 / 2.6)  # (2.5, 29,000) is not yet a second old
    assert r.add(3.6, 40_000) == pytest.approx(11_000 / 1.1)  # (2.5, ...) is the newest sample a second old
    assert r.add(5.0, 40_000) == 0.0  # nothing logged for over a second


@pytest.mark.parametrize("width", [60, 80, 140])
def test_bar_on_a_terminal_never_cuts_the_count(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """On an 80-column terminal rich squeezed every column, and the count read ``29000/1000...``."""
    import io

    monkeypatch.setenv("TERM", "xterm-256color")  # a terminal that redraws (rich draws no frames on TERM=dumb)

    from rich.console import Console

    out = io.StringIO()
    bar = _Bar(1_000_000, 5, console=Console(file=out, width=width, force_terminal=True, color_system=None))
    members = "2 keepers, 2 graphers, 2 spares (epoch 3, changing)"
    bar.update(29_000, 300_000.0, 1.25, members, last=False)
    bar.progress.refresh()
    bar.update(1_000_000, 300_000.0, 3.5, members, last=True)
    frames = [f for f in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())) if f.strip()]
    assert any("29000/1000000 1.2 s" in f for f in frames), frames
    assert "1000000/1000000 3.5 s" in frames[-1], frames
    assert all(len(f) <= width for f in frames), frames
    if width >= 140:
        assert members in frames[-1], frames


def test_summary_line_names_what_went_wrong() -> None:
    s = {"run": "ab", "store": "/s", "events_stored": 10, "events_logged": 12, "wall_s": 2.0, "rate_events_s": 5.0}
    s |= {"dropped": 2, "events_lost": 0, "failures": [{"rank": 3, "host": "n1", "error": "ValueError: x"}]}
    s |= {"process_s": 7.25}
    assert summary_line(s) == (
        "chronompi: 10 events in /s (run ab, 2.00 s, 5 events/s; 7.2 s since rank 0's process started); "
        "12 logged; 2 dropped (client.policy=drop); "
        "rank 3 on n1 failed: ValueError: x; chronompi stats /s for details"
    )


def test_terminal_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("PBS_JOBID", raising=False)
    monkeypatch.setenv("CHRONOMPI_STDOUT_TTY", "0")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a rank's pty under Open MPI
    assert not stdout_is_terminal() and progress_mode() == "lines"
    monkeypatch.setenv("CHRONOMPI_STDOUT_TTY", "1")
    assert stdout_is_terminal() and progress_mode() == "bar"
    monkeypatch.delenv("CHRONOMPI_STDOUT_TTY")
    monkeypatch.setenv("TERM", "dumb")
    assert not stdout_is_terminal()
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    assert progress_mode() is None
