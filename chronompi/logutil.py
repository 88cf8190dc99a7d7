"""Logging set-up: rich's handler, with the rank and role in every line."""

from __future__ import annotations

import logging


class _RankFilter(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.prefix
        return True


def setup_logging(level: str, rank: int, role: str) -> None:
    """Attach one handler to the ``chronompi`` logger (idempotent per process)."""
    logger = logging.getLogger("chronompi")
    logger.setLevel(level.upper())
    if any(getattr(h, "_chronompi", False) for h in logger.handlers):
        for h in logger.handlers:
            for f in h.filters:
                if isinstance(f, _RankFilter):
                    f.prefix = f"[{rank}:{role}]"
        return
    handler = _LazyRichHandler()
    handler.addFilter(_RankFilter(f"[{rank}:{role}]"))
    handler._chronompi = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


class _LazyRichHandler(logging.Handler):
    """rich's handler, made at the first record: importing rich costs every rank ~40 ms of CPU at
    start-up, on a run that usually logs nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.logging import RichHandler

            self._rich = RichHandler(console=Console(stderr=True, width=120), show_path=False, markup=False)
            self._rich.setFormatter(logging.Formatter("%(rank)s %(message)s"))
        self._rich.emit(record)
