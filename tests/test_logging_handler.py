"""chronompi.LogHandler: Python logging into a story, replayed like a log file."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import mpirun

import chronompi
from chronompi.logging_handler import format_log_line, record_to_payload


def test_payload_is_documented_json() -> None:
    logger = logging.getLogger("t.payload")
    rec = logger.makeRecord("t.payload", logging.ERROR, "/x/y.py", 12, "value %s", ("ü",), None, func="f")
    doc = json.loads(record_to_payload(rec))
    assert list(doc) == [
        "level",
        "levelno",
        "logger",
        "message",
        "file",
        "line",
        "func",
        "thread",
        "process",
        "created",
    ]
    assert (doc["level"], doc["logger"], doc["message"], doc["file"], doc["line"]) == (
        "ERROR",
        "t.payload",
        "value ü",
        "/x/y.py",
        12,
    )
    try:
        raise KeyError("boom")
    except KeyError:
        rec = logger.makeRecord("t.payload", logging.ERROR, "/x/y.py", 13, "failed", (), sys.exc_info())
    doc = json.loads(record_to_payload(rec))
    assert "KeyError: 'boom'" in doc["exc"] and "Traceback" in doc["exc"]
    line = format_log_line("2026-01-01T00:00:00.000000001Z", record_to_payload(rec))
    assert line.startswith("2026-01-01T00:00:00.000000001Z ERROR    t.payload [/x/y.py:13] failed\nTraceback")
    assert format_log_line("T", b"not json") == "T not json"


@pytest.mark.mpi
def test_logging_through_chronompi(store: Path) -> None:
    mpirun(6, "logging_app.py", str(store))  # 3 clients x 2 threads
    with chronompi.open_store(store) as st:
        ev = st.replay("app", "log")
    docs = [json.loads(p) for p in ev["payload"].tolist()]
    assert len(docs) == 3 * (2 * 201 + 2)
    keys = list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist()))
    assert keys == sorted(keys)
    for rank in range(3):
        mine = [d for d in docs if d["logger"] == f"solver.rank{rank}"]
        for tid in range(2):
            steps = [d["message"] for d in mine if d["thread"] == f"worker-{tid}" and d["level"] == "INFO"]
            assert steps == [f"step {i} of thread {tid} residual {1.0 / (i + 1):.3e}" for i in range(200)]
        assert sum(d["message"] == f"débogage ünicode {t}" for d in mine for t in range(2)) == 2
        exc = [d for d in mine if d["level"] == "ERROR"]
        assert len(exc) == 1 and "ZeroDivisionError" in exc[0]["exc"] and exc[0]["line"] > 0
        assert mine[-1]["message"] == "done"
    # the CLI prints it back like a log file, exception text included
    out = subprocess.run(
        [sys.executable, "-m", "chronompi", "replay", str(store), "app", "log", "--format", "log"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(" INFO     solver.rank" in ln for ln in lines) == 3 * 400
    assert sum("ZeroDivisionError: division by zero" in ln for ln in lines) == 3
    assert lines[0][:4].isdigit() and "T" in lines[0].split()[0]
