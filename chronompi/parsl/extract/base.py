"""The extractor interface: a sink for Parsl's monitoring tables, written in consistent steps."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..sink import ParslMonitoringError

#: rows of one table by primary key (a tuple of the key columns' values)
Rows = dict[Any, dict[str, Any]]


@dataclass
class Change:
    """What one step changed in one table: rows inserted or updated (whole rows), keys removed."""

    upsert: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[Any, ...]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.upsert or self.delete)


class Extractor(ABC):
    """Writes Parsl's tables to ``path``; ``open()`` creates it (it must not exist), each ``write()``
    is one step that readers see whole or not at all, ``close()`` is safe to call twice.

    ``write(tables, changes)``: ``tables`` are the complete current rows of every table
    (for formats that rewrite), ``changes`` what changed since the previous step (for
    formats that update in place). ``final=True`` on the last step.
    """

    name: ClassVar[str]

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.steps = 0

    def _refuse_existing(self) -> None:
        if self.path.exists():
            raise ParslMonitoringError(f"{self.path} exists; remove it or choose another output")

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def write(self, tables: dict[str, Rows], changes: dict[str, Change], final: bool = False) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Extractor:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
