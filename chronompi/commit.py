"""The commit watermark: when a client's ``sync()`` may be confirmed (pure, no MPI).

A client's ``sync()`` sends a SYNC batch (it carries the client's open events) to its
keeper, numbered in the client's batch stream, so the keeper applies it after every
event the client sent before. The batch's promise is the client's *sync point* P:
every event the client logged before the call was stamped at or before P.

- **Keeper.** Those events sit in windows ``<= window_of(P)``, open or late. The keeper
  does not wait for those windows to close (that takes up to ``window_ms`` plus the
  slowest client's heartbeat): in the same pass it ships every open window up to
  ``window_of(P)`` as it is, and the late pieces, then sends a SYNC_MARK to every
  grapher on the chunk tag. MPI's non-overtaking rule delivers it behind those chunks.
- **Grapher.** With the marker in, every chunk holding those events is here. It writes
  every pending window up to ``window_of(P)`` at once, closed or not, as a run of that
  window (what comes for the window later becomes another run; readers merge the runs
  of a window). A window leaves ``pending`` only after its rows and the index rows that
  cover them were written and flushed, so the sync is due when no window
  ``<= window_of(P)`` is pending. The grapher fsyncs its open segment
  (``storage.fsync``) and answers the client.
- **Client.** ``sync()`` returns P once every grapher has answered.

The price of a sync is at most one extra run per open window it cuts; the order of the
store is unaffected. Late events count as committed when their own run is.
"""

from __future__ import annotations

from dataclasses import dataclass

from .windows import NEVER, window_of


@dataclass(frozen=True)
class SyncPoint:
    """A sync in flight: which client (session rank), its SYNC batch's number, its sync point (ns)."""

    client: int
    sync_no: int
    point: int
    keeper: int = -1  # the keeper the SYNC batch went to (its number is in that keeper's stream)


class SyncQueue:
    """Syncs waiting at a keeper or grapher until every window up to their point has moved on."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self.waiting: list[SyncPoint] = []
        self.confirmed = 0

    def __len__(self) -> int:
        return len(self.waiting)

    def add(self, sp: SyncPoint) -> None:
        self.waiting.append(sp)

    def through(self) -> int:
        """The last window some waiting sync needs written (NEVER when none waits)."""
        if not self.waiting:
            return NEVER
        return max(window_of(sp.point, self.window_ns) for sp in self.waiting)

    def due(self, first_open: int) -> list[SyncPoint]:
        """Take the syncs whose point lies in a window before ``first_open``, the first window not done here."""
        if not self.waiting:
            return []
        out = [sp for sp in self.waiting if window_of(sp.point, self.window_ns) < first_open]
        if out:
            self.waiting = [sp for sp in self.waiting if window_of(sp.point, self.window_ns) >= first_open]
            self.confirmed += len(out)
        return out

    def take_all(self) -> list[SyncPoint]:
        """Every waiting sync (the role has passed on or written everything it holds)."""
        out, self.waiting = self.waiting, []
        self.confirmed += len(out)
        return out
