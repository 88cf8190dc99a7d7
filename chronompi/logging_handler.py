"""``LogHandler``: Python ``logging`` into a chronompi story.

A code that already uses ``logging`` gets a distributed, totally ordered log by
adding one handler on each client rank::

    with chronompi.session() as client:
        if client is not None:
            story = client.acquire_story("run", "log")
            logging.getLogger().addHandler(chronompi.LogHandler(story))

Each ``LogRecord`` becomes one event whose payload is a UTF-8 JSON object (no
pickle), keys in this order:

| key | value |
| --- | --- |
| ``level`` | level name, e.g. ``"WARNING"`` |
| ``levelno`` | level number |
| ``logger`` | logger name |
| ``message`` | ``record.getMessage()`` (arguments merged) |
| ``file``, ``line``, ``func`` | where the call was made |
| ``thread``, ``process`` | thread name and process id |
| ``created`` | the record's own time, float seconds since the epoch |
| ``exc`` | the formatted exception and stack text, only when there is one |

The event's chronompi time is when the handler logged it (clock-corrected,
totally ordered); ``created`` is kept for reference. ``chronompi replay --format
log`` prints such a story back like a log file.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .story import Story


def record_to_payload(record: logging.LogRecord, formatter: logging.Formatter | None = None) -> bytes:
    """The documented JSON payload of one log record."""
    fmt = formatter or _PLAIN
    doc: dict[str, Any] = {
        "level": record.levelname,
        "levelno": record.levelno,
        "logger": record.name,
        "message": record.getMessage(),
        "file": record.pathname,
        "line": record.lineno,
        "func": record.funcName,
        "thread": record.threadName,
        "process": record.process,
        "created": record.created,
    }
    exc = ""
    if record.exc_info:
        exc = fmt.formatException(record.exc_info)
    elif record.exc_text:
        exc = record.exc_text
    if record.stack_info:
        exc = (exc + "\n" if exc else "") + fmt.formatStack(record.stack_info)
    if exc:
        doc["exc"] = exc
    return json.dumps(doc, ensure_ascii=False, default=str).encode()


_PLAIN = logging.Formatter()


class LogHandler(logging.Handler):
    """A logging handler that records every LogRecord as an event of ``story``."""

    def __init__(self, story: Story, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.story = story

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.story.log(record_to_payload(record, self.formatter))
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise into the caller
            self.handleError(record)

    def __repr__(self) -> str:
        return f"<LogHandler {self.story.chronicle}/{self.story.name} ({logging.getLevelName(self.level)})>"


def format_log_line(time_iso: str, payload: bytes) -> str:
    """One payload of a LogHandler story as a log-file line (with its exception text, if any)."""
    try:
        doc = json.loads(payload)
        line = f"{time_iso} {doc['level']:<8} {doc['logger']} [{doc.get('file', '?')}:{doc.get('line', '?')}] "
        line += str(doc["message"])
    except (ValueError, KeyError, TypeError):
        return f"{time_iso} {payload.decode('utf-8', 'replace')}"
    if doc.get("exc"):
        line += "\n" + str(doc["exc"])
    return line
