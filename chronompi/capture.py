"""Recording a program's own output with no change to it: ``logging`` records and, optionally, stdout/stderr.

:class:`LogCapture` records every ``logging`` record the program makes into a story. It hooks the log
record factory (``logging.setLogRecordFactory``), not the root logger's handlers, so that nothing the
program sees changes: ``logging.basicConfig()`` still configures the console (it does nothing once the
root logger has a handler, so a handler of ours would have silenced the program's console), warnings
still reach stderr through ``logging.lastResort`` when the program has no handler, ``dictConfig`` cannot
remove it, and levels stay the program's. What is recorded is every record the program's loggers let
through their levels (Python's default is WARNING and up; a program that sets ``level=logging.INFO`` gets
its INFO records recorded too), as the JSON payload of :func:`chronompi.logging_handler.record_to_payload`.

Not recorded: chronompi's own loggers (they print on stderr; recording them from inside the client could
re-enter its lock), records made in a forked child process (its MPI state is not its own), and records
rebuilt from other processes with ``logging.makeLogRecord`` (they have no logger name at creation).

:class:`OutputCapture` wraps ``sys.stdout`` / ``sys.stderr``: text goes to the terminal as before and each
complete line is also an event. Only what Python writes through ``sys.stdout`` / ``sys.stderr`` is seen;
output written to file descriptor 1 or 2 directly (C extensions, ``os.write``, child processes) is not.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from .logging_handler import record_to_payload

if TYPE_CHECKING:
    from .story import Story

log = logging.getLogger(__name__)


class _Recorder:
    """Logs payloads into a story, never raising into the program: the first failure is reported once."""

    def __init__(self, story: Story, what: str) -> None:
        self.story = story
        self.what = what
        self.pid = os.getpid()
        self.failed = 0
        self._busy = threading.local()

    def __call__(self, payload: bytes) -> None:
        if os.getpid() != self.pid or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            self.story.log(payload)
        except Exception as exc:  # noqa: BLE001 - the program must not fail because its log could not be kept
            self.failed += 1
            if self.failed == 1:
                (sys.__stderr__ or sys.stderr).write(
                    f"chronompi: cannot record {self.what} into {self.story.chronicle}/{self.story.name}: {exc}; "
                    "later failures are counted, not printed\n"
                )
        finally:
            self._busy.on = False


class LogCapture:
    """Record every ``logging`` record of this process into ``story`` (see the module docstring)."""

    def __init__(self, story: Story) -> None:
        self._record = _Recorder(story, "a logging record")
        self._previous: Callable[..., logging.LogRecord] | None = None

    @property
    def failed(self) -> int:
        return self._record.failed

    def install(self) -> None:
        if self._previous is not None:
            return
        previous = logging.getLogRecordFactory()
        record = self._record

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            rec = previous(*args, **kwargs)
            name = rec.name
            if name and name != "chronompi" and not name.startswith("chronompi."):
                record(record_to_payload(rec))
            return rec

        self._previous = previous
        self._factory = factory
        logging.setLogRecordFactory(factory)

    def uninstall(self) -> None:
        """Put the previous factory back (if the program replaced ours meanwhile, leave its own in place)."""
        if self._previous is None:
            return
        if logging.getLogRecordFactory() is self._factory:
            logging.setLogRecordFactory(self._previous)
        self._previous = None


class _Tee:
    """A text stream that writes through to ``stream`` and records every complete line."""

    def __init__(self, stream: IO[str], record: _Recorder) -> None:
        self._stream = stream
        self._record = record
        self._part = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        with self._lock:
            if "\n" not in text:
                self._part += text
                return n
            lines = (self._part + text).split("\n")
            self._part = lines.pop()
        for line in lines:
            self._record(line.encode("utf-8", "surrogateescape"))
        return n

    def close_line(self) -> None:
        """Record what is left after the last newline (at the end of the program)."""
        with self._lock:
            part, self._part = self._part, ""
        if part:
            self._record(part.encode("utf-8", "surrogateescape"))

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...: the real stream's
        return getattr(self._stream, name)


class OutputCapture:
    """Record the lines the program prints on ``sys.stdout`` and ``sys.stderr`` into two stories."""

    def __init__(self, stdout: Story, stderr: Story) -> None:
        self._stories = {"stdout": stdout, "stderr": stderr}
        self._saved: dict[str, IO[str]] = {}
        self._tees: dict[str, _Tee] = {}

    def install(self) -> None:
        for name, story in self._stories.items():
            stream = getattr(sys, name)
            tee = _Tee(stream, _Recorder(story, f"a line of {name}"))
            self._saved[name] = stream
            self._tees[name] = tee
            setattr(sys, name, tee)

    def uninstall(self) -> None:
        for name, tee in self._tees.items():
            tee.close_line()
            if getattr(sys, name) is tee:
                setattr(sys, name, self._saved[name])
        self._tees.clear()
        self._saved.clear()
