"""The base class of the ingest peers: what an HPC user would record events with instead of chronompi.

A peer writes one client rank's events (``perf/events.py``) in batches, from open to every file closed;
the harness (``perf/harness.py``) puts a barrier of all ranks before and after, so a peer's time is
"from a barrier to every file closed", the same bracket as chronompi's session. Peers do not order
events across ranks (chronompi does); users compare the number they see all the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from events import Events


class Peer(ABC):
    """One way of writing events; subclasses set ``name`` (config key) and ``label`` (table row)."""

    name: str = ""
    label: str = ""

    def unavailable(self) -> str | None:
        """Why this peer cannot run here (what to install), or None when it can."""
        return None

    @abstractmethod
    def write(self, comm: Any, events: Events, root: Path, batch: int) -> None:
        """Write ``events`` of this rank under ``root`` in batches of ``batch`` events; return once closed.

        ``comm`` holds exactly the writing (client) ranks; per-rank peers use it only for their rank.
        """

    @abstractmethod
    def stored(self, root: Path) -> int:
        """Events in the files under ``root`` (read back after timing, one process)."""

    def versions(self) -> dict[str, str]:
        """Library versions for the result record."""
        return {}


def batches(n: int, batch: int) -> range:
    return range(0, n, max(1, batch))
