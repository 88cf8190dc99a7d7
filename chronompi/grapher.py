"""The grapher: merges the chunks that all keepers send for a window and
appends the result to its own HDF5 segment.

A window ``w`` of a story is merged once every keeper's watermark has passed
its end: keepers send a window's chunk before the watermark that closes it,
on the same tag, so by then every chunk of the window is here. A chunk that
arrives for a window already written (a late run) is written as a run of its
own; readers merge the runs of a window. No collective call anywhere.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from mpi4py import MPI

from . import codec
from .codec import EVENT
from .commit import SyncPoint, SyncQueue
from .membership import Epoch, Membership
from .merge import merge_runs, order_runs, pieces_in_range
from .protocol import STORAGE, TAG_CHUNK, TAG_CHUNK_HEAP, TAG_CTRL, TAG_REPLY, TAG_SYNC, Context
from .service import Service
from .store.reader import index_rows, read_rows
from .store.space import Outage, describe
from .store.writer import Run, SegmentWriter
from .windows import FOREVER, NEVER, is_closed, window_start

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_STEP = 256


class Grapher(Service):
    role = "grapher"

    def __init__(
        self,
        ctx: Context,
        members: Membership | None = None,
        keepers: tuple[int, ...] = (),
        first_segment: int = 0,
    ) -> None:
        super().__init__(ctx, members)
        self.window_ns = int(ctx.cfg.keeper.window_ms * 1e6)
        self.index = ctx.roles.grapher_index(ctx.rank)
        root = Path(ctx.cfg.storage.root)
        self.writer = SegmentWriter(root, ctx.run_id, self.index, ctx.cfg.storage)
        self.writer.n_segment = first_segment  # a spare serving again goes on numbering its segments
        # keepers whose chunks may come: every one not ended (their END says so)
        self.wm: dict[int, int] = {k: NEVER for k in (keepers or self.members.latest.keepers)}
        self.epoch_seen: dict[int, int] = dict.fromkeys(self.wm, 0)  # the epoch each keeper said it knows
        self.ended: set[int] = set()
        self.leave_at: tuple[int, int] | None = None  # (start, number) of the epoch this grapher is not part of
        self.by_epoch: dict[int, int] = {}  # events written, by the membership epoch of their window
        self.pending: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.late_flag: set[tuple[int, int]] = set()
        self.names: dict[int, tuple[str, str]] = {}
        self.n_chunks = 0
        self.n_late_runs = 0
        self.n_queries = 0
        self.markers: dict[tuple[int, int], set[int]] = {}  # (client, query id) -> keepers whose marker came
        self.pending_max = 0
        self.syncs = SyncQueue(self.window_ns)  # clients' syncs whose markers came, waiting for their commits
        self.outage: Outage | None = None  # appends (or fsyncs) fail: retrying until storage.retry_s
        self.move_outage: Outage | None = None  # closed segments wait in staging: the store has no room
        self.gave_up: dict[str, Any] | None = None  # what made this grapher stop writing (the run fails)
        self.events_lost = 0  # events dropped after giving up

    def _receive(self) -> bool:
        got = 0
        status = MPI.Status()
        while got < MAX_MESSAGES_PER_STEP:
            # matched probe + receive: the message probed is the one received, even with threads
            msg = self.comm.Improbe(MPI.ANY_SOURCE, TAG_CHUNK, status)
            if msg is None:
                break
            buf = np.empty(status.Get_count(MPI.BYTE), np.uint8)
            msg.Recv([buf, MPI.BYTE])
            self._handle(codec.decode_chunk(buf, self._heap_apart(buf, status.Get_source())))
            got += 1
        return got > 0

    def _heap_apart(self, buf: np.ndarray, keeper: int) -> np.ndarray | None:
        """The heap of a chunk that travelled apart (FLAG_HEAP_APART): its parts, received into one
        buffer in order. They were sent right behind the header, so they are (nearly) here."""
        parts, nbytes = codec.chunk_parts(buf)
        if not parts:
            return None
        heap = np.empty(nbytes, np.uint8)
        pos = 0
        status = MPI.Status()
        for _ in range(parts):
            while (msg := self.comm.Improbe(keeper, TAG_CHUNK_HEAP, status)) is None:
                self.backoff.sleep()  # not a blocking probe: that spins, and the keeper may need the core
            self.backoff.reset()
            size = status.Get_count(MPI.BYTE)
            if pos + size > nbytes:
                raise codec.CodecError(f"chunk heap parts from keeper {keeper} exceed the {nbytes} bytes announced")
            msg.Recv([heap[pos : pos + size], MPI.BYTE])
            pos += size
        if pos != nbytes:
            raise codec.CodecError(f"chunk heap parts from keeper {keeper}: {pos} bytes, {nbytes} announced")
        return heap

    def _handle(self, c: codec.Chunk) -> None:
        if c.kind == codec.CHUNK:
            self.n_chunks += 1
            self.names[c.story] = c.names
            key = (c.story, c.window)
            self.pending[key].append((c.events, c.heap))
            if c.flags & codec.FLAG_LATE:
                self.late_flag.add(key)
        elif c.kind == codec.WATERMARK:
            self.wm[c.keeper] = max(self.wm.get(c.keeper, NEVER), c.watermark)
            self.epoch_seen[c.keeper] = max(self.epoch_seen.get(c.keeper, 0), c.window)
        elif c.kind == codec.CHUNK_END:
            self.wm[c.keeper] = FOREVER
            self.ended.add(c.keeper)
        elif c.kind == codec.SYNC_MARK:  # every chunk holding the client's events up to the point is here
            sync_no, client, point = codec.decode_sync(c.heap)
            self.syncs.add(SyncPoint(client, sync_no, point, c.keeper))
        elif c.kind == codec.MARKER:
            q = codec.decode_query(c.heap)
            key = (q.client, q.qid)  # query ids are per client
            seen = self.markers.setdefault(key, set())
            seen.add(c.keeper)
            if len(seen) == q.keepers:  # every asked keeper's earlier chunks are here now
                del self.markers[key]
                self._answer(q.qid, q.client, q.story, q.start, q.end)

    # -- online replay ----------------------------------------------------
    def _answer(self, qid: int, client: int, sid: int, t0: int, t1: int) -> None:
        """Reply with this grapher's events of the story in [t0, t1): pending windows and its files."""
        self.n_queries += 1
        runs = pieces_in_range(self.pending.items(), sid, t0, t1, self.window_ns)
        names = self.names.get(sid)
        if names is not None:
            key = f"{names[0]}/{names[1]}"
            for path in self.writer.closed_paths:
                with h5py.File(path, "r") as f:
                    if key in f:
                        runs += read_rows(index_rows(f, key, t0, t1), t0, t1)
            f_open = self.writer.file
            if f_open is not None and key in f_open:
                runs += read_rows(index_rows(f_open, key, t0, t1), t0, t1)
        events, heap = merge_runs(runs) if runs else (np.empty(0, EVENT), np.empty(0, np.uint8))
        self.isend(
            codec.encode_chunk(codec.REPLY, self.ctx.rank, 0, sid, qid, events=events, heap=heap), client, TAG_REPLY
        )

    def _commit(self) -> bool:
        low = min(self.wm.values())
        through = self.syncs.through()  # a sync's windows are written now, closed or not (commit.py)
        ready = [k for k in self.pending if is_closed(k[1], low, self.window_ns) or k[1] <= through]
        if not ready:
            return False
        if self.gave_up is not None:
            return self._drop(ready)
        if self.outage is not None and not self.outage.due():
            return False
        by_story: dict[int, list[Run]] = defaultdict(list)
        for key in sorted(ready, key=lambda k: k[1]):  # (pieces stay pending until written)
            events, heaps = order_runs(self.pending[key])  # events sorted; payloads written as they came
            by_story[key[0]].append(Run(key[1], events, heaps, key in self.late_flag))
        try:
            self.writer.append_all([(*self.names[story], runs) for story, runs in by_story.items()])
        except OSError as exc:  # nothing of these windows is committed: they wait for a retry
            self._storage_failed(exc)
            return False
        for story_runs in by_story.values():  # events per membership epoch (of their window), for the summary
            for run in story_runs:
                e = self.members.epoch_of_window(run.window, self.window_ns).number
                self.by_epoch[e] = self.by_epoch.get(e, 0) + len(run.events)
        for key in ready:  # committed: only now do the windows leave memory
            del self.pending[key]
            if key in self.late_flag:
                self.late_flag.discard(key)
                self.n_late_runs += 1
        self._storage_recovered()
        return True

    # -- storage faults (docs/architecture.md, "Storage faults") -------------
    def _report_storage(self, state: str, info: dict[str, Any]) -> None:
        msg = (STORAGE, self.ctx.rank, self.ctx.host, state, {"grapher": self.index, **info})
        self.comm.send(msg, dest=self.ctx.roles.visor, tag=TAG_CTRL)

    def _storage_failed(self, exc: OSError) -> None:
        if self.outage is None:
            self.outage = Outage(exc, self.ctx.cfg.storage.retry_s)
            log.warning("grapher %d: cannot write (%s); retrying for %.0f s", self.index, exc, self.outage.retry_s)
            self._report_storage("retrying", self.outage.info())
        else:
            self.outage.failed_again(exc)

    def _storage_recovered(self) -> None:
        if self.outage is not None:
            info = self.outage.info()
            self.outage = None
            log.warning("grapher %d: writing again after %.1f s", self.index, info["for_s"])
            self._report_storage("recovered", info)

    def _drop(self, keys: list[tuple[int, int]]) -> bool:
        """Forget windows this grapher can no longer write, counting their events as lost."""
        for key in keys:
            self.events_lost += sum(len(events) for events, _ in self.pending.pop(key))
            self.late_flag.discard(key)
        return bool(keys)

    def _give_up(self, error: OSError, since: float) -> None:
        """Stop writing for good: drop what is pending and tell the visor, which ends the run as failed."""
        self._drop(list(self.pending))
        self.gave_up = describe(error) | {
            "after_s": round(time.monotonic() - since, 3),
            "events_lost": self.events_lost,
            "unmoved": [str(p) for p in self.writer.unmoved()],
        }
        log.error("grapher %d: giving up on storage: %s", self.index, self.gave_up)
        self._report_storage("gave-up", self.gave_up)

    def _watch_storage(self) -> None:
        """Once a step: report abandoned segments, retry stranded moves, give up after storage.retry_s."""
        for exc in self.writer.take_troubles():
            self._report_storage("abandoned", describe(exc))
        if self.outage is not None and self.gave_up is None and self.outage.expired():
            self._give_up(self.outage.error, self.outage.since)
        if self.writer.stranded:
            if self.move_outage is None:
                assert self.writer.move_error is not None
                self.move_outage = Outage(self.writer.move_error, self.ctx.cfg.storage.retry_s)
                self._report_storage("retrying", self.move_outage.info())  # writing goes on in staging
            elif self.move_outage.due():
                if not self.writer.retry_moves():
                    assert self.writer.move_error is not None
                    self.move_outage.failed_again(self.writer.move_error)
        if not self.writer.stranded and self.move_outage is not None:
            info = self.move_outage.info()
            self.move_outage = None
            self._report_storage("recovered", info)

    def _close_storage(self) -> None:
        """At the end: retry the moves until storage.retry_s after their first failure; name what stays out."""
        self._watch_storage()
        out = self.move_outage
        while out is not None and self.writer.stranded and not out.expired():
            time.sleep(max(0.0, out.next_try - time.monotonic()))
            if not self.writer.retry_moves():
                assert self.writer.move_error is not None
                out.failed_again(self.writer.move_error)
        self._watch_storage()
        unmoved = self.writer.unmoved()
        if unmoved and self.gave_up is None:
            error = self.writer.move_error or OSError(0, f"segments left outside the store: {unmoved}")
            self._give_up(error, out.since if out is not None else time.monotonic())

    def _confirm_syncs(self) -> bool:
        """Answer the syncs whose windows are all written: nothing pending at or before their point's window."""
        if not self.syncs or self.gave_up is not None or (self.outage is not None and not self.outage.due()):
            return False  # (after giving up nothing more is committed: those syncs are never confirmed)
        first = min((w for _, w in self.pending), default=FOREVER)
        due = self.syncs.due(first)
        if not due:
            return False
        try:
            self.writer.fsync()  # storage.fsync=sync|always: on the disk before the client hears it
        except OSError as exc:  # not durable: the syncs wait for a retry like the writes do
            for sp in due:
                self.syncs.add(sp)
            self.syncs.confirmed -= len(due)
            self._storage_failed(exc)
            return False
        low = min(self.wm.values())
        committed = low if first == FOREVER else min(low, window_start(first, self.window_ns))
        for sp in due:
            ack = codec.encode_sync_ack(sp.sync_no, self.ctx.rank, committed, 0, sp.keeper)
            self.isend(ack, sp.client, TAG_SYNC)
        return True

    def step(self) -> bool:
        progressed = self._receive()
        self.pending_max = max(self.pending_max, len(self.pending))
        progressed |= self._commit()
        progressed |= self._confirm_syncs()
        self._watch_storage()
        self.outbox.reap()
        if not progressed:
            self.writer.roll_if_old()
        if not self.pending and (self.ended >= set(self.wm) or self._drained()):
            self.finished = True
        return progressed

    # -- membership -------------------------------------------------------
    def on_epoch(self, epoch: Epoch) -> None:
        for k in epoch.keepers:
            if k not in self.wm or k in self.ended:  # a new keeper (or one serving again)
                self.wm[k] = NEVER
                self.epoch_seen[k] = 0
                self.ended.discard(k)
        if self.ctx.rank not in epoch.graphers and self.leave_at is None:
            self.leaving = True
            self.leave_at = (epoch.start, epoch.number)

    def load_figures(self) -> dict[str, float]:
        return {"pending": float(len(self.pending))}

    def _drained(self) -> bool:
        """A leaving grapher is done when every keeper knows the epoch it leaves at and is past its start:
        no chunk of a window it owns can come any more (late ones go to the graphers that stay)."""
        if self.leave_at is None:
            return False
        start, number = self.leave_at
        return all(k in self.ended or (self.wm[k] >= start and self.epoch_seen.get(k, 0) >= number) for k in self.wm)

    def close(self) -> None:
        self.writer.close()
        self._close_storage()

    def serve(self) -> bool:
        got = self._receive()  # markers of replays (and syncs, after a forced end) by clients still running
        return self._confirm_syncs() or got

    def stats(self) -> dict[str, Any]:
        s = super().stats()
        w = self.writer
        s.update(
            events=w.events_written,
            bytes=w.bytes_written,
            windows=w.windows_written,
            late_runs=self.n_late_runs,
            queries=self.n_queries,
            syncs=self.syncs.confirmed,
            events_by_epoch={str(e): n for e, n in sorted(self.by_epoch.items())},
            fsyncs=w.fsyncs,
            fsync_s=round(w.fsync_seconds, 3),
            writebacks=w.writebacks,
            chunks=self.n_chunks,
            pending_windows_max=self.pending_max,
            write_s=round(w.write_seconds, 3),
            segments=[p.name for p in w.closed_paths],
            events_lost=self.events_lost,
            unmoved=[str(p) for p in w.unmoved()],
            staging_fallbacks=w.fallbacks,
        )
        return s
