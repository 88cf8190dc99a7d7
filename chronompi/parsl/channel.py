"""The local channel from HTEX worker processes to their pool rank: one Unix datagram socket per pool rank.

A pool rank (:mod:`chronompi.parsl.pool`) binds a ``SOCK_DGRAM`` Unix socket in a private
directory and puts its path into the environment of the ``process_worker_pool`` it starts
(``CHRONOMPI_PARSL_POOL_SOCKET``). Workers and Parsl's forked per-task resource monitors inherit
it; :class:`ChronompiPoolRadio`'s sender, created in those processes, encodes each message with
chronompi's pickle-free encoding and sends one datagram ``b"<story name>\\n<payload>"``. The pool
rank's recording thread blocks in ``recv_into`` and logs the payload as it is into story
``<story name>``: the worker does the encoding, the pool rank only logs. Nothing here imports MPI.

Why datagrams: message boundaries come for free (no framing, no partial reads), many senders
need no connection management on the receiving side (no ``accept``, no selector), Unix
datagrams are reliable and ordered per sender (a full queue blocks the sender: backpressure,
never loss), and one blocking ``recv`` is the whole receive loop. Limits: a datagram is at most
the socket buffer (:data:`MAX_DATAGRAM`); Linux queues at most ``net.unix.max_dgram_qlen``
datagrams (10 by default) before senders block.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from parsl.monitoring.radios.base import MonitoringRadioSender, RadioConfig

from .encoding import LATEST
from .radio import FallbackRadio, RadioError
from .sink import encode_tagged

log = logging.getLogger(__name__)

#: Environment variable naming the pool rank's socket, set in the environment of the worker pool it starts.
SOCKET_ENV = "CHRONOMPI_PARSL_POOL_SOCKET"
#: Largest datagram (story name, newline, payload); senders and the receiver set their buffers to it.
MAX_DATAGRAM = 1 << 20
_STOP = b"\x00stop"  # never a story name: those are A-Z and _


class ChannelReceiver:
    """The pool rank's end: a bound datagram socket; :meth:`serve` records until :meth:`stop`."""

    def __init__(self) -> None:
        base = tempfile.gettempdir()
        if len(base) > 60:  # sun_path holds 108 bytes
            base = "/tmp"
        self.dir = tempfile.mkdtemp(prefix="chronompi-pool-", dir=base)
        self.path = os.path.join(self.dir, "sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # capped by net.core.rmem_max: a smaller buffer only blocks senders sooner
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MAX_DATAGRAM)
        self.sock.bind(self.path)
        self.received = 0
        self._closed = False

    def serve(self, record: Callable[[str, bytes], Any]) -> None:
        """Block on the socket, ``record(story, payload)`` each datagram; return at the stop datagram."""
        buf = bytearray(MAX_DATAGRAM)
        view = memoryview(buf)
        recv_into = self.sock.recv_into
        while True:
            n = recv_into(buf)
            cut = buf.find(b"\n", 0, n)
            if cut < 0:
                if bytes(view[:n]) == _STOP:
                    return
                log.error("chronompi pool channel: a datagram without a story name (%d bytes) dropped", n)
                continue
            self.received += 1
            record(bytes(view[:cut]).decode("ascii"), bytes(view[cut + 1 : n]))

    def stop(self) -> None:
        """Queue the stop datagram: :meth:`serve` returns after every datagram already queued."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(_STOP, self.path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ChannelSender(MonitoringRadioSender):
    """A worker's end: encodes a message and sends it as one datagram to the pool rank's socket."""

    def __init__(self, path: str, version: int = LATEST) -> None:
        self.path = path
        self.version = version
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_DATAGRAM)
        self.sock.connect(path)

    def send(self, message: object) -> None:
        kind, payload = encode_tagged(message, self.version)
        data = kind.encode("ascii") + b"\n" + payload
        try:
            self.sock.send(data)
        except OSError as exc:
            raise RadioError(
                f"chronompi pool channel {self.path}: could not send a {kind} message of {len(data)} B: {exc} "
                f"(the limit is {MAX_DATAGRAM} B, and the pool rank must still be serving)"
            ) from exc


# Parsl calls create_sender() for every WORKER_TASK_INFO message: one socket per (process, path), reused.
_senders: dict[tuple[int, str, int], ChannelSender] = {}
_senders_lock = threading.Lock()


def sender_for(path: str, version: int = LATEST) -> ChannelSender:
    key = (os.getpid(), path, version)  # a forked child (the resource monitor) gets its own socket
    with _senders_lock:
        sender = _senders.get(key)
        if sender is None:
            sender = _senders[key] = ChannelSender(path, version)
        return sender


class ChronompiPoolRadio(FallbackRadio):
    """``HighThroughputExecutor(remote_monitoring_radio=ChronompiPoolRadio())`` for worker pools on pool ranks.

    In a process whose environment names a pool rank's socket (``CHRONOMPI_PARSL_POOL_SOCKET``:
    every worker of a pool that :func:`chronompi.parsl.serve_pools` started, and their forked
    resource monitors) the sender sends to that pool rank, which records the message. Elsewhere it
    uses ``fallback``'s sender, or raises :class:`RadioError` when there is none. ``version``: the
    payload encoding, as for :class:`~chronompi.parsl.ChronicleSink`.
    """

    fallback_hint = "give one, e.g. ChronompiPoolRadio(fallback=HTEXRadio())"

    def __init__(self, fallback: RadioConfig | None = None, version: int = LATEST) -> None:
        self.fallback = fallback
        self.version = version

    def create_sender(self) -> MonitoringRadioSender:
        path = os.environ.get(SOCKET_ENV)
        if path:
            return sender_for(path, self.version)
        return self.fallback_sender(
            f"${SOCKET_ENV} is not set in this process, so it is not a worker of a pool that "
            "chronompi.parsl.serve_pools started"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"fallback": self.fallback, "version": self.version}
