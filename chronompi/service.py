"""Machinery shared by the service roles (visor, keeper, grapher).

Each role has ``setup`` (in ``__init__``), ``step`` (one non-blocking pass of
progress, returns whether anything happened), ``drain`` (finish its part of
the in-band shutdown) and ``close``; :meth:`Service.run` loops ``step`` under
the backoff. Blocking MPI calls are avoided on purpose: Open MPI spins inside
them, and a spinning service rank steals the core of a science rank.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mpi4py import MPI

from .progress import Backoff
from .protocol import DONE, RELEASE, TAG_CTRL, Context

log = logging.getLogger(__name__)


def make_backoff(ctx: Context) -> Backoff:
    s = ctx.cfg.service
    return Backoff(s.backoff_min_us * 1e-6, s.backoff_max_ms * 1e-3, busy=s.progress == "busy")


def wait_all(requests: list[Any], backoff: Backoff) -> None:
    """Complete every request in the list by polling under the backoff (the list is emptied)."""
    while requests:
        if MPI.Request.Testall(requests):
            requests.clear()
            return
        backoff.sleep()
    backoff.reset()


class Outbox:
    """Outstanding Isends and their buffers: a buffer stays referenced until its request completed."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.requests: list[Any] = []
        self.buffers: list[Any] = []

    def __len__(self) -> int:
        return len(self.requests)

    def isend(self, buf: Any, dest: int, tag: int) -> None:
        self.requests.append(self.comm.Isend([buf, MPI.BYTE], dest, tag))
        self.buffers.append(buf)

    def reap(self) -> None:
        """Forget the sends that completed (non-blocking)."""
        if not self.requests:
            return
        done = MPI.Request.Testsome(self.requests)
        if done:
            for i in sorted(done, reverse=True):
                del self.requests[i]
                del self.buffers[i]

    def drain(self, backoff: Backoff) -> None:
        """Complete every send, polling under the backoff."""
        wait_all(self.requests, backoff)
        self.buffers.clear()


def recv_ctrl(comm: Any, source: int, backoff: Backoff) -> Any:
    """Receive one pickled control message from ``source`` without spinning."""
    status = MPI.Status()
    while not comm.Iprobe(source, TAG_CTRL, status):
        backoff.sleep()
    backoff.reset()
    return comm.recv(source=status.Get_source(), tag=TAG_CTRL)


class Service:
    """Base of the service roles."""

    role = "service"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.comm = ctx.comm
        self.backoff = make_backoff(ctx)
        self.finished = False
        self.started = time.perf_counter()
        self.summary: dict[str, Any] | None = None
        self.outbox = Outbox(self.comm)

    def isend(self, buf: Any, dest: int, tag: int) -> None:
        self.outbox.isend(buf, dest, tag)

    def step(self) -> bool:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {"host": self.ctx.host, "slept_s": round(self.backoff.slept, 3)}

    def run(self) -> None:
        """Serve until this role's shutdown is done, report to the visor, then keep answering
        online replays (other clients may still be running) until the visor's release."""
        while not self.finished:
            self.backoff.step(self.step())
        self.close()
        self.report_done()
        while not self.released():
            self.backoff.step(self.serve())
            self.outbox.reap()
        self.outbox.drain(self.backoff)
        self.shutdown()

    def close(self) -> None:
        """This role's part of the shutdown is over (all its data is passed on or written)."""

    def serve(self) -> bool:
        """One pass of what a finished role still does before release: answer replay queries."""
        return False

    def shutdown(self) -> None:
        """Released by the visor: withdraw outstanding receives, free resources."""

    def released(self) -> bool:
        visor = self.ctx.roles.visor
        while self.comm.Iprobe(visor, TAG_CTRL):
            msg = self.comm.recv(source=visor, tag=TAG_CTRL)
            if msg[0] == RELEASE:
                self.summary = msg[1]
                return True  # FORCE_END after the end is moot: ignore it
        return False

    def report_done(self) -> None:
        stats = self.stats()
        stats["wall_s"] = round(time.perf_counter() - self.started, 3)
        self.comm.send((DONE, self.role, self.ctx.rank, stats), dest=self.ctx.roles.visor, tag=TAG_CTRL)
