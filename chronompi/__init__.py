"""chronompi: a distributed, tiered event-log store that runs inside an MPI job.

with chronompi.session() as client:        # collective over COMM_WORLD
    if client is not None:                  # None on visor/keeper/grapher ranks
        client.create_chronicle("run")
        with client.acquire_story("run", "diagnostics") as story:
            story.log(b"step 1 done")

store = chronompi.open_store("chronompi-store")
events = store.replay("run", "diagnostics")
"""

from __future__ import annotations

from ._version import __version__
from .client import Client
from .config import Config
from .errors import (
    ChronicleExists,
    ChronicleInUse,
    ChronoError,
    ConfigError,
    InvalidName,
    PayloadTooLarge,
    RemoteError,
    SessionClosed,
    StoreError,
    StoryNotAcquired,
    SyncTimeout,
    UnknownChronicle,
    UnknownStory,
)
from .logging_handler import LogHandler
from .session import session
from .store import Store, open_store
from .story import Story

__all__ = [
    "ChronicleExists",
    "ChronicleInUse",
    "ChronoError",
    "Client",
    "Config",
    "ConfigError",
    "InvalidName",
    "LogHandler",
    "PayloadTooLarge",
    "RemoteError",
    "SessionClosed",
    "Store",
    "StoreError",
    "Story",
    "StoryNotAcquired",
    "SyncTimeout",
    "UnknownChronicle",
    "UnknownStory",
    "__version__",
    "open_store",
    "session",
]
