"""The on-disk store: segment files written by graphers, read by the player.

``Store`` and ``open_store`` (the reader, which imports h5py) load on first use, so a rank that only
needs the store's format (a client, the visor) does not import h5py at start-up."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .dirs import SCHEMA_VERSION

if TYPE_CHECKING:
    from .reader import Store, open_store


def __getattr__(name: str) -> Any:
    if name in ("Store", "open_store"):
        value = getattr(importlib.import_module(".reader", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SCHEMA_VERSION", "Store", "open_store"]
