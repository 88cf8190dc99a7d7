"""A client's view of the membership: where its batches go, which members its replays and
syncs address (pure bookkeeping, no MPI; the client holds its lock around every call).

- ``keeper``: where the client's batches go now. An epoch that gives the client another
  keeper sets ``switch = (start, keeper)``: the first batch sent at or after ``start`` is cut
  there, the part before goes to the old keeper with END (it expects nothing more from this
  client), the rest to the new one, which first learns every story of the client.
- ``numbers``: a keeper applies a client's batches (and replay queries) in the order of
  their numbers, counted per keeper from 0 for each time the keeper starts serving.
- ``keepers`` / ``graphers``: the members a replay asks (every member not dropped: a
  keeper that the client left may still hold its events until it drained).
- ``data_keepers``: keepers that may hold this client's events not yet committed; a sync
  goes to each of them.
"""

from __future__ import annotations

from .membership import Epoch, Membership


class Route:
    def __init__(self, rank: int, members: Membership) -> None:
        self.rank = rank
        self.members = members
        latest = members.latest
        self.keeper = latest.keeper_of[rank]
        self.switch: tuple[int, int] | None = None
        self.numbers: dict[int, int] = {}
        self.keepers: set[int] = set(latest.keepers)
        self.graphers: set[int] = set(latest.graphers)
        self.data_keepers: set[int] = {self.keeper}
        self.left_graphers: set[int] = set()  # graphers that left: a replay reads their segments from the store

    @property
    def epoch(self) -> int:
        return self.members.latest.number

    def number(self, keeper: int) -> int:
        """The number of this client's next batch or query to ``keeper``."""
        n = self.numbers.get(keeper, 0)
        self.numbers[keeper] = n + 1
        return n

    def adopt(self, epoch: Epoch) -> None:
        self.members.add(epoch)
        for k in epoch.keepers:
            if k not in self.keepers:  # serving anew: its batch numbers start again
                self.numbers[k] = 0
        self.keepers |= set(epoch.keepers)
        self.graphers |= set(epoch.graphers)
        mine = epoch.keeper_of.get(self.rank, self.keeper)
        self.switch = (epoch.start, mine) if mine != self.keeper else None

    def switch_due(self, promise: int) -> bool:
        """True when a batch with this promise must be cut at the pending switch."""
        return self.switch is not None and promise >= self.switch[0]

    def switched(self) -> int:
        """The switch is done: the new keeper is ours; returns the old one."""
        assert self.switch is not None
        old, self.keeper = self.keeper, self.switch[1]
        self.switch = None
        self.data_keepers.add(self.keeper)
        return old

    def drop(self, ranks: set[int]) -> None:
        self.left_graphers |= ranks & self.graphers
        self.keepers -= ranks
        self.graphers -= ranks
        self.data_keepers -= ranks

    def end_targets(self) -> list[int]:
        """Keepers that must get this client's END: its keeper, and the next one if a switch is pending."""
        return [self.keeper] + ([self.switch[1]] if self.switch is not None else [])
