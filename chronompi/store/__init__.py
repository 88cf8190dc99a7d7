"""The on-disk store: segment files written by graphers, read by the player."""

from __future__ import annotations

from .format import SCHEMA_VERSION
from .reader import Store, open_store

__all__ = ["SCHEMA_VERSION", "Store", "open_store"]
