"""The visor's side of elasticity: membership changes, their phases, and the automatic policy.

A change (``client.scale(...)`` or the policy) goes through four phases, each waiting for
answers, so that no rank ever addresses a member that has left:

1. **announce**: spares needed are activated (they get the table with the new epoch), then
   every other member and every client gets the EPOCH and answers EPOCH_ACK. The epoch
   starts at the first window boundary ``elastic.lead_ms`` ahead.
2. **drain**: members that leave drain by themselves (a keeper once every client moved
   away at the start and its windows are shipped; a grapher once every keeper is past the
   start and its windows are written) and report DRAINED; a keeper that stays but loses
   clients reports MOVED once each of them sent its END (so no client can have two moves
   pending: the next change waits for this one).
3. **drop**: clients and keepers are told to stop addressing the drained members (DROP,
   answered by DROP_ACK; a client answers between its replays and syncs).
4. **retire**: the drained members go back to the spare pool (RETIRE).

One change at a time; none once a client has ended (the session is closing). A client
that ends counts as having answered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .membership import Epoch, Membership, ScaleError, plan
from .protocol import (
    ACTIVATE,
    DRAINED,
    DROP,
    DROP_ACK,
    EPOCH,
    EPOCH_ACK,
    GONE,
    LOAD,
    MOVED,
    RETIRE,
    TAG_CTRL,
)
from .windows import window_end, window_of

if TYPE_CHECKING:
    from .visor import Visor

log = logging.getLogger(__name__)


@dataclass
class Change:
    epoch: Epoch
    leaving: set[int]
    losing: set[int]  # keepers that stay but lose clients: they report MOVED
    activated: list[tuple[int, str]]
    requested: int  # ns
    waiting: set[int] = field(default_factory=set)
    moved: set[int] = field(default_factory=set)
    phase: str = "announce"
    times: dict[str, int] = field(default_factory=dict)


class Coordinator:
    def __init__(self, visor: Visor) -> None:
        self.visor = visor
        ctx = visor.ctx
        self.cfg = ctx.cfg.elastic
        self.window_ns = int(ctx.cfg.keeper.window_ms * 1e6)
        roles = ctx.roles
        self.members: Membership = visor.members
        self.clients = list(roles.clients)
        self.spares = set(roles.spares)
        self.alive_keepers = set(roles.keepers)
        self.alive_graphers = set(roles.graphers)
        self.change: Change | None = None
        self.history: list[dict[str, Any]] = [self.members.latest.to_json() | {"in_force": None}]
        self.drained: dict[int, tuple[str, dict[str, Any]]] = {}  # rank -> stats of its last drained service
        self.retired_stats: list[dict[str, Any]] = []
        self.last_change = time.monotonic()
        self.load: dict[int, tuple[float, dict[str, float]]] = {}
        self.hot_since: float | None = None
        self.idle_since: float | None = None
        self.next_policy = time.monotonic() + self.cfg.period_s
        self.prev_wait: dict[int, float] = {}

    # -- what the visor asks ----------------------------------------------
    def done_clients(self) -> set[int]:
        return {r for r, (role, _) in self.visor.done.items() if role == "client"}

    def members_now(self) -> set[int]:
        """Keepers and graphers that must report before the session ends: the latest epoch's."""
        e = self.members.latest
        return set(e.keepers) | set(e.graphers)

    def alive(self) -> set[int]:
        return self.alive_keepers | self.alive_graphers

    def busy(self) -> bool:
        return self.change is not None

    def _send(self, rank: int, msg: Any) -> None:
        self.visor.comm.send(msg, dest=rank, tag=TAG_CTRL)

    # -- requests -------------------------------------------------------------
    def handle(self, req: tuple[Any, ...], src: int) -> Any:
        op = req[0]
        if op == "members":
            return self.describe()
        if op == "scale":
            keepers, graphers = req[1], req[2]
            e = self.members.latest
            k = len(e.keepers) if keepers is None else int(keepers)
            g = len(e.graphers) if graphers is None else int(graphers)
            return self.request(k, g, f"scale() by client rank {src}")
        raise ValueError(f"unknown membership request {op!r}")

    def describe(self) -> dict[str, Any]:
        return {
            "epoch": self.members.latest.number,
            "keepers": list(self.members.latest.keepers),
            "graphers": list(self.members.latest.graphers),
            "spares": sorted(self.spares),
            "changing": self.change is not None,
            "epochs": self.history,
        }

    def request(self, keepers: int, graphers: int, reason: str) -> int:
        """Start a change to ``keepers`` keepers and ``graphers`` graphers; the epoch's number."""
        if self.change is not None:
            raise ScaleError(
                f"scale(keepers={keepers}, graphers={graphers}): a change is in progress (epoch "
                f"{self.change.epoch.number}, {self.change.phase}); wait for it (scale(..., wait=True)) and ask again"
            )
        if self.done_clients():
            raise ScaleError("scale(): the session is ending (a client has finished); the membership is fixed now")
        e = self.members.latest
        if keepers == len(e.keepers) and graphers == len(e.graphers):
            return e.number
        now = time.time_ns()
        start = window_end(window_of(now + int(self.cfg.lead_ms * 1e6), self.window_ns), self.window_ns)
        start = max(start, e.start + self.window_ns)  # (epochs start in order, a window apart at least)
        epoch, activate = plan(e, keepers, graphers, sorted(self.spares), self.clients, start, reason, now)
        self.members.add(epoch)
        table = self.members.to_json()
        for rank, role in activate:  # before the announcement: every member it names is serving
            if role == "keeper":  # the graphers it must tell its watermark: every one alive
                peers = self.alive_graphers | set(epoch.graphers)
            else:  # the keepers whose chunks may come to it
                peers = self.alive_keepers | set(epoch.keepers)
            self._send(rank, (ACTIVATE, role, table, sorted(peers)))
            self.spares.discard(rank)
        new = {r for r, _ in activate}
        leaving = (self.alive_keepers - set(epoch.keepers)) | (self.alive_graphers - set(epoch.graphers))
        tell = (self.alive() - new) | (set(self.clients) - self.done_clients())
        for r in sorted(tell):
            self._send(r, (EPOCH, epoch.to_json()))
        self.alive_keepers |= set(epoch.keepers)
        self.alive_graphers |= set(epoch.graphers)
        before = self.members.epochs[-2].keeper_of
        losing = {before[c] for c in self.clients if epoch.keeper_of.get(c) != before.get(c)} - leaving
        self.change = Change(epoch, leaving, losing, activate, now, waiting=tell, times={"announced": now})
        self.last_change = time.monotonic()
        log.info(  # lifecycle: INFO (a change asked for is normal operation, not a warning)
            "epoch %d announced (%s): keepers %s, graphers %s, from %s",
            epoch.number,
            reason,
            list(epoch.keepers),
            list(epoch.graphers),
            time.strftime("%H:%M:%S", time.localtime(start / 1e9)),
        )
        return epoch.number

    # -- control messages -------------------------------------------------
    def on_ctrl(self, src: int, msg: Any) -> bool:
        kind = msg[0]
        c = self.change
        if kind in (EPOCH_ACK, DROP_ACK, MOVED):
            if c is not None and msg[2] == c.epoch.number:
                c.waiting.discard(src)
                if kind == MOVED:
                    c.moved.add(src)  # (it may come before every member answered the announcement)
            return True
        if kind == DRAINED:
            _, role, rank, stats = msg
            self.drained[rank] = (role, stats)
            if c is not None:
                c.waiting.discard(rank)
            return True
        if kind == LOAD:
            self.load[src] = (time.monotonic(), msg[3])
            return True
        return False

    def client_done(self, rank: int, stats: dict[str, Any]) -> None:
        """A client ended: it answers nothing any more; a keeper it never reached must not wait for it."""
        if self.change is not None:
            self.change.waiting.discard(rank)
        known = int(stats.get("epoch", 0))
        latest = self.members.latest
        if known < latest.number:
            k = latest.keeper_of.get(rank)
            before = self.members.epochs[known].keeper_of.get(rank)
            if k is not None and k != before:
                self._send(k, (GONE, rank))

    # -- progress ---------------------------------------------------------
    def step(self) -> None:
        c = self.change
        if c is not None:
            c.waiting -= self.done_clients()
            # a change is over once it is in force, too: scale() returns when the new members serve
            if not c.waiting and (c.phase != "announce" or time.time_ns() >= c.epoch.start):
                self._advance(c)
        if self.cfg.auto and time.monotonic() >= self.next_policy:
            self.next_policy = time.monotonic() + self.cfg.period_s
            self._policy()

    def _advance(self, c: Change) -> None:
        now = time.time_ns()
        if c.phase == "announce":
            c.times["acknowledged"] = now
            c.phase, c.waiting = "drain", set(c.leaving) | (c.losing - c.moved)
            c.waiting -= set(self.drained)  # (a member may drain before everyone answered)
        elif c.phase == "drain":
            c.times["drained"] = now
            if c.leaving:
                tell = (set(self.clients) - self.done_clients()) | (self.alive_keepers - c.leaving)
                for r in sorted(tell):
                    self._send(r, (DROP, c.epoch.number, sorted(c.leaving)))
                c.waiting = tell
            c.phase = "drop"
            return
        elif c.phase == "drop":
            for r in sorted(c.leaving):
                self._send(r, (RETIRE,))
                role, stats = self.drained.pop(r)
                self.retired_stats.append({"rank": r, "role": role, "retired_epoch": c.epoch.number, **stats})
            self.alive_keepers -= c.leaving
            self.alive_graphers -= c.leaving
            self.spares |= c.leaving
            c.times["complete"] = now
            self.history.append(
                c.epoch.to_json()
                | {
                    "in_force": c.epoch.start,
                    "requested": c.requested,
                    "leaving": sorted(c.leaving),
                    "activated": [list(a) for a in c.activated],
                    **c.times,
                    "change_s": round((now - c.requested) / 1e9, 3),
                }
            )
            log.info("epoch %d complete in %.2f s", c.epoch.number, (now - c.requested) / 1e9)
            self.change = None
            self.last_change = time.monotonic()

    # -- the automatic policy -----------------------------------------------
    def _policy(self) -> None:
        """Grow when clients block (or keeper rings stay full) for grow_after_s; shrink when idle for
        shrink_after_s; bounded, with a cool-down, one member at a time."""
        now = time.monotonic()
        fresh = {r: v for r, (t, v) in self.load.items() if now - t < 3 * self.cfg.period_s}
        waits = []
        for r in self.clients:
            if r in fresh:
                w = fresh[r].get("wait_s", 0.0)
                waits.append(max(0.0, w - self.prev_wait.get(r, w)) / self.cfg.period_s)
                self.prev_wait[r] = w
        blocked = max(waits, default=0.0)
        ring = max((v.get("ring", 0.0) for r, v in fresh.items() if r in self.alive_keepers), default=0.0)
        pending = max((v.get("pending", 0.0) for r, v in fresh.items() if r in self.alive_graphers), default=0.0)
        hot = blocked > 0.05 or ring > 0.9
        idle = blocked == 0.0 and ring < 0.25 and pending < 4
        self.hot_since = (self.hot_since or now) if hot else None
        self.idle_since = (self.idle_since or now) if idle else None
        if self.change is not None or now - self.last_change < self.cfg.cooldown_s or self.done_clients():
            return
        e = self.members.latest
        k, g = len(e.keepers), len(e.graphers)
        roles = self.visor.ctx.roles
        max_k = self.cfg.max_keepers or len(roles.keepers) + len(roles.spares)
        max_g = self.cfg.max_graphers or len(roles.graphers) + len(roles.spares)
        try:
            if self.hot_since is not None and now - self.hot_since >= self.cfg.grow_after_s and self.spares:
                why = f"auto: clients blocked {100 * blocked:.0f}% of the time, keeper rings {100 * ring:.0f}% full"
                if (pending >= 4 or k >= max_k) and g < max_g:
                    self.request(k, g + 1, why + f", {pending:.0f} windows pending")
                elif k < max_k:
                    self.request(k + 1, g, why)
            elif self.idle_since is not None and now - self.idle_since >= self.cfg.shrink_after_s:
                if k > self.cfg.min_keepers:
                    self.request(k - 1, g, f"auto: idle for {now - self.idle_since:.1f} s")
                elif g > self.cfg.min_graphers:
                    self.request(k, g - 1, f"auto: idle for {now - self.idle_since:.1f} s")
        except ScaleError as exc:
            log.info("autoscaler: %s", exc)
