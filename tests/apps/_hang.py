"""Hang guard for test apps: dump every thread's traceback, then exit, before the test's timeout.

Dumping and exiting are separated by a few seconds so that every rank gets to dump
before mpirun kills the job on the first exit. Processes this one started (the service ranks a
program run alone spawns) are sent SIGABRT at the same time: with PYTHONFAULTHANDLER=1 in their
environment they dump their own tracebacks on the same stderr.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (by /proc's parent links; empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _python(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"python" in f.read().split(b"\0", 1)[0]
    except OSError:
        return False


def arm(default_s: float = 100.0) -> None:
    """Arm the guard in an app process (never call it at import time of a module tests import)."""
    limit = float(os.environ.get("CHRONOMPI_TEST_HANG_S", default_s))
    faulthandler.dump_traceback_later(limit, exit=False)

    def _exit() -> None:
        time.sleep(limit)
        for pid in _descendants(os.getpid()):
            if _python(pid):
                try:
                    os.kill(pid, signal.SIGABRT)
                except OSError:
                    pass
        time.sleep(4)
        os._exit(70)

    threading.Thread(target=_exit, daemon=True, name="hang-guard").start()
