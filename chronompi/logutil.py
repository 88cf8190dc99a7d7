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
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True, width=120), show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(rank)s %(message)s"))
    handler.addFilter(_RankFilter(f"[{rank}:{role}]"))
    handler._chronompi = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
