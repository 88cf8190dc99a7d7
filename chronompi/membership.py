"""Membership epochs: which keepers and graphers serve which windows (pure, no MPI).

The visor owns the table. Epoch ``e`` covers the windows ``[start_e, start_{e+1})``
(``start`` is a window boundary, in ns; epoch 0 starts at NEVER): a window of a story
belongs to grapher ``graphers_e[stripe(story, w, len(graphers_e))]`` of the epoch
holding it, and a client sends the events of epoch ``e`` to ``keeper_of_e[client]``.
A change is announced before its start is reached, so every client, keeper and
grapher knows it in time; events of windows before the start travel by the old
membership, the rest by the new one.

A member that leaves is *retiring* until it has drained (a keeper: every client moved
away and every window it held shipped; a grapher: every window before the start it
owns written and its segments in the store) and every client and keeper has stopped
addressing it; then it returns to the spare pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any

from ._plain import plain
from .errors import ScaleError
from .windows import NEVER, stripe


@plain(frozen=True)
class Epoch:
    number: int
    start: int  # ns, a window boundary; NEVER for epoch 0
    keepers: tuple[int, ...]
    graphers: tuple[int, ...]
    keeper_of: dict[int, int] = field(hash=False)  # client rank -> keeper rank
    reason: str = "start"
    announced: int = 0  # wall clock (ns) when the visor announced it

    def grapher_of(self, story: int, window: int) -> int:
        return self.graphers[stripe(story, window, len(self.graphers))]

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.number,
            "start": None if self.start == NEVER else self.start,
            "keepers": list(self.keepers),
            "graphers": list(self.graphers),
            "keeper_of": {str(c): k for c, k in sorted(self.keeper_of.items())},
            "reason": self.reason,
            "announced": self.announced,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Epoch:
        return Epoch(
            int(d["epoch"]),
            NEVER if d["start"] is None else int(d["start"]),
            tuple(d["keepers"]),
            tuple(d["graphers"]),
            {int(c): int(k) for c, k in d["keeper_of"].items()},
            d.get("reason", ""),
            int(d.get("announced", 0)),
        )


class Membership:
    """The epoch table as one rank knows it (epochs are appended in order, never changed)."""

    def __init__(self, epochs: Sequence[Epoch]) -> None:
        self.epochs: list[Epoch] = list(epochs)

    @property
    def latest(self) -> Epoch:
        return self.epochs[-1]

    def add(self, epoch: Epoch) -> None:
        if epoch.number != self.latest.number + 1:
            raise ValueError(f"epoch {epoch.number} after epoch {self.latest.number}")
        if epoch.start <= self.latest.start:
            raise ValueError(f"epoch {epoch.number} starts at {epoch.start}, before its predecessor")
        self.epochs.append(epoch)

    def epoch_at(self, t: int) -> Epoch:
        """The epoch holding time ``t`` (ns)."""
        for e in reversed(self.epochs):
            if t >= e.start:
                return e
        return self.epochs[0]

    def epoch_of_window(self, window: int, window_ns: int) -> Epoch:
        return self.epoch_at(window * window_ns)

    def grapher_of(self, story: int, window: int, window_ns: int, late: bool = False) -> int:
        """Where a chunk of ``(story, window)`` goes: the owner of its epoch; a late chunk whose
        owner has left goes to the latest epoch's grapher of that window instead."""
        owner = self.epoch_of_window(window, window_ns).grapher_of(story, window)
        if late and owner not in self.latest.graphers:
            return self.latest.grapher_of(story, window)
        return owner

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.epochs]

    @staticmethod
    def from_json(epochs: list[dict[str, Any]]) -> Membership:
        return Membership([Epoch.from_json(d) for d in epochs])


def initial(keepers: Sequence[int], graphers: Sequence[int], keeper_of: dict[int, int]) -> Membership:
    """Epoch 0: the layout's members."""
    return Membership([Epoch(0, NEVER, tuple(keepers), tuple(graphers), dict(keeper_of))])


def assign_clients(clients: Sequence[int], keepers: Sequence[int], before: dict[int, int]) -> dict[int, int]:
    """Clients to keepers, moving as few as possible: a client stays with its keeper if that keeper
    stays and is not above its fair share; the others fill the least loaded keepers."""
    if not keepers:
        raise ScaleError("at least one keeper is needed")
    fair = -(-len(clients) // len(keepers))  # ceil
    load = {k: 0 for k in keepers}
    out: dict[int, int] = {}
    movers = []
    for c in clients:
        k = before.get(c)
        if k in load and load[k] < fair:
            out[c] = k
            load[k] += 1
        else:
            movers.append(c)
    for c in movers:
        k = min(keepers, key=lambda r: (load[r], r))
        out[c] = k
        load[k] += 1
    return out


def plan(
    current: Epoch,
    keepers: int,
    graphers: int,
    spares: Sequence[int],
    clients: Sequence[int],
    start: int,
    reason: str,
    announced: int = 0,
) -> tuple[Epoch, list[tuple[int, str]]]:
    """The next epoch with ``keepers`` keepers and ``graphers`` graphers; returns it and the spares
    to activate as ``(rank, role)``. Growing takes spares (lowest rank first); shrinking retires
    the members that joined last. Raises ScaleError, changing nothing, when it cannot be done."""
    if keepers < 1 or graphers < 1:
        raise ScaleError(
            f"scale(keepers={keepers}, graphers={graphers}): a session needs at least one keeper and one grapher"
        )
    grow = max(0, keepers - len(current.keepers)) + max(0, graphers - len(current.graphers))
    if grow > len(spares):
        raise ScaleError(
            f"scale(keepers={keepers}, graphers={graphers}) needs {grow} spare rank(s) but {len(spares)} "
            f"are idle (layout.spares); start the job with more spares or ask for fewer members"
        )
    pool = sorted(spares)
    activate: list[tuple[int, str]] = []
    new_k = list(current.keepers[:keepers])
    while len(new_k) < keepers:
        r = pool.pop(0)
        new_k.append(r)
        activate.append((r, "keeper"))
    new_g = list(current.graphers[:graphers])
    while len(new_g) < graphers:
        r = pool.pop(0)
        new_g.append(r)
        activate.append((r, "grapher"))
    keeper_of = assign_clients(clients, new_k, current.keeper_of)
    epoch = Epoch(current.number + 1, start, tuple(new_k), tuple(new_g), keeper_of, reason, announced)
    return epoch, activate
