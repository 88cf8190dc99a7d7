"""The keeper: receives client batches into a ring buffer, cuts them into
(story, window) chunks, closes windows behind its watermark and forwards them
to their graphers.

MPI invariants:

- Every free ring slot has an ``Irecv(ANY_SOURCE, TAG_BATCH)`` posted; a
  slot is re-posted only after its batch was applied (copied out), so the ring
  bounds the memory a keeper gives to incoming data.
- A client's batches may complete out of order (rendezvous vs eager), so they
  pass through a :class:`Sequencer` keyed by the batch number in the header.
- Every chunk, watermark and END goes to a grapher on ``TAG_CHUNK``: the
  grapher sees them in the order they were sent, so when it learns a
  watermark it already holds every chunk the keeper closed below it.
- Isend buffers are kept with their request until the request completes.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import numpy as np
from mpi4py import MPI

from . import codec
from .codec import EVENT, Batch
from .commit import SyncPoint, SyncQueue
from .membership import Epoch, Membership
from .merge import concat_events, gather, is_sorted, merge_runs, pieces_in_range, total_order
from .progress import Sequencer
from .protocol import MOVED, TAG_BATCH, TAG_CHUNK, TAG_CHUNK_HEAP, TAG_REPLY, TAG_SYNC, Context
from .service import Service
from .windows import FOREVER, NEVER, is_closed, window_of

log = logging.getLogger(__name__)

Piece = tuple[np.ndarray, np.ndarray]  # (EVENT rows sorted by time, heap)


class Keeper(Service):
    role = "keeper"

    def __init__(self, ctx: Context, members: Membership | None = None, graphers: tuple[int, ...] = ()) -> None:
        super().__init__(ctx, members)
        cfg = ctx.cfg
        self.window_ns = int(cfg.keeper.window_ms * 1e6)
        self.acceptance_ns = int(cfg.keeper.acceptance_ms * 1e6)
        # graphers this keeper addresses (watermarks, END, sync markers): every member not dropped
        self.graphers = sorted(graphers or self.members.latest.graphers)
        slot_bytes = codec.batch_capacity(cfg.client.batch_bytes, cfg.client.max_event_bytes)
        self.slot_bytes = slot_bytes
        self.batch_bytes = cfg.client.batch_bytes
        self.ring = [np.empty(slot_bytes, np.uint8) for _ in range(cfg.keeper.ring_slots)]
        self.reqs: list[Any] = [MPI.REQUEST_NULL] * cfg.keeper.ring_slots
        self.statuses = [MPI.Status() for _ in self.reqs]
        for i in range(cfg.keeper.ring_slots):
            self._post(i)
        self.clients: set[int] = set()
        self.promise: dict[int, int] = {}  # by client rank
        self.heard: dict[int, int] = {}
        self.ended: set[int] = set()
        self.moved: set[int] = set()  # clients that left for another keeper (LEAVE): ended here, until given back
        self._take_clients(self.members.latest)
        self.sequencer: Sequencer[tuple[int, int]] = Sequencer()
        self.names: dict[int, tuple[str, str]] = {}
        self.open: dict[tuple[int, int], list[Piece]] = defaultdict(list)
        self.closed_below = NEVER  # first window not closed yet (for every story): window_of(watermark)
        self.late: dict[tuple[int, int], list[Piece]] = defaultdict(list)
        self.told = NEVER  # last watermark told to the graphers
        self.moving_out: tuple[int, set[int]] | None = None  # (epoch, clients it moves away from here)
        self.ring_peak = 0  # most slots found filled at once since the last load report
        self.syncs = SyncQueue(self.window_ns)  # clients' syncs waiting for their windows to be shipped
        # stats
        self.n_batches = 0
        self.n_events = 0
        self.n_bytes = 0
        self.n_late = 0
        self.n_dropped = 0
        self.n_chunks = 0
        self.n_queries = 0
        self.held_max = 0
        self.open_max = 0
        self._slot = 0  # the ring slot whose batch is being applied

    # -- ring -------------------------------------------------------------
    def _post(self, i: int) -> None:
        self.reqs[i] = self.comm.Irecv([self.ring[i], MPI.BYTE], MPI.ANY_SOURCE, TAG_BATCH)

    def _receive(self) -> bool:
        statuses = self.statuses
        done = MPI.Request.Testsome(self.reqs, statuses)
        if not done:
            return False
        self.ring_peak = max(self.ring_peak, len(done))
        for j, i in enumerate(done):
            st = statuses[j]  # statuses are filled in the order of the returned indices
            nbytes = st.Get_count(MPI.BYTE)
            src = st.Get_source()
            batch = codec.decode_batch(self.ring[i], nbytes)
            for slot, n in self.sequencer.push(src, batch.batch_no, (i, nbytes)):
                self._slot = slot
                self._apply(src, codec.decode_batch(self.ring[slot], n))
                self._post(slot)
        self.held_max = max(self.held_max, self.sequencer.held())
        return True

    # -- batches ----------------------------------------------------------
    def _apply(self, src: int, b: Batch) -> None:
        if b.kind == codec.QUERY:
            self._answer(src, b)
            return
        self.n_batches += 1
        self.heard[src] = time.monotonic_ns()
        for sid, chron, story in b.decls:
            self.names[sid] = (chron, story)
        self.n_dropped += b.dropped
        n = len(b.records)
        if n:
            self._cut(b)
        if b.kind in (codec.END, codec.LEAVE):
            self.ended.add(src)
            self.promise[src] = FOREVER
            if b.kind == codec.LEAVE:  # moved to another keeper (it may be given back later)
                self.moved.add(src)
        elif b.promise > self.promise[src]:
            self.promise[src] = b.promise
        if b.kind == codec.SYNC:
            self.syncs.add(SyncPoint(src, b.batch_no, b.promise))  # its windows are cut in _close_windows
        elif b.kind == codec.RECEIPT:  # applied: every event the client sent so far is in this keeper's memory
            self.isend(codec.encode_sync_ack(b.batch_no, self.ctx.rank, self.told, 0, self.ctx.rank), src, TAG_SYNC)

    def _cut(self, b: Batch) -> None:
        """Split a batch's events into (story, window) pieces and file them as open or late."""
        rec = b.records
        n = len(rec)
        ev = np.empty(n, EVENT)
        ev["time"] = rec["time"]
        ev["client"] = b.client
        ev["seq"] = rec["seq"]
        ev["length"] = rec["length"]
        ev["offset"] = np.cumsum(rec["length"], dtype=np.uint64) - rec["length"]
        self.n_events += n
        self.n_bytes += b.heap.nbytes
        w = rec["time"] // self.window_ns
        s = rec["story"]
        if w[0] == w[-1] and bool(np.all(s == s[0])):  # times only grow inside a batch
            self._file(int(s[0]), int(w[0]), (ev, self._keep_heap(b.heap)))
            return
        order = np.lexsort((w, s))  # stable: time order kept inside each group
        ws, ss = w[order], s[order]
        cut = np.flatnonzero((ws[1:] != ws[:-1]) | (ss[1:] != ss[:-1])) + 1
        bounds = np.concatenate(([0], cut, [n]))
        for a, z in zip(bounds[:-1], bounds[1:]):
            idx = order[a:z]
            part = codec.rows(ev)[idx].view(EVENT)
            heap = gather(b.heap, part["offset"], part["length"])
            part["offset"] = np.cumsum(part["length"], dtype=np.uint64) - part["length"]
            self._file(int(ss[a]), int(ws[a]), (part, heap))

    def _keep_heap(self, heap: np.ndarray) -> np.ndarray:
        """The heap of a batch filed whole, out of its receive slot before the slot is posted again.

        A heap of at least half a batch keeps the slot's buffer itself (a view), and the slot gets a new
        one: no copy of the payloads here, for at most 4x (typically 2x) the heap's bytes held while its
        window is open. A smaller heap is copied: it must not pin a whole slot."""
        if heap.nbytes * 2 < self.batch_bytes:
            return heap.copy()
        self.ring[self._slot] = np.empty(self.slot_bytes, np.uint8)
        return heap

    def _file(self, story: int, window: int, piece: Piece) -> None:
        if window < self.closed_below:
            self.late[(story, window)].append(piece)
            self.n_late += len(piece[0])
        else:
            self.open[(story, window)].append(piece)

    # -- watermark and windows -------------------------------------------
    def watermark(self) -> int:
        """Smallest promise over live clients; a silent client holds time at most acceptance_ms."""
        if self.forced:
            return FOREVER
        now = time.monotonic_ns()
        wm = FOREVER
        for c, p in self.promise.items():
            if p == FOREVER:
                continue
            silent = now - self.heard[c] - self.acceptance_ns
            if p == NEVER:
                eff = NEVER if silent <= 0 else FOREVER  # never heard: wait acceptance_ms, then ignore
            else:
                eff = p + max(0, silent)
            wm = min(wm, eff)
        return wm

    def _send_chunk(self, dest: int, buf: np.ndarray) -> None:
        self.isend(buf, dest, TAG_CHUNK)

    # -- online replay ----------------------------------------------------
    def _answer(self, src: int, b: Batch) -> None:
        """A replay query passed this keeper: answer with what is in memory, then mark the chunk stream.

        Everything this keeper shipped before the query travels to the graphers ahead
        of the marker (same tag), so the graphers' answers cover it; what is still here
        is in this reply. Nothing recorded before the query falls between the two.
        """
        q = codec.decode_query(b.heap)
        self.n_queries += 1
        runs = pieces_in_range(
            list(self.open.items()) + list(self.late.items()), q.story, q.start, q.end, self.window_ns
        )
        events, heap = merge_runs(runs) if runs else (np.empty(0, EVENT), np.empty(0, np.uint8))
        reply = codec.encode_chunk(codec.REPLY, self.ctx.rank, 0, q.story, q.qid, events=events, heap=heap)
        self.isend(reply, src, TAG_REPLY)
        marker = codec.encode_chunk(codec.MARKER, self.ctx.rank, 0, q.story, q.qid, heap=b.heap.copy())
        for g in q.graphers:  # the graphers the client asked (its view of the membership)
            self._send_chunk(g, marker)

    def _ship(self, key: tuple[int, int], pieces: list[Piece], wm: int, late: bool) -> None:
        story, window = key
        n = sum(len(e) for e, _ in pieces)
        heap_bytes = sum(h.nbytes for _, h in pieces)
        flags = codec.FLAG_LATE if late else 0
        heaps = [h for _, h in pieces if h.nbytes]
        buf, ev_out, _ = codec.chunk_buffer(
            codec.CHUNK, self.ctx.rank, wm, story, window, self.names[story], n, heap_bytes, flags, len(heaps)
        )
        # the events are sorted straight into the buffer, their offsets pointing into the heaps laid
        # end to end; each heap follows as a message of its own, sent from where it lies (no copy here:
        # on one node the grapher reads it straight from this process's memory, see architecture.md)
        if len(pieces) == 1:
            codec.rows(ev_out)[...] = codec.rows(pieces[0][0])
        else:
            events = concat_events([e for e, _ in pieces], [h.nbytes for _, h in pieces])
            if is_sorted(events):
                codec.rows(ev_out)[...] = codec.rows(events)
            else:
                np.take(codec.rows(events), total_order(events), out=codec.rows(ev_out))
        dest = self.members.grapher_of(story, window, self.window_ns, late=late)
        self._send_chunk(dest, buf)
        for h in heaps:
            self.isend(h, dest, TAG_CHUNK_HEAP)
        self.n_chunks += 1

    def _close_windows(self) -> bool:
        wm = self.watermark()
        progressed = False
        if self.late:
            for key, pieces in self.late.items():
                self._ship(key, pieces, self.told, late=True)
            self.late.clear()
            progressed = True
        # window w is closed once the watermark reached its end, i.e. w < window_of(wm);
        # whatever comes for a closed window later is late
        self.closed_below = max(self.closed_below, window_of(wm, self.window_ns))
        ready = [k for k in self.open if is_closed(k[1], wm, self.window_ns)]
        for key in sorted(ready, key=lambda k: k[1]):
            self._ship(key, self.open.pop(key), wm, late=False)
        if ready:
            progressed = True
        progressed |= self._cut_for_syncs(wm)
        if window_of(wm, self.window_ns) != window_of(self.told, self.window_ns) and wm > self.told:
            self.told = wm
            self._tell_watermark(self.graphers)
            progressed = True
        self.open_max = max(self.open_max, len(self.open))
        return progressed

    def _tell_watermark(self, graphers: list[int]) -> None:
        """WATERMARK notice: this keeper's watermark and the epoch it knows (in the window field)."""
        buf = codec.encode_chunk(codec.WATERMARK, self.ctx.rank, self.told, window=self.members.latest.number)
        for g in graphers:
            self._send_chunk(g, buf)

    # -- membership -------------------------------------------------------
    def _take_clients(self, epoch: Epoch) -> None:
        """Clients the epoch gives this keeper: until its start they promise nothing older than it."""
        now_wall, now_mono = time.time_ns(), time.monotonic_ns()
        for c, k in epoch.keeper_of.items():
            if k != self.ctx.rank or (c in self.clients and c not in self.moved):
                continue  # (an ended client stays ended; one that moved away may come back)
            self.clients.add(c)
            self.ended.discard(c)
            self.moved.discard(c)
            if epoch.start == NEVER or epoch.start <= now_wall:
                self.promise[c], self.heard[c] = NEVER, now_mono
            else:  # silent until the epoch starts: that is no silence (acceptance_ms counts from the start)
                self.promise[c] = epoch.start - 1
                self.heard[c] = now_mono + (epoch.start - now_wall)

    def on_epoch(self, epoch: Epoch) -> None:
        movers = {c for c in self.clients - self.ended if epoch.keeper_of.get(c) != self.ctx.rank}
        self.moving_out = (epoch.number, movers)  # the change is over for us once each sent its END
        self._take_clients(epoch)
        self.graphers = sorted(set(self.graphers) | set(epoch.graphers))
        self._tell_watermark(self.graphers)  # new graphers learn where this keeper is; all learn the epoch
        self.leaving = self.ctx.rank not in epoch.keepers

    def on_drop(self, ranks: set[int]) -> None:
        self.graphers = [g for g in self.graphers if g not in ranks]

    def load_figures(self) -> dict[str, float]:
        ring, self.ring_peak = self.ring_peak / len(self.reqs), 0
        return {"ring": ring, "open": float(len(self.open))}

    def on_gone(self, client: int) -> None:
        if client in self.clients:
            self.ended.add(client)
            self.promise[client] = FOREVER

    # -- lifecycle --------------------------------------------------------
    def step(self) -> bool:
        progressed = self._receive()
        if self.moving_out is not None and self.moving_out[1] <= self.ended and not self.leaving:
            self._send_visor((MOVED, self.ctx.rank, self.moving_out[0]))
            self.moving_out = None
        progressed |= self._close_windows()
        self.outbox.reap()
        # the end of this keeper's part: every client ended (END or moved away) and, for a member of
        # the latest epoch, the session is sealed (no client can be given to it any more)
        done = self.ended >= self.clients and (self.leaving or self.sealed)
        if (self.forced or done) and not self.open and not self.late:
            self._finish()
        return progressed

    def _cut_for_syncs(self, wm: int) -> bool:
        """Ship now every open window up to the syncs' points, as runs of their own, then mark the streams.

        A sync does not wait for its windows to close (that takes up to ``window_ms`` plus the
        slowest client's heartbeat): what this keeper holds of them goes out at once and the
        grapher writes it as a run of the window; whatever comes for those windows later is
        another run (readers merge the runs of a window). Late pieces went out above.
        """
        due = self.syncs.take_all()
        if not due:
            return False
        through = max(window_of(sp.point, self.window_ns) for sp in due)
        for key in sorted((k for k in self.open if k[1] <= through), key=lambda k: k[1]):
            self._ship(key, self.open.pop(key), wm, late=False)
        self._pass_syncs(due)
        return True

    def _pass_syncs(self, due: list[SyncPoint]) -> None:
        """Tell every grapher that the chunks holding these syncs' events went out before this marker,
        and the client how many grapher answers to wait for."""
        for sp in due:
            marker = codec.encode_chunk(
                codec.SYNC_MARK, self.ctx.rank, sp.point, heap=codec.encode_sync(sp.sync_no, sp.client, sp.point)
            )
            for g in self.graphers:
                self._send_chunk(g, marker)
            ack = codec.encode_sync_ack(sp.sync_no, self.ctx.rank, self.told, len(self.graphers), self.ctx.rank)
            self.isend(ack, sp.client, TAG_SYNC)

    def _finish(self) -> None:
        self._pass_syncs(self.syncs.take_all())  # every window is shipped
        for g in self.graphers:
            self._send_chunk(g, codec.encode_chunk(codec.CHUNK_END, self.ctx.rank, FOREVER))
        self.outbox.drain(self.backoff)
        self.finished = True

    def serve(self) -> bool:
        # only replay queries and syncs of clients still running arrive now (a client that moved away
        # syncs here until it drops this keeper): everything is shipped, so a sync passes on at once
        got = self._receive()
        due = self.syncs.take_all()
        self._pass_syncs(due)
        return got or bool(due)

    def shutdown(self) -> None:
        # released: no client will send again, withdraw the ring's receives
        for r in self.reqs:
            if r != MPI.REQUEST_NULL:
                r.Cancel()
        MPI.Request.Waitall(self.reqs)

    def stats(self) -> dict[str, Any]:
        s = super().stats()
        s.update(
            batches=self.n_batches,
            events=self.n_events,
            bytes=self.n_bytes,
            late=self.n_late,
            dropped=self.n_dropped,
            chunks=self.n_chunks,
            queries=self.n_queries,
            syncs=self.syncs.confirmed,
            reorder_held_max=self.held_max,
            open_windows_max=self.open_max,
            ring_slots=len(self.reqs),
        )
        return s
