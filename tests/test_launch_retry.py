"""`chronompi mpirun` tries a launch again only when Open MPI's launcher failed before any rank ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from chronompi.launch import PMIX_LISTENER_FAILED, exec_mpi

LISTENER = "The PMIx server's listener thread failed to start. We cannot\\ncontinue."


def _fake_launcher(tmp_path: Path, fail_times: int, rc_after: int) -> list[str]:
    """A stand-in for mpirun that fails like Open MPI's launcher ``fail_times`` times, then exits ``rc_after``."""
    script = tmp_path / "fake_mpirun.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            count = Path({str(tmp_path / "count")!r})
            n = int(count.read_text()) if count.exists() else 0
            count.write_text(str(n + 1))
            if n < {fail_times}:
                sys.stderr.write("{LISTENER}\\n")
                sys.exit({PMIX_LISTENER_FAILED})
            print("ran", n)
            sys.stderr.write("rank said something\\n")
            sys.exit({rc_after})
            """
        )
    )
    return [sys.executable, str(script)]


def test_listener_failure_is_tried_again(tmp_path: Path, capfd) -> None:  # type: ignore[no-untyped-def]
    assert exec_mpi(_fake_launcher(tmp_path, 2, 0), os.environ) == 0
    assert (tmp_path / "count").read_text() == "3"
    out, err = capfd.readouterr()
    assert "ran 2" in out and "rank said something" in err and err.count("trying again") == 2


def test_gives_up_after_three_launches_and_other_failures_are_not_retried(tmp_path: Path) -> None:
    assert exec_mpi(_fake_launcher(tmp_path, 5, 0), os.environ) == PMIX_LISTENER_FAILED
    assert (tmp_path / "count").read_text() == "3"
    other = tmp_path / "other"
    other.mkdir()
    # exit 213 without the launcher's message is the program's own code: never run twice
    assert exec_mpi([sys.executable, "-c", f"import sys; sys.exit({PMIX_LISTENER_FAILED})"], os.environ) == 213
    assert exec_mpi(_fake_launcher(other, 0, 7), os.environ) == 7
    assert (other / "count").read_text() == "1"


def test_killing_chronompi_mpirun_stops_the_launcher(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    child = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    code = f"import os, sys, chronompi.launch as L; L.exec_mpi([sys.executable, '-c', {child!r}], os.environ)"
    wrapper = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    wrapper.send_signal(signal.SIGKILL)
    wrapper.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the launcher outlived chronompi mpirun")
