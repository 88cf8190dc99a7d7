"""Turning replayed events into text, JSON lines, CSV or Parquet (used by ``chronompi replay`` and ``export``).

Every writer takes the raw batches of :meth:`chronompi.Store.iter_replay_raw`
(event rows and their payload heap) one at a time, so memory stays bounded by one
batch whatever the size of the range. Parquet builds its columns from the arrays
without a Python object per event; the text formats make payload ``bytes`` objects
``PIECE`` events at a time.

Fields of an event, in every format:

- ``time``: int64 ns since the epoch; ``time_iso`` the same as ISO-8601 UTC with
  all nine fraction digits (``2026-11-25T06:41:07.123456789Z``);
- ``client``: the 64-bit client id as 16 hex digits;
- ``seq``: the event's index in its (client, story);
- ``payload``: the bytes as UTF-8 text when they are valid UTF-8, else base64
  (``payload_encoding`` says which; Parquet keeps the raw bytes).
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from .store.reader import packed, to_ns

FORMATS_REPLAY = ("text", "jsonl", "csv", "log")
FORMATS_EXPORT = ("jsonl", "csv", "parquet")
CSV_COLUMNS = ("chronicle", "story", "time", "time_iso", "client", "seq", "payload_encoding", "payload")


# -- times ----------------------------------------------------------------
def parse_time(value: str | None, what: str = "time") -> int | None:
    """ns since the epoch from a command-line time: an integer (ns) or ISO-8601 (naive means UTC, ns kept)."""
    return to_ns(value, what)


_second_cache: tuple[int, str] = (0, "1970-01-01T00:00:00")


def iso_ns(t: int) -> str:
    """ISO-8601 UTC with nanoseconds: ``2026-11-25T06:41:07.123456789Z``."""
    global _second_cache
    sec, ns = divmod(int(t), 1_000_000_000)
    if _second_cache[0] != sec:
        try:
            text = _dt.datetime.fromtimestamp(sec, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, OSError, ValueError):  # outside datetime's years: say it in ns
            return str(int(t))
        _second_cache = (sec, text)
    return f"{_second_cache[1]}.{ns:09d}Z"


# -- payloads -------------------------------------------------------------
TEXT_HEX_BYTES = 32  # bytes of a binary payload shown (as hex) on a text line


def _escape_char(c: str) -> str:
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    if c in named:
        return named[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"


def payload_text(p: bytes) -> str:
    """A payload for one text line, for people (``--format jsonl`` keeps every byte):

    - UTF-8 text as itself, characters that are not printable escaped (``\\t``, ``\\n``, ``\\x1b``),
      so an event stays one line;
    - anything else as its size and its first ``TEXT_HEX_BYTES`` bytes in hex: ``<64 B> 2c7f98…``.
    """
    try:
        s = p.decode("utf-8")
    except UnicodeDecodeError:
        more = "\u2026" if len(p) > TEXT_HEX_BYTES else ""
        return f"<{len(p)} B> {bytes(p[:TEXT_HEX_BYTES]).hex()}{more}"
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape_char(c) for c in s)


def payload_field(p: bytes) -> tuple[str, str]:
    """(encoding, value): ``("utf-8", text)`` for valid UTF-8, else ``("base64", ...)``."""
    try:
        return "utf-8", p.decode("utf-8")
    except UnicodeDecodeError:
        return "base64", base64.b64encode(p).decode("ascii")


# -- writers --------------------------------------------------------------
PIECE = 4096  # events formatted at a time: bounds the text held besides the replay batch


def _columns(events: np.ndarray, heap: np.ndarray) -> Iterator[tuple[list[int], list[int], list[int], list[bytes]]]:
    """(times, clients, seqs, payloads) as Python values, ``PIECE`` events at a time."""
    bounds, data = packed(events, heap)
    raw = data.tobytes()
    for i in range(0, len(events), PIECE):
        part = events[i : i + PIECE]
        b = bounds[i : i + len(part) + 1].tolist()
        payloads = [raw[x:y] for x, y in zip(b[:-1], b[1:])]
        yield part["time"].tolist(), part["client"].tolist(), part["seq"].tolist(), payloads


class EventWriter(Protocol):
    def write(self, chronicle: str, story: str, events: np.ndarray, heap: np.ndarray) -> None:
        """Write one batch: EVENT rows in total order and the heap their offsets index."""

    def close(self) -> None: ...


class TextWriter:
    """``TIME_ISO<TAB>CLIENT<TAB>SEQ<TAB>PAYLOAD`` per event (one story, for people)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, chronicle: str, story: str, events: np.ndarray, heap: np.ndarray) -> None:
        for t, c, s, p in _columns(events, heap):
            self.out.write(
                "".join(f"{iso_ns(t)}\t{c:016x}\t{s}\t{payload_text(p)}\n" for t, c, s, p in zip(t, c, s, p))
            )

    def close(self) -> None:
        self.out.flush()


