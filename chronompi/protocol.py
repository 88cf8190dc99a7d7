"""Message tags and the shared context every role starts from.

All traffic runs on the session's private duplicate of the user's
communicator, so no message of chronompi can ever match a receive of the
science code. Tags:

| tag | from -> to | payload |
| --- | --- | --- |
| BATCH | client -> keeper | a batch buffer (codec.py), uppercase API |
| CHUNK | keeper -> grapher | a chunk buffer; watermarks and END ride on this tag too (see below) |
| CLOCK | client <-> visor | one int64 (ping: empty) |
| REQ / REP | client <-> visor | small pickled registry requests and replies |
| CTRL | any -> visor, visor -> any | small pickled lifecycle messages: done, failed, hang, force-end, release |
| REPLY | keeper/grapher -> client | the events an online replay found there (a chunk buffer) |
| SYNC | keeper/grapher -> client | the answer to a sync: one SYNC_ACK record (codec.py) |

Watermarks and END share the chunk tag so that MPI's non-overtaking rule
delivers them after every chunk the keeper sent before them.
"""

from __future__ import annotations

import os
import time
from dataclasses import field
from typing import Any

try:  # hashlib's BLAKE2b is CPython's _blake2, which loads without hashlib's OpenSSL (3 ms in every rank)
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover - another Python
    from hashlib import blake2b as _blake2b

from ._plain import plain
from .config import Config
from .layout import Roles

TAG_BATCH = 0x4301
TAG_CHUNK = 0x4302
TAG_CLOCK = 0x4303
TAG_REQ = 0x4304
TAG_REP = 0x4305
TAG_CTRL = 0x4306
TAG_REPLY = 0x4307
TAG_SYNC = 0x4308
TAG_CHUNK_HEAP = 0x4309  # the payload parts of a chunk whose header says FLAG_HEAP_APART (keeper -> grapher)

# CTRL message kinds (first element of the tuple)
DONE = "done"  # (DONE, role, rank, stats): a rank finished its part of the shutdown
FAILED = "failed"  # (FAILED, rank, host, text): a client's code raised
FORCE_END = "force-end"  # (FORCE_END, why): visor -> keepers: treat every client as ended ("stop": a drain)
RELEASE = "release"  # (RELEASE, summary): visor -> everyone: the session is over
STORAGE = "storage"  # (STORAGE, rank, host, state, info): grapher -> visor: its staging or store is failing;
# state: retrying | recovered | abandoned | gave-up (info: path, errno, error, ...; see docs "Storage faults")
# membership changes (docs/architecture.md, "Elasticity"):
EPOCH = "epoch"  # (EPOCH, epoch json): visor -> members and clients: the next epoch, announced before it starts
EPOCH_ACK = "epoch-ack"  # (EPOCH_ACK, rank, number): a member or client knows the epoch
ACTIVATE = "activate"  # (ACTIVATE, role, membership json): visor -> spare: serve as keeper or grapher
DRAINED = "drained"  # (DRAINED, role, rank, stats): a leaving member passed on or wrote all it held
MOVED = "moved"  # (MOVED, rank, number): a keeper that stays got END from every client the epoch moved away
DROP = "drop"  # (DROP, number, ranks): visor -> clients and keepers: stop addressing these (drained) ranks
DROP_ACK = "drop-ack"  # (DROP_ACK, rank, number)
RETIRE = "retire"  # (RETIRE,): visor -> drained member: back to the spare pool
SEAL = "seal"  # (SEAL,): visor -> keepers: every client is done, no more members or clients will come
GONE = "gone"  # (GONE, client rank): visor -> keeper: a client that ended without ever sending to you
SCALED = "scaled"  # (SCALED, reason): visor's record of an automatic decision (only in the run record)
HANG = "hang"  # (HANG, rank, report): client -> visor: stuck in a blocking MPI call (watchdog.py)
UNHANG = "unhang"  # (UNHANG, rank): client -> visor: the reported call returned after all
STOP = "stop"  # (STOP, rank, signum): a client got a stop signal (stop.py); (STOP,): visor -> clients: send all
STOP_ACK = "stop-ack"  # (STOP_ACK, rank): a client sent every event it held to its keeper
LOAD = "load"  # (LOAD, rank, role, numbers): periodic load report to the visor (elastic.auto)
# (this often: elastic.period_s)


@plain
class Context:
    """What every rank knows once start-up is over (identical on all ranks but ``rank``/``role``)."""

    comm: Any  # the session's private MPI communicator (a Dup of the user's)
    rank: int
    role: str
    roles: Roles
    cfg: Config
    run_id: int
    hosts: list[str]
    # the session's start, time.time() of rank 0 (the visor) when it entered session(): where wall time begins
    started: float = field(default_factory=time.time)
    # (chronicle, story) pairs every client holds from the start, with no request each (session(stories=...))
    stories: tuple[tuple[str, str], ...] = ()

    @property
    def host(self) -> str:
        return self.hosts[self.rank]

    def client_id(self, rank: int) -> int:
        return client_id(self.run_id, rank)


def client_id(run_id: int, rank: int) -> int:
    """64-bit client id, unique across runs: a hash of (run id, rank). Never truncated."""
    digest = _blake2b(f"{run_id:016x}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def held_from_start(stories: tuple[tuple[str, str], ...]) -> dict[tuple[str, str], int]:
    """The ids of the stories every client holds from the start: 1, 2, ... in order of first appearance, as
    the visor's fresh registry gives them (``Registry.hold_from_start``); clients compute the same ids."""
    ids: dict[tuple[str, str], int] = {}
    for key in stories:
        ids.setdefault(key, len(ids) + 1)
    return ids


def hostname() -> str:
    return os.uname().nodename  # gethostname(2) (without importing socket)
