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

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import Config
from .errors import (
    ChronicleExists,
    ChronicleInUse,
    ChronoError,
    ConfigError,
    InvalidName,
    PayloadTooLarge,
    RemoteError,
    ScaleError,
    ScaleTimeout,
    SessionClosed,
    StoreError,
    StoryNotAcquired,
    SyncTimeout,
    UnknownChronicle,
    UnknownStory,
)


def story(chronicle: str | None = None, name: str = "log") -> Story:
    """The story ``chronicle/name`` of the session ``chronompi.init()`` or ``chronompi record`` started in this
    process (created if needed, acquired once, shared by every thread); see :func:`chronompi.embed.story`."""
    from .embed import story as _story

    return _story(chronicle, name)


if TYPE_CHECKING:
    from .client import Client
    from .embed import finalize, init
    from .logging_handler import LogHandler
    from .session import session
    from .store import Store, open_store
    from .story import Story

# Names whose modules import mpi4py.MPI (which initialises MPI): loaded on first use, so that
# `import chronompi`, `open_store` and the offline commands never start MPI; the reader's (h5py), so
# that a client rank does not import h5py at start-up; and numpy's (Story, LogHandler), so that a keeper or
# grapher reaches the session's start-up collectives without numpy (session.py).
_LAZY = {
    "Story": "story",
    "LogHandler": "logging_handler",
    "Client": "client",
    "session": "session",
    "init": "embed",
    "finalize": "embed",
    "Store": "store",
    "open_store": "store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Importing the submodule ``chronompi.session`` binds the package attribute ``session`` to the
    module (the import system's ``setattr(parent, child, module)``); keep it the function instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType):
            if name == "story":  # the submodule chronompi.story: the package attribute stays the function
                return
            if name in _LAZY:
                value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
    "ScaleError",
    "ScaleTimeout",
    "SessionClosed",
    "Store",
    "StoreError",
    "Story",
    "StoryNotAcquired",
    "SyncTimeout",
    "UnknownChronicle",
    "UnknownStory",
    "__version__",
    "finalize",
    "init",
    "open_store",
    "session",
    "story",
]
