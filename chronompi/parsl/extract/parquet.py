"""``ParquetExtractor``: one Parquet file per table (``DIR/<table>.parquet``), needs pyarrow.

Parquet files are immutable, so a step rewrites the tables it changed, each into a
temporary file renamed over the old one: a reader opens the previous or the new
version of a table, never a half-written one. While following, tables are rewritten
at most every ``min_interval_s`` seconds (each rewrite costs the whole table), and
on the last step. Column types follow Parsl's schema: TEXT as string (numbers and
booleans as SQLite stores them in TEXT columns: ``False`` is ``"0"``), INTEGER and
BIGINT as int64, FLOAT as float64, BOOLEAN as bool, DATETIME as timestamp[us]; a
value that does not fit its column's type turns that column into strings (str()).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..schema import COLUMN_TYPES, COLUMNS, TABLES
from ..sink import ParslMonitoringError
from .base import Change, Extractor, Rows
from .sqlite import sql_value


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ParslMonitoringError(
            "--format parquet needs pyarrow, which is not installed: pip install pyarrow (or use --format sqlite)"
        ) from None
    return pa, pq


class ParquetExtractor(Extractor):
    name = "parquet"

    def __init__(self, path: str | os.PathLike[str], min_interval_s: float = 5.0) -> None:
        super().__init__(path)
        self.min_interval_s = min_interval_s
        self._pending: set[str] = set()
        self._last = 0.0

    def open(self) -> None:
        self.pa, self.pq = _pyarrow()
        self._refuse_existing()
        self.path.mkdir(parents=True)
        self._pending = set(TABLES)  # every table exists from the first step on, empty or not

    def _types(self) -> dict[str, Any]:
        pa = self.pa
        return {
            "TEXT": pa.string(),
            "INTEGER": pa.int64(),
            "BIGINT": pa.int64(),
            "FLOAT": pa.float64(),
            "BOOLEAN": pa.bool_(),
            "DATETIME": pa.timestamp("us"),
        }

    def table(self, name: str, rows: list[dict[str, Any]]) -> Any:
        """One table's rows as a pyarrow Table with Parsl's column types."""
        pa, types = self.pa, self._types()
        arrays, fields = [], []
        for c in COLUMNS[name]:
            values = [r.get(c) for r in rows]
            sql_type = COLUMN_TYPES[name][c]
            if sql_type == "TEXT":  # what SQLite's TEXT affinity makes of numbers and booleans
                values = [v if v is None or type(v) is str else str(sql_value(v)) for v in values]
            typ = types[sql_type]
            try:
                arr = pa.array(values, type=typ)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                typ = pa.string()
                arr = pa.array([None if v is None else str(v) for v in values], type=typ)
            arrays.append(arr)
            fields.append(pa.field(c, typ))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def write(self, tables: dict[str, Rows], changes: dict[str, Change], final: bool = False) -> None:
        self._pending.update(t for t, ch in changes.items() if ch)
        if not self._pending or (not final and time.monotonic() - self._last < self.min_interval_s):
            return
        for name in sorted(self._pending):
            out = self.path / f"{name}.parquet"
            tmp = out.with_name(f".{name}.parquet.tmp-{os.getpid()}")
            self.pq.write_table(self.table(name, list(tables[name].values())), tmp)
            os.replace(tmp, out)
        self._pending.clear()
        self._last = time.monotonic()
        self.steps += 1

    def close(self) -> None:
        self._pending.clear()  # every step was written whole; nothing stays open