class LogWriter:
    """A story written by :class:`chronompi.LogHandler`, printed back like a log file."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, chronicle: str, story: str, events: np.ndarray, heap: np.ndarray) -> None:
        from .logging_handler import format_log_line

        for t, _c, _s, p in _columns(events, heap):
            self.out.write("".join(format_log_line(iso_ns(x), y) + "\n" for x, y in zip(t, p)))

    def close(self) -> None:
        self.out.flush()


class JsonlWriter:
    """One JSON object per line and event."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, chronicle: str, story: str, events: np.ndarray, heap: np.ndarray) -> None:
        head = f'{{"chronicle": {json.dumps(chronicle)}, "story": {json.dumps(story)}, '
        for times, clients, seqs, payloads in _columns(events, heap):
            lines = []
            for t, c, s, p in zip(times, clients, seqs, payloads):
                enc, value = payload_field(p)
                lines.append(
                    f'{head}"time": {t}, "time_iso": "{iso_ns(t)}", "client": "{c:016x}", "seq": {s}, '
                    f'"payload_encoding": "{enc}", "payload": {json.dumps(value)}}}\n'
                )
            self.out.write("".join(lines))

    def close(self) -> None:
        self.out.flush()


class CsvWriter:
    """CSV (RFC 4180 quoting, ``\\n`` line ends) with a header row; columns :data:`CSV_COLUMNS`."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.csv = csv.writer(out, lineterminator="\n")
        self.csv.writerow(CSV_COLUMNS)

    def write(self, chronicle: str, story: str, events: np.ndarray, heap: np.ndarray) -> None:
        for times, clients, seqs, payloads in _columns(events, heap):
            rows = []
            for t, c, s, p in zip(times, clients, seqs, payloads):
                enc, value = payload_field(p)
                rows.append((chronicle, story, t, iso_ns(t), f"{c:016x}", s, enc, value))
            self.csv.writerows(rows)

    def close(self) -> None:
        self.out.flush()


def have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


ARROW_BINARY_MAX = 1 << 31  # payload bytes one Arrow binary column can hold (int32 offsets)


class ParquetWriter:
    """Parquet: chronicle, story, time (timestamp ns UTC), client (uint64), seq (uint64), payload (binary).

    One row group per replay batch; needs pyarrow.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema(
            [
                ("chronicle", pa.string()),
                ("story", pa.string()),
                ("time", pa.timestamp("ns", tz="UTC")),
                ("client", pa.uint64()),
                ("seq", pa.uint64()),
                ("payload", pa.binary()),
            ]
        )
        self.writer = pq.ParquetWriter(str(path), self.schema)

    def write(self, chronicle: str, story: str, events: np.ndarray, heap: np.ndarray) -> None:
        pa, n = self.pa, len(events)
        bounds, data = packed(events, heap)
        if bounds[-1] >= ARROW_BINARY_MAX and n > 1:  # Arrow's binary takes int32 offsets: halves, as row groups
            self.write(chronicle, story, events[: n // 2], heap)
            self.write(chronicle, story, events[n // 2 :], heap)
            return
        payload = pa.Array.from_buffers(  # the column straight from the buffers: no object per event
            pa.binary(), n, [None, pa.py_buffer(bounds.astype(np.int32)), pa.py_buffer(data)]
        )
        table = pa.Table.from_arrays(
            [
                pa.repeat(pa.scalar(chronicle, pa.string()), n),
                pa.repeat(pa.scalar(story, pa.string()), n),
                pa.array(events["time"].astype(np.int64), pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
                pa.array(events["client"].astype(np.uint64), pa.uint64()),
                pa.array(events["seq"].astype(np.uint64), pa.uint64()),
                payload,
            ],
            schema=self.schema,
        )
        self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()


def text_writer(fmt: str, out: IO[str]) -> EventWriter:
    if fmt == "text":
        return TextWriter(out)
    if fmt == "jsonl":
        return JsonlWriter(out)
    if fmt == "csv":
        return CsvWriter(out)
    if fmt == "log":
        return LogWriter(out)
    raise ValueError(f"unknown format {fmt!r}")


# -- streaming ------------------------------------------------------------
def stream(
    store: Any,
    targets: Iterable[tuple[str, str]],
    writer: EventWriter,
    start: int | None = None,
    end: int | None = None,
    limit: int | None = None,
    batch_events: int = 1 << 16,
) -> int:
    """Write the events of ``[start, end)`` of every (chronicle, story) in order; stop after ``limit``.

    Reads with ``store.iter_replay_raw`` (one batch in memory at a time). Returns the
    number of events written.
    """
    written = 0
    for chronicle, story in targets:
        if limit is not None and written >= limit:
            break
        batches: Iterator[tuple[np.ndarray, np.ndarray]] = store.iter_replay_raw(
            chronicle, story, start, end, batch_events=batch_events
        )
        try:
            for events, heap in batches:
                if limit is not None and written + len(events) > limit:
                    events = events[: limit - written]
                if len(events):
                    writer.write(chronicle, story, events, heap)
                    written += len(events)
                if limit is not None and written >= limit:
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
    return written


def temp_beside(path: Path) -> Path:
    """A temporary name next to ``path``: an export is renamed into place only when complete."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")
