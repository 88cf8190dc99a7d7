"""Parsl monitoring into chronompi (needs ``pip install 'chronompi[parsl]'``).

* :class:`ChronompiHub` -- ``Config(monitoring=ChronompiHub(client))`` on the client rank that runs the
  Parsl driver records every monitoring message into a chronicle, one story per message type.
* :class:`ChronompiRadio` -- a monitoring radio whose senders record directly where tasks run in a process
  that holds a chronompi client.
* :func:`serve_pools` -- HTEX worker pools on client ranks: client rank 0 gets a :class:`ChronompiPoolProvider`
  for its ``HighThroughputExecutor``, the other client ranks run the pools and record their workers' messages
  (sent through :class:`ChronompiPoolRadio`) themselves.
* :func:`export_parsl` -- rebuild Parsl's monitoring SQLite database from the store (``chronompi export parsl``).
* :class:`Follower` -- the same, live while the workflow runs (``chronompi export parsl --follow``), into any
  extractor (:func:`make_extractor`: ``sqlite``, ``parquet``).

See docs/parsl.md. The encoding (:mod:`chronompi.parsl.encoding`) and the export need no Parsl.
"""

from __future__ import annotations

from typing import Any

from .encoding import EncodingError, decode_message, encode_message
from .export import export_parsl, iter_messages, main_export_parsl
from .extract import Extractor, make_extractor
from .follow import Follower
from .sink import DEFAULT_CHRONICLE, ChronicleSink, ParslMonitoringError, register_client, registered_client

__all__ = [
    "DEFAULT_CHRONICLE",
    "ChronicleSink",
    "ChronompiHub",
    "ChronompiPoolProvider",
    "ChronompiPoolRadio",
    "ChronompiRadio",
    "EncodingError",
    "Extractor",
    "Follower",
    "ParslMonitoringError",
    "RadioError",
    "decode_message",
    "encode_message",
    "export_parsl",
    "iter_messages",
    "main_export_parsl",
    "make_extractor",
    "register_client",
    "registered_client",
    "serve_pools",
]


def __getattr__(name: str) -> Any:  # the Parsl-dependent classes import Parsl only when asked for
    if name == "ChronompiHub":
        from .hub import ChronompiHub

        return ChronompiHub
    if name in ("ChronompiRadio", "RadioError"):
        from . import radio

        return getattr(radio, name)
    if name in ("ChronompiPoolProvider", "serve_pools"):
        from . import pool

        return getattr(pool, name)
    if name == "ChronompiPoolRadio":
        from .channel import ChronompiPoolRadio

        return ChronompiPoolRadio
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
