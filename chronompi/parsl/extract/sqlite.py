"""``SqliteExtractor``: Parsl's monitoring database (SQLite), created with Parsl's schema, updated in place.

Each step is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): rows removed, then
rows inserted or updated by primary key (``INSERT ... ON CONFLICT DO UPDATE``), so a
reader (``parsl-visualize``) sees the database before or after a step, never half of
one. ``wal=True`` (what ``--follow`` uses) puts the database in WAL mode: readers do
not block the writer nor the writer them. Values are stored as SQLAlchemy stores them
on SQLite (datetimes as ``YYYY-MM-DD HH:MM:SS.ffffff``, booleans as 0/1).
"""

from __future__ import annotations

import datetime as _dt
import os
import sqlite3
from typing import Any

from ..schema import COLUMNS, PRIMARY_KEYS, SCHEMA, TABLES
from .base import Change, Extractor, Rows


def sql_value(v: Any) -> Any:
    """A value as SQLAlchemy's SQLite dialect stores it."""
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, bool):
        return int(v)
    if v is None or isinstance(v, (int, float, str, bytes)):
        return v
    return str(v)


def parsl_metadata() -> Any:
    """Parsl's SQLAlchemy metadata of the monitoring tables, or None without Parsl or SQLAlchemy."""
    try:
        from parsl.monitoring.db_manager import Database
    except Exception:  # noqa: BLE001 - Parsl or SQLAlchemy missing: use the copy
        return None
    return Database.Base.metadata


class SqliteExtractor(Extractor):
    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], use_parsl_schema: bool = True, wal: bool = False) -> None:
        super().__init__(path)
        self.use_parsl_schema = use_parsl_schema
        self.wal = wal
        self._con: sqlite3.Connection | None = None
        self._upsert: dict[str, str] = {}
        self._delete: dict[str, str] = {}

    def open(self) -> None:
        self._refuse_existing()
        meta = parsl_metadata() if self.use_parsl_schema else None
        if meta is not None:
            import sqlalchemy as sa

            eng = sa.create_engine(f"sqlite:///{self.path}")
            try:
                meta.create_all(eng)
            finally:
                eng.dispose()
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if meta is None:
            con.executescript(SCHEMA)
        if self.wal:
            con.execute("PRAGMA journal_mode=WAL")
        self._con = con
        for t in TABLES:
            cols, pk = COLUMNS[t], PRIMARY_KEYS[t]
            sets = ", ".join(f"{c}=excluded.{c}" for c in cols if c not in pk)
            self._upsert[t] = (
                f'INSERT INTO "{t}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))}) '
                f"ON CONFLICT ({', '.join(pk)}) DO UPDATE SET {sets}"
            )
            self._delete[t] = f'DELETE FROM "{t}" WHERE ' + " AND ".join(f"{c} IS ?" for c in pk)

    def write(self, tables: dict[str, Rows], changes: dict[str, Change], final: bool = False) -> None:
        con = self._con
        if con is None:
            raise RuntimeError("SqliteExtractor.write before open()")
        if not any(changes.values()):
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            for t in TABLES:
                ch = changes.get(t)
                if not ch:
                    continue
                if ch.delete:
                    con.executemany(self._delete[t], [[sql_value(v) for v in k] for k in ch.delete])
                if ch.upsert:
                    cols = COLUMNS[t]
                    con.executemany(self._upsert[t], [[sql_value(r[c]) for c in cols] for r in ch.upsert])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.steps += 1

    def close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            con.close()
