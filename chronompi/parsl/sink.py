"""Recording Parsl monitoring messages into a chronicle: one story per message type."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from ..errors import ChronicleExists, ChronoError
from .encoding import LATEST, encode_message

if TYPE_CHECKING:
    from ..client import Client, Story

DEFAULT_CHRONICLE = "parsl"
#: The chronicle attribute ``encoding`` per encoding version (payloads carry their version themselves).
ENCODING_NAMES = {1: "chronompi.parsl/json-v1", 3: "chronompi.parsl/msgpack-v3"}
#: Story of messages that are not a (MessageType, body) pair; kept so nothing is lost silently.
MALFORMED = "MALFORMED"


class ParslMonitoringError(ChronoError, RuntimeError):
    """The chronompi side of Parsl monitoring failed (the hub, the radio or the export)."""


def kind_of(tag: Any) -> str:
    """Story name of a message tag: ``MessageType.TASK_INFO`` -> ``"TASK_INFO"``."""
    name = getattr(tag, "name", None)
    if isinstance(name, str) and name:
        return name
    return MALFORMED


def encode_tagged(message: Any, version: int = LATEST) -> tuple[str, bytes]:
    """``(story name, payload)`` of a tagged message ``(MessageType, body)``; anything else goes to MALFORMED."""
    if isinstance(message, tuple) and len(message) == 2:
        kind, body = kind_of(message[0]), message[1]
        if kind == MALFORMED:
            body = {"tag": message[0], "body": message[1]}
    else:
        kind, body = MALFORMED, message
    return kind, encode_message(kind, body, version)


class ChronicleSink:
    """Logs tagged monitoring messages ``(MessageType, body)`` into ``chronicle``, one story per type.

    Thread-safe (the client is); stories are acquired on first use. ``version``: the payload
    encoding (3, msgpack, by default; 1, JSON).
    """

    def __init__(
        self, client: Client, chronicle: str = DEFAULT_CHRONICLE, create: bool = True, version: int = LATEST
    ) -> None:
        if version not in ENCODING_NAMES:
            raise ValueError(f"encoding version {version!r}: give one of {sorted(ENCODING_NAMES)}")
        self.client = client
        self.chronicle = chronicle
        self.version = version
        self._stories: dict[str, Story] = {}
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        if create:
            try:
                client.create_chronicle(chronicle, {"kind": "parsl-monitoring", "encoding": ENCODING_NAMES[version]})
            except ChronicleExists:
                pass

    def story(self, kind: str) -> Story:
        st = self._stories.get(kind)
        if st is None:
            with self._lock:
                st = self._stories.get(kind)
                if st is None:
                    st = self.client.acquire_story(self.chronicle, kind)
                    self._stories[kind] = st
        return st

    def record(self, message: Any) -> int:
        """Log one tagged message; returns its event time (ns)."""
        return self.record_encoded(*encode_tagged(message, self.version))

    def record_encoded(self, kind: str, payload: bytes) -> int:
        """Log a payload already encoded (by :func:`encode_tagged`, e.g. in a worker) into story ``kind``."""
        t = self.story(kind).log(payload)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return t

    def flush(self) -> None:
        self.client.flush()

    def release(self) -> None:
        with self._lock:
            stories, self._stories = list(self._stories.values()), {}
        for st in stories:
            st.release()


# -- the client this process records with (for the radio) ------------------------------------------------------
_registered: tuple[int, Client] | None = None
_sinks: dict[tuple[int, str], ChronicleSink] = {}
_sinks_lock = threading.Lock()


def register_client(client: Client | None) -> None:
    """Make ``client`` this process's recorder for :class:`~chronompi.parsl.ChronompiRadio` senders.

    Only this process uses it: a forked child (Parsl's per-task resource
    monitor) sees no registered client and uses the radio's fallback.
    ``None`` unregisters.
    """
    global _registered
    with _sinks_lock:
        _registered = None if client is None else (os.getpid(), client)
        _sinks.clear()


def registered_client() -> Client | None:
    reg = _registered
    if reg is None or reg[0] != os.getpid() or reg[1].closed:
        return None
    return reg[1]


def sink_for(client: Client, chronicle: str) -> ChronicleSink:
    key = (id(client), chronicle)
    with _sinks_lock:
        sink = _sinks.get(key)
        if sink is None:
            sink = ChronicleSink(client, chronicle)
            _sinks[key] = sink
        return sink
