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

from .membership import Epoch, Membership, initial
from .progress import Backoff
from .protocol import (
    DONE,
    DRAINED,
    DROP,
    DROP_ACK,
    EPOCH,
    EPOCH_ACK,
    FORCE_END,
    GONE,
    LOAD,
    RELEASE,
    RETIRE,
    SEAL,
    TAG_CTRL,
    Context,
)

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


def membership_of(ctx: Context) -> Membership:
    """Epoch 0 of a session: the layout's keepers and graphers."""
    r = ctx.roles
    return initial(r.keepers, r.graphers, r.keeper_of)


def max_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (getrusage; Linux counts in KiB)."""
    import resource  # (here: clients import this module and never ask)

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Service:
    """Base of the service roles.

    Control messages from the visor (TAG_CTRL) are read once a loop by :meth:`_ctrl`:
    membership changes (``on_epoch``, ``on_drop``), the end of the session (SEAL, FORCE_END,
    RELEASE) and, for a member that left, RETIRE (back to the spare pool).
    """

    role = "service"

    def __init__(self, ctx: Context, members: Membership | None = None) -> None:
        self.ctx = ctx
        self.comm = ctx.comm
        self.backoff = make_backoff(ctx)
        self.finished = False
        self.started = time.perf_counter()
        self.summary: dict[str, Any] | None = None
        self.outbox = Outbox(self.comm)
        self.members = members if members is not None else membership_of(ctx)
        self.leaving = False  # not a member of the latest epoch: drain, then retire
        self.sealed = False  # every client is done (keepers may end)
        self.forced = False  # the visor ends the run early: treat every client as ended
        self.released_ = False
        self.retired = False
        self._auto = ctx.cfg.elastic.auto
        self._next_load = 0.0

    def isend(self, buf: Any, dest: int, tag: int) -> None:
        self.outbox.isend(buf, dest, tag)

    def step(self) -> bool:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {"host": self.ctx.host, "slept_s": round(self.backoff.slept, 3), "max_rss_mib": max_rss_mib()}

    def run(self) -> str:
        """Serve until this role's part is done (the session's end, or a drain when it leaves the
        membership), report to the visor, then keep answering online replays (other clients may
        still be running) until the visor releases it (returns "released") or retires it ("retired")."""
        while not self.finished:
            self._ctrl()
            self.backoff.step(self.step())
            if self._auto and time.monotonic() >= self._next_load:
                self._next_load = time.monotonic() + self.ctx.cfg.elastic.period_s
                self._send_visor((LOAD, self.ctx.rank, self.role, self.load_figures()))
        self.close()
        if self.leaving and not self.forced:
            self._report(DRAINED)
        else:
            self.report_done()
        while not (self.released_ or self.retired):
            self._ctrl()
            self.backoff.step(self.serve())
            self.outbox.reap()
        self.outbox.drain(self.backoff)
        self.shutdown()
        return "released" if self.released_ else "retired"

    # -- control from the visor --------------------------------------------
    def _ctrl(self) -> bool:
        """Read every control message the visor sent; False when there was none."""
        visor = self.ctx.roles.visor
        got = False
        while self.comm.Iprobe(visor, TAG_CTRL):
            msg = self.comm.recv(source=visor, tag=TAG_CTRL)
            got = True
            kind = msg[0]
            if kind == RELEASE:
                self.summary = msg[1]
                self.released_ = True
            elif kind == EPOCH:
                epoch = Epoch.from_json(msg[1])
                self.members.add(epoch)
                self.on_epoch(epoch)
                self._send_visor((EPOCH_ACK, self.ctx.rank, epoch.number))
            elif kind == DROP:
                self.on_drop(set(msg[2]))
                self._send_visor((DROP_ACK, self.ctx.rank, msg[1]))
            elif kind == SEAL:
                self.sealed = True
            elif kind == FORCE_END:
                if not self.forced and not self.finished:  # (FORCE_END, why): "stop" is a drain asked for (stop.py)
                    (log.info if msg[1:] == ("stop",) else log.warning)(
                        "%s %d: forced to end by the visor", self.role, self.ctx.rank
                    )
                self.forced = True
            elif kind == RETIRE:
                self.retired = True
            elif kind == GONE:
                self.on_gone(int(msg[1]))
        return got

    def _send_visor(self, msg: Any) -> None:
        self.comm.send(msg, dest=self.ctx.roles.visor, tag=TAG_CTRL)

    def load_figures(self) -> dict[str, float]:
        """What the visor's automatic policy reads (elastic.auto), since the last report."""
        return {}

    def on_epoch(self, epoch: Epoch) -> None:
        """A new epoch was announced (already added to ``self.members``)."""

    def on_drop(self, ranks: set[int]) -> None:
        """Drained members this role must no longer address."""

    def on_gone(self, client: int) -> None:
        """A client ended without ever sending to this keeper."""

    def close(self) -> None:
        """This role's part of the shutdown is over (all its data is passed on or written)."""

    def serve(self) -> bool:
        """One pass of what a finished role still does before release: answer replay queries."""
        return False

    def shutdown(self) -> None:
        """Released by the visor: withdraw outstanding receives, free resources."""

    def report_done(self) -> None:
        self._report(DONE)

    def _report(self, kind: str) -> None:
        stats = self.stats()
        stats["wall_s"] = round(time.perf_counter() - self.started, 3)
        stats["epoch"] = self.members.latest.number
        self._send_visor((kind, self.role, self.ctx.rank, stats))
