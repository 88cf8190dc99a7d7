"""Stopping on a signal: SIGTERM, SIGINT or SIGUSR2 drains the session instead of killing the rank.

Slurm's time limit and ``scancel`` send SIGTERM to every process of the job (then SIGKILL after
KillWait, 30 s by default); a terminal's Ctrl-C sends SIGINT; ``chronompi mpirun`` turns a SIGTERM of
its own into SIGUSR2 for mpirun to pass on (Open MPI's launcher kills every rank about 0.2 s after it
passes on a SIGTERM). While a session runs over a job started by mpirun, every rank takes these
signals itself (:func:`install`): the handler only notes the first one, async-signal-safe; the
session acts on it from its own loops. The visor coordinates the drain (visor.py: every client sends
what it holds, the keepers hand everything to the graphers, the graphers close their segments, the
run record says "stopped"), prints one line and ends the job with the signal's exit status (128 + N).
A client whose visor did not get the signal tells it (client.py, from the ticker thread).

SIGUSR1 is an early warning, not a stop (Slurm's ``--signal=B:USR1@N`` through the job script, or
``scancel --batch --signal=USR1``): every client syncs what it logged so far (client.py starts a ``sync()``
from its ticker thread), and the job goes on. Service ranks take it and do nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
SYNC_SIGNAL = signal.SIGUSR1

_received: int | None = None
_sync_asked = 0  # SIGUSR1s received while a session ran
_owner = 0  # the process that installed the handlers


def _note(signum: int, _frame: Any) -> None:
    global _received
    if os.getpid() != _owner:  # a child forked by the program (multiprocessing, Parsl): the signal's own action
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _received is None:  # SIGUSR2: a SIGTERM that chronompi mpirun passed on
        _received = signal.SIGTERM if signum == signal.SIGUSR2 else signum


def _note_sync(signum: int, _frame: Any) -> None:
    global _sync_asked
    if os.getpid() != _owner:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _sync_asked += 1


def sync_asked() -> int:
    """How many SIGUSR1s (sync now) this process got while a session ran."""
    return _sync_asked


def received() -> int | None:
    """The first stop signal this process got while a session ran, or None."""
    return _received


def install() -> Callable[[], None]:
    """Take the stop signals for the session (main thread only; elsewhere nothing changes); the undo."""
    global _received, _owner, _sync_asked
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    _received, _owner, _sync_asked = None, os.getpid(), 0
    old = {s: signal.signal(s, _note) for s in SIGNALS}
    old[SYNC_SIGNAL] = signal.signal(SYNC_SIGNAL, _note_sync)

    def restore() -> None:
        for s, handler in old.items():
            signal.signal(s, handler)

    return restore


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
