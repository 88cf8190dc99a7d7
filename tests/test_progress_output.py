"""What ``chronompi run`` prints: progress of the whole run (every client), plain text without escape codes when
the output is not a terminal.

Before: the bar counted client 0 only ("client 0 of 5") and, since Open MPI gives its ranks a pseudo-terminal
even when mpirun's output goes to a file, the file got ANSI escapes, cursor codes and progress frames.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chronompi.report import stdout_is_terminal
from chronompi.workload import _Lines, progress_mode


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
    assert re.fullmatch(
        r"progress: 9,000/9,000 events of 3 clients, [\d,]+ events/s on average, [\d.]+ s; 1 keeper, 1 grapher",
        lines[-1],
    ), lines[-1]
    assert "client 0 of" not in text
    assert "store: " in text and "events stored" in text  # the summary, plain


def test_lines_are_throttled_and_end_with_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _Lines(total=1000, n_clients=2)
    for i, t in enumerate([0.0, 0.5, 1.0, 2.1, 2.5]):
        lines.update(i * 100, 1000.0, t, "1 keeper, 1 grapher", last=False)
    lines.update(1000, 0.0, 3.0, "", last=True)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "progress: 0/1,000 events of 2 clients, 1,000 events/s, 0.0 s; 1 keeper, 1 grapher",
        "progress: 300/1,000 events of 2 clients, 1,000 events/s, 2.1 s; 1 keeper, 1 grapher",
        "progress: 1,000/1,000 events of 2 clients, 333 events/s on average, 3.0 s",
    ]


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
