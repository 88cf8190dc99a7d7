"""The life of a keeper, grapher or spare rank: serve a role, drain and retire, wait as a spare.

A spare waits for the visor without burning a core (its poll sleeps up to 50 ms: an
activation comes ahead of the epoch it serves, see ``elastic.lead_ms``). Activated, it
runs a :class:`Keeper` or :class:`Grapher` until the session ends (released) or until it
leaves the membership and the visor retires it; then it is a spare again.
"""

from __future__ import annotations

import logging
from typing import Any

from .layout import GRAPHER, KEEPER, SPARE
from .membership import Membership
from .progress import Backoff
from .protocol import ACTIVATE, RELEASE, TAG_CTRL, Context
from .service import Service

log = logging.getLogger(__name__)

SPARE_POLL_MAX_S = 0.05


def serve_member(ctx: Context) -> dict[str, Any] | None:
    """Serve on a keeper, grapher or spare rank until the visor releases the session; the summary."""
    role = ctx.role
    members: Membership | None = None
    alive: tuple[int, ...] = ()
    segments = 0  # segments this rank wrote as a grapher so far (names stay unique across activations)
    while True:
        if role == SPARE:
            msg = _wait_visor(ctx)
            if msg[0] == RELEASE:
                return dict(msg[1])
            if msg[0] != ACTIVATE:
                log.warning("spare %d: ignoring %r from the visor", ctx.rank, msg[0])
                continue
            role, members, alive = msg[1], Membership.from_json(msg[2]), tuple(msg[3])
            log.info("spare %d: serving as %s from epoch %d", ctx.rank, role, members.latest.number)
        service: Service
        if role == KEEPER:
            from .keeper import Keeper  # (per role: a keeper never imports h5py)

            service = Keeper(ctx, members, alive)
        elif role == GRAPHER:
            from .grapher import Grapher

            service = grapher = Grapher(ctx, members, alive, first_segment=segments)
        else:
            raise RuntimeError(f"rank {ctx.rank}: no member role {role!r}")
        outcome = service.run()
        if role == GRAPHER:
            segments = grapher.writer.n_segment
        if outcome == "released":
            return service.summary
        log.info("%s %d: retired, back to the spares", role, ctx.rank)
        role, members = SPARE, None


def _wait_visor(ctx: Context) -> Any:
    """Receive the visor's next control message, sleeping between polls (a spare must not steal cores)."""
    backoff = Backoff(ctx.cfg.service.backoff_min_us * 1e-6, SPARE_POLL_MAX_S)
    visor = ctx.roles.visor
    while not ctx.comm.Iprobe(visor, TAG_CTRL):
        backoff.sleep()
    return ctx.comm.recv(source=visor, tag=TAG_CTRL)
