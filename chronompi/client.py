"""The client role: the API a science code calls to record events.

Thread safety: one lock per client guards the clock, the open batch and every
MPI call of the data path, so events stamped by several threads land in the
batch in timestamp order, and a batch's promise ("no later event of mine is
older than this") is read under the same lock that stamps events. The lock,
the open batch, the clock's offset and last stamp live in the client's
:class:`~chronompi.story.Sender`, all a :class:`~chronompi.story.Story` is handed of its client.

Backpressure: at most ``client.max_inflight`` batches are in flight; when all
are, ``log`` waits for the keeper to take one (policy ``block``) or drops the
batch and counts it (policy ``drop``, reported in the run summary).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
from mpi4py import MPI

from . import codec, errors, stop
from .errors import ChronoError, ScaleTimeout, SessionClosed, StoryNotAcquired, SyncTimeout
from .membership import Epoch
from .names import check_name
from .progress import Backoff, usable_cores, wait_poll_cap
from .protocol import (
    DONE,
    DROP,
    DROP_ACK,
    EPOCH,
    EPOCH_ACK,
    FAILED,
    HANG,
    LOAD,
    RELEASE,
    STOP,
    STOP_ACK,
    TAG_BATCH,
    TAG_CLOCK,
    TAG_CTRL,
    TAG_REP,
    TAG_REPLY,
    TAG_REQ,
    TAG_SYNC,
    UNHANG,
    Context,
    held_from_start,
)
from .route import Route
from .service import Outbox, make_backoff, membership_of, wait_all
from .story import CLOSED, RECORD_OVERHEAD, RELEASED, Sender, Story
from .watchdog import Watchdog
from .windows import FOREVER, NEVER

_time_ns = time.time_ns  # (a local name: the hot paths call it)
log = logging.getLogger(__name__)


class Client:
    """This rank's handle on the session. ``comm`` is the clients' own communicator."""

    def __init__(self, ctx: Context, comm: Any) -> None:
        cfg = ctx.cfg.client
        self.ctx = ctx
        self.comm = comm
        self.rank = ctx.rank  # rank in the session communicator
        self.id = ctx.client_id(ctx.rank)
        self._comm = ctx.comm
        self._visor = ctx.roles.visor
        # a client on the visor's node reads the visor's own clock (one kernel's CLOCK_REALTIME): offset 0
        # and error 0, exactly, with no ping-pong (dozens of clients pinging one visor cost 0.45 s of start-up
        # at 64 ranks on 2 cores)
        self._same_clock = ctx.host == ctx.hosts[self._visor]
        self._stop_out: tuple[Any, ...] | None = None  # STOP or STOP_ACK for the visor, once the batches are out
        self._stop_told = False
        self._signal_syncs_asked = 0  # SIGUSR1s seen (stop.sync_asked)
        self._signal_sync: threading.Thread | None = None
        self.signal_syncs = 0  # syncs SIGUSR1 asked for and confirmed
        self._stop_wait: list[Any] | None = None  # the sends in flight when the stop was noticed
        self._route = Route(ctx.rank, membership_of(ctx))  # where batches go (membership epochs)
        self._ctrl: list[Any] = []  # the visor's membership messages not handled yet, in order
        self._auto = ctx.cfg.elastic.auto
        self._next_load = 0.0
        # all this client's stories may use of it (story.py): the lock, the open batch, the limits, the
        # clock's offset and last stamp, the closed flag, and the calls send, replay and release
        self._out = Sender(cfg.batch_bytes, cfg.max_event_bytes, self._send_locked, self._replay, self._release)
        self._lock = self._out.lock  # (the sender's lock and batch, the same objects for the client's life)
        self._batch = self._out.batch
        self._req_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._acquire_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._qid = 0
        self._max_inflight = cfg.max_inflight
        self._drop = cfg.policy == "drop"
        self._batch_no = 0
        self._inflight = Outbox(self._comm)  # batches sent to our keeper, not yet taken
        self._decls: list[tuple[int, str, str]] = []
        self._names: dict[int, tuple[str, str]] = {}  # story id -> names (a new keeper learns them all)
        self._stories: dict[tuple[str, str], Story] = {}
        self._seq_of: dict[int, int] = {}
        self._error = 0
        self._syncs = 0
        self._offset_range = (0, 0) if self._same_clock else (2**63 - 1, -(2**63))
        self._synced_at = 0.0
        self._backoff = make_backoff(ctx)
        # waiting for the visor (an answer, the release): polls spaced by how many ranks share this node's cores
        self._wait_cap = wait_poll_cap(ctx.hosts.count(ctx.host), usable_cores())
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._tick_no = -1
        hang_s = ctx.cfg.service.hang_check_s
        services = [r for r in range(len(ctx.roles.role)) if r not in set(ctx.roles.clients)]
        # the thread that enters the session runs the science code: the watchdog samples its frame
        self._watchdog = Watchdog(threading.get_ident(), hang_s, ctx.comm, services) if hang_s > 0 else None
        self._hang_out: tuple[Any, ...] | None = None  # a hang report (or its withdrawal) not sent yet
        self.summary: dict[str, Any] | None = None
        # stats
        self.n_events = 0
        self.n_bytes = 0
        self.n_batches = 0
        self.n_heartbeats = 0
        self.n_dropped = 0
        self._dropped_unreported = 0
        self.n_waits = 0
        self.wait_s = 0.0
        self.first_time = 0
        self.n_syncs = 0
        self.sync_s = 0.0
        self.sync_max_s = 0.0

    # -- start-up ----------------------------------------------------------
    def _start(self) -> None:
        for (chronicle, story), sid in held_from_start(self.ctx.stories).items():  # no request: the visor's
            self._adopt(chronicle, story, sid)  # registry gave us these at its start (session(stories=...))
        self._node_clock()
        with self._lock:
            self._send_locked(codec.DATA)  # first heartbeat: the keeper learns our promise at once
        self._ticker = threading.Thread(target=self._tick_loop, name=f"chronompi-ticker-{self.rank}", daemon=True)
        self._ticker.start()

    def _node_clock(self) -> None:
        """The clock offset at start-up, once per node: the node's lowest client rank measures it against the
        visor and hands it to the node's other clients (one kernel clock per node); on the visor's node
        there is nothing to measure."""
        if self._same_clock:
            return
        ctx = self.ctx
        node = [r for r in ctx.roles.clients if ctx.hosts[r] == ctx.host]
        buf = np.empty(2, np.int64)
        if self.rank == node[0]:
            self._sync_clock()
            buf[:] = (self._out.offset, self._error)
            for r in node[1:]:
                self._comm.Send([buf, MPI.INT64_T], r, TAG_CLOCK)
            return
        wait_all(
            [self._comm.Irecv([buf, MPI.INT64_T], node[0], TAG_CLOCK)],
            Backoff(self._backoff.min_s, self._backoff.max_s, self._backoff.busy),
        )
        offset, error = int(buf[0]), int(buf[1])
        with self._lock:
            self._out.offset, self._error, self._syncs = offset, error, self._syncs + 1
            self._offset_range = (min(self._offset_range[0], offset), max(self._offset_range[1], offset))
            self._synced_at = time.monotonic()

    def _sync_clock(self, spin: bool = True) -> None:
        """Cristian's algorithm against the visor: keep the ping-pong with the smallest round trip.

        At start-up it spins between tests for up to 200 us (sleeping would inflate the round
        trip), then sleeps between them: on an oversubscribed node dozens of clients spinning
        at once took the CPU from the visor that answers them (the smallest round trip is
        kept, so a slow ping costs nothing but its time). The periodic re-estimation from
        the ticker thread yields the GIL instead, so the science code's threads keep running.
        The new offset applies to later stamps; stamps stay strictly increasing whatever it
        is (they never go below the last one).
        """
        if self._same_clock:
            return
        best_rtt, best_off = None, 0
        ping = np.empty(0, np.int64)
        reply = np.empty(1, np.int64)
        for _ in range(self.ctx.cfg.client.clock_pings):
            with self._lock:
                t0 = time.time_ns()
                self._comm.Send([ping, MPI.INT64_T], self._visor, TAG_CLOCK)
                req = self._comm.Irecv([reply, MPI.INT64_T], self._visor, TAG_CLOCK)
            spin_until = t0 + 200_000 if spin else t0
            while True:
                with self._lock:
                    if req.Test():
                        t1 = time.time_ns()
                        break
                if time.time_ns() > spin_until:
                    time.sleep(0 if not spin else 50e-6)
            rtt = t1 - t0
            if best_rtt is None or rtt < best_rtt:
                best_rtt, best_off = rtt, int(reply[0]) - (t0 + t1) // 2
        with self._lock:
            self._out.offset = best_off
            self._error = (best_rtt or 0) // 2
            self._syncs += 1
            self._offset_range = (min(self._offset_range[0], best_off), max(self._offset_range[1], best_off))
            self._synced_at = time.monotonic()
        log.info("client %d: clock offset %d ns +- %d ns", self.rank, self._out.offset, self._error)

    # -- ticker: aged batches and heartbeats ---------------------------------
    def _tick_loop(self) -> None:
        period = self.ctx.cfg.client.batch_ms / 1000.0
        resync = self.ctx.cfg.client.clock_resync_s
        try:
            while not self._stop.wait(period):
                self._tick()
                self._stopping()
                self._sync_on_signal()
                if self._watchdog is not None:
                    self._watch()
                if resync > 0 and time.monotonic() - self._synced_at >= resync:
                    self._sync_clock(spin=False)
        except BaseException:
            log.exception("client %d: ticker thread failed; aborting the job", self.rank)
            self._comm.Abort(1)

    def _tick(self) -> None:
        with self._lock:
            if self._out.closed:
                return
            self._reap()
            self._poll_visor()
            if self._batch_no == self._tick_no:  # nothing sent for a whole period
                if len(self._batch) or len(self._inflight) < self._max_inflight:
                    self._send_locked(codec.DATA)  # an aged batch, or a heartbeat when empty
            self._tick_no = self._batch_no

    def _sync_on_signal(self) -> None:
        """SIGUSR1 (stop.py): sync what this client logged so far, from a thread of its own (a sync waits for
        the store; the ticker must go on sending heartbeats meanwhile). One at a time; the job goes on."""
        asked = stop.sync_asked()
        if asked == self._signal_syncs_asked or (self._signal_sync is not None and self._signal_sync.is_alive()):
            return
        self._signal_syncs_asked = asked
        timeout = max(1.0, self.ctx.cfg.service.stop_grace_s)

        def run() -> None:
            try:
                point = self.sync(timeout=timeout)
            except ChronoError as exc:  # the session ended meanwhile, or the store is slow: said, not fatal
                log.warning("client %d: SIGUSR1: sync not confirmed: %s", self.rank, exc)
                return
            self.signal_syncs += 1
            log.info("client %d: SIGUSR1: synced, every event logged up to %d is committed", self.rank, point)

        self._signal_sync = threading.Thread(target=run, name=f"chronompi-sigsync-{self.rank}", daemon=True)
        self._signal_sync.start()

    def _stopping(self) -> None:
        """A stop signal (stop.py): tell the visor once, after sending every event held; answer the visor's
        STOP the same way. Sent only once the batches sent so far are taken (as a hang report), so that
        the forced end that follows writes all of them; the program may go on logging meanwhile."""
        if self._stop_out is None and not self._stop_told and stop.received() is not None:
            self._stop_out = (STOP, self.rank, stop.received())
        if self._stop_out is None:
            return
        with self._lock:
            if self._out.closed:
                return
            if self._stop_wait is None:
                if len(self._batch):
                    self._send_locked(codec.DATA)
                self._stop_wait = list(self._inflight.requests)
            self._reap()
            pending = {id(r) for r in self._inflight.requests}
            if any(id(r) in pending for r in self._stop_wait):
                return  # again at the next tick
            self._comm.send(self._stop_out, dest=self._visor, tag=TAG_CTRL)
            self._stop_out, self._stop_wait, self._stop_told = None, None, True

    def _watch(self) -> None:
        """Report to the visor a call the session's thread is stuck in (watchdog.py), after our events:
        what the client logged is sent and taken by the keeper first, so a forced end writes all of it."""
        try:
            event = self._watchdog.poll()  # type: ignore[union-attr]
        except Exception:  # the watchdog must never take the job down: without it, a hang is only silent
            log.warning("client %d: hang watchdog failed; it is off for this session", self.rank, exc_info=True)
            self._watchdog = None
            return
        if isinstance(event, dict):
            self._hang_out = (HANG, self.rank, event)
        elif event is True:  # the reported call returned: withdraw the report (or drop it, unsent)
            self._hang_out = None if self._hang_out is not None and self._hang_out[0] == HANG else (UNHANG, self.rank)
        if self._hang_out is None:
            return
        with self._lock:
            if self._out.closed:
                return
            if self._hang_out[0] == HANG:
                if len(self._batch):
                    self._send_locked(codec.DATA)
                self._reap()
                if self._inflight:
                    return  # again at the next tick
            self._comm.send(self._hang_out, dest=self._visor, tag=TAG_CTRL)
            self._hang_out = None

    # -- sending -----------------------------------------------------------
    def _send_locked(self, kind: int, keeper: int | None = None) -> None:
        """Encode the open batch and Isend it to our keeper, or to ``keeper`` (lock held)."""
        promise = max(_time_ns() + self._out.offset, self._out.last)
        if keeper is None and self._route.switch_due(promise):
            self._switch_keeper()
        arrays = self._batch.take_parts()  # the heap as parts: encode_batch copies them once, into the batch
        self._emit(kind, self._route.keeper if keeper is None else keeper, arrays, promise)

    def _switch_keeper(self) -> None:
        """An epoch gave us another keeper and its start is here: the events before it go to the old
        keeper with LEAVE, the new keeper learns every story, the rest of the batch stays for it."""
        assert self._route.switch is not None
        start = self._route.switch[0]
        arrays = self._batch.take()
        cut = int(np.searchsorted(arrays[0], start))
        old = self._route.switched()
        before = tuple(a[:cut] for a in arrays[:4]) + (arrays[4][: int(arrays[3][:cut].sum())],)
        self._emit(codec.LEAVE, old, before, start - 1)
        if cut < len(arrays[0]):
            rest = tuple(a[cut:] for a in arrays[:4]) + (arrays[4][int(arrays[3][:cut].sum()) :],)
            self._batch.segments.append(rest)  # type: ignore[arg-type]
            self._batch.nbytes = int(rest[3].sum()) + len(rest[0]) * RECORD_OVERHEAD
        decls = [(sid, c, st) for sid, (c, st) in sorted(self._names.items())]
        while sum(len(c) + len(st) + 24 for _, c, st in decls) > codec.DECL_BUDGET:  # keep slots big enough
            cut_at = 1
            while sum(len(c) + len(st) + 24 for _, c, st in decls[: cut_at + 1]) <= codec.DECL_BUDGET:
                cut_at += 1
            self._decls, decls = decls[:cut_at], decls[cut_at:]
            self._emit(codec.DATA, self._route.keeper, _no_events(), max(_time_ns() + self._out.offset, self._out.last))
        self._decls = decls

    def _emit(self, kind: int, keeper: int, arrays: tuple[Any, ...], promise: int) -> None:
        """Encode and Isend one batch to ``keeper`` (lock held)."""
        t, q, s, ln, heap = arrays
        n = len(t)
        promise = max(promise, self._out.last)
        self._out.last = promise  # every later event is stamped after the promise
        if kind in (codec.END, codec.LEAVE):
            promise = FOREVER
        if not self._wait_room(n, kind):
            self.n_dropped += n
            self._dropped_unreported += n
            return
        buf = codec.encode_batch(
            kind,
            self.id,
            self._route.number(keeper),
            promise,
            self.rank,
            t,
            q,
            s,
            ln,
            heap,
            self._decls,
            self._dropped_unreported,
        )
        self._decls = []
        self._dropped_unreported = 0
        self._inflight.isend(buf, keeper, TAG_BATCH)
        self._batch_no += 1
        if n:
            if not self.first_time:
                self.first_time = int(t[0])
            self.n_events += n
            self.n_bytes += int(ln.sum())
            self.n_batches += 1
        else:
            self.n_heartbeats += 1

    def _reap(self) -> None:
        self._inflight.reap()

    def _wait_room(self, n: int, kind: int) -> bool:
        """Make room for one more batch in flight; False if the batch is to be dropped."""
        self._reap()
        if len(self._inflight) < self._max_inflight:
            return True
        if self._drop and n and kind == codec.DATA and not self._decls:
            return False  # a batch that declares stories is never dropped: later batches need the names
        self.n_waits += 1
        t0 = time.perf_counter()
        backoff = Backoff(self._backoff.min_s, self._backoff.max_s, self._backoff.busy)
        while len(self._inflight) >= self._max_inflight:
            backoff.sleep()
            self._reap()
        self.wait_s += time.perf_counter() - t0
        return True

    def flush(self) -> None:
        """Send the open batch now and wait until every batch in flight was taken by the keeper."""
        self._check_open()
        with self._lock:
            if len(self._batch):
                self._send_locked(codec.DATA)
        backoff = Backoff(self._backoff.min_s, self._backoff.max_s, self._backoff.busy)
        while True:
            with self._lock:
                self._reap()
                if not self._inflight:
                    return
            backoff.sleep()

    # -- membership ----------------------------------------------------------
    def _poll_visor(self, closing: bool = False) -> None:
        """Handle the visor's membership messages (lock held; from the ticker, and at close)."""
        while self._comm.Iprobe(self._visor, TAG_CTRL):
            self._ctrl.append(self._comm.recv(source=self._visor, tag=TAG_CTRL))
        while self._ctrl:
            msg = self._ctrl[0]
            if msg[0] == EPOCH:
                epoch = Epoch.from_json(msg[1])
                self._route.adopt(epoch)
                self._comm.send((EPOCH_ACK, self.rank, epoch.number), dest=self._visor, tag=TAG_CTRL)
            elif msg[0] == STOP:  # the job is stopping: send what we hold, then say so (from the ticker)
                # (anew, though this client may still wait on what it sent for a stop signal of its own: the
                # answer covers every event logged before the visor's STOP came, those after that send too)
                self._stop_out, self._stop_wait = (STOP_ACK, self.rank), None
            elif msg[0] == DROP:
                # a replay or sync in progress may be waiting on those members: answer between them
                if not closing:
                    if not self._replay_lock.acquire(blocking=False):
                        return
                    if not self._sync_lock.acquire(blocking=False):
                        self._replay_lock.release()
                        return
                self._route.drop(set(msg[2]))
                if not closing:
                    self._sync_lock.release()
                    self._replay_lock.release()
                self._comm.send((DROP_ACK, self.rank, msg[1]), dest=self._visor, tag=TAG_CTRL)
            else:
                raise RuntimeError(f"client rank {self.rank}: unexpected {msg[0]!r} from the visor")
            self._ctrl.pop(0)
        if self._auto and time.monotonic() >= self._next_load:
            self._next_load = time.monotonic() + self.ctx.cfg.elastic.period_s
            load = {"wait_s": self.wait_s, "events": float(self.n_events)}
            self._comm.send((LOAD, self.rank, "client", load), dest=self._visor, tag=TAG_CTRL)

    def scale(
        self, keepers: int | None = None, graphers: int | None = None, wait: bool = True, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Ask the visor for ``keepers`` keepers and ``graphers`` graphers (None: as now).

        Growing takes spare ranks (``layout.spares``), shrinking gives members back to the
        spares; the change takes effect at a window boundary ``elastic.lead_ms`` ahead, and
        nothing logged is lost, duplicated or reordered by it. With ``wait`` this returns once
        the change is complete (members drained and retired); the membership as a dict
        (``epoch``, ``keepers``, ``graphers``, ``spares``, ``epochs``). Raises ScaleError (a
        ConfigError) when it cannot be done: fewer than one member, not enough spares, another
        change in progress, or the session ending; :class:`ScaleTimeout` when ``wait`` outlasts
        ``timeout`` seconds (the change goes on).
        """
        for name, value in (("keepers", keepers), ("graphers", graphers)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"scale({name}={value!r}): give a number of ranks (int) or None")
        number = int(self._request("scale", keepers, graphers))
        deadline = time.monotonic() + timeout
        while True:
            state = self.members()
            if not wait or (state["epoch"] >= number and not state["changing"]):
                return state
            if time.monotonic() > deadline:
                raise ScaleTimeout(timeout, number, state)
            time.sleep(0.02)

    def members(self) -> dict[str, Any]:
        """The membership as the visor has it: epoch, keepers, graphers, spares, every epoch so far."""
        return dict(self._request("members"))

    @property
    def closed(self) -> bool:
        """True once this client's session has ended: nothing more can be logged or asked."""
        return self._out.closed

    def elapsed(self) -> float:
        """Seconds since the session started, on the visor's clock: the wall time so far, as the run's
        summary counts it (see chronompi/report.py)."""
        return (_time_ns() + self._out.offset) / 1e9 - self.ctx.started

    # -- durability ----------------------------------------------------------
    def sync(self, timeout: float | None = None, until: str = "committed") -> int:
        """Wait until every event this client logged before the call is safe; return the sync point.

        ``until="committed"`` (the default): every such event is committed in the store —
        its rows and the index rows that cover them written and flushed by its grapher
        (and fsynced when ``storage.fsync`` is ``sync`` or ``always``) — so it survives a
        ``kill -9`` of the whole job. ``until="received"``: only that the keeper has them
        in memory (survives this process dying, not the job).

        Returns the sync point (ns, the clock of :meth:`Story.log`): every event of this
        client stamped at or before it is covered. Events of every story of this client
        count, and events logged by other threads after the call starts may count or not.
        Raises :class:`SyncTimeout` past ``timeout`` seconds (nothing is lost by that).
        """
        if until not in ("committed", "received"):
            raise ValueError(f"sync(until={until!r}): give 'committed' (in the store) or 'received' (by the keeper)")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"sync(timeout={timeout!r}) must be a number of seconds > 0, or None to wait as needed")
        t_start = time.perf_counter()
        with self._sync_lock:  # one sync at a time per client: every answer that comes is for it or stale
            self._check_open()
            kind = codec.SYNC if until == "committed" else codec.RECEIPT
            with self._lock:
                self._send_locked(kind)  # our keeper: the open batch and the sync point
                route = self._route
                asked = {route.keeper: route.numbers[route.keeper] - 1}
                point = self._out.last  # the batch's promise: every earlier stamp is at or below it
                for k in sorted(route.data_keepers - {route.keeper}):  # keepers we left may still hold events
                    asked[k] = route.numbers.get(k, 0)
                    self._emit(kind, k, _no_events(), point)
            keepers_left = set(asked)
            graphers_owed = 0  # grapher answers the keepers announced, minus those that came
            announced = got = 0  # grapher answers announced so far / answers (keepers' and graphers') in
            ack = np.empty(1, codec.SYNC_ACK)
            status = MPI.Status()
            backoff = Backoff(self._backoff.min_s, self._backoff.max_s, self._backoff.busy)
            while keepers_left or graphers_owed:
                with self._lock:
                    self._reap()
                    msg = self._comm.Improbe(MPI.ANY_SOURCE, TAG_SYNC, status)
                    if msg is not None:
                        msg.Recv([ack.view(np.uint8), MPI.BYTE])
                if msg is None:
                    if timeout is not None and time.perf_counter() - t_start > timeout:
                        raise SyncTimeout(timeout, until, got, max(len(asked) + announced, got + 1))
                    backoff.sleep()
                    continue
                backoff.reset()
                a = ack[0]
                k = int(a["keeper"])
                if asked.get(k) != int(a["sync_no"]):
                    continue  # the answer to an earlier sync that timed out
                got += 1
                if int(a["rank"]) == k:
                    keepers_left.discard(k)
                    graphers_owed += int(a["expect"])
                    announced += int(a["expect"])
                else:
                    graphers_owed -= 1
        took = time.perf_counter() - t_start
        self.n_syncs += 1
        self.sync_s += took
        self.sync_max_s = max(self.sync_max_s, took)
        return point

    # -- online replay -------------------------------------------------------
    def _replay(self, story: Story, start: Any, end: Any) -> np.ndarray:
        from .merge import merge_runs
        from .store.reader import Store, to_ns, to_replay

        t0 = to_ns(start, "start")
        t1 = to_ns(end, "end")
        lo = NEVER if t0 is None else t0
        hi = FOREVER if t1 is None else t1
        if lo > hi:
            raise ValueError(f"start {lo} is after end {hi}; give start <= end")
        with self._replay_lock:  # one replay at a time: every reply on TAG_REPLY is for this query
            self._check_open()
            qid = self._qid
            self._qid += 1
            sends = Outbox(self._comm)
            with self._lock:
                if len(self._batch):
                    self._send_locked(codec.DATA)  # our own events go ahead of the query
                # every member not dropped: a keeper we left may still hold our events (membership.py)
                keepers, graphers = sorted(self._route.keepers), sorted(self._route.graphers)
                expect = len(keepers) + len(graphers)
                query = codec.encode_query(qid, self.rank, story.id, lo, hi, len(keepers), graphers)
                for k in keepers:  # numbered in our stream to k: our keeper applies it after our data
                    no = self._route.number(k)
                    buf = codec.encode_batch(codec.QUERY, self.id, no, self._out.last, self.rank, [], [], [], [], query)
                    sends.isend(buf, k, TAG_BATCH)
            runs: list[tuple[np.ndarray, np.ndarray]] = []
            got = 0
            status = MPI.Status()
            backoff = Backoff(self._backoff.min_s, self._backoff.max_s, self._backoff.busy)
            while got < expect or sends:
                with self._lock:
                    sends.reap()
                    msg = self._comm.Improbe(MPI.ANY_SOURCE, TAG_REPLY, status)
                    if msg is not None:
                        buf = np.empty(status.Get_count(MPI.BYTE), np.uint8)
                        msg.Recv([buf, MPI.BYTE])
                if msg is None:
                    backoff.sleep()
                    continue
                backoff.reset()
                c = codec.decode_chunk(buf)
                if c.window != qid:
                    raise RuntimeError(f"replay reply for query {c.window} while waiting for {qid}")
                got += 1
                if len(c.events):
                    runs.append((c.events.copy(), c.heap))
        try:  # earlier runs in the store (this run's segments come from the graphers)
            left = [self.ctx.roles.grapher_index(r) for r in self._route.left_graphers]
            with Store(self.ctx.cfg.storage.root, exclude_run=self.ctx.run_id, include_graphers=left) as st:
                ev, heap = st.replay_raw(story.chronicle, story.name, t0, t1)
                if len(ev):
                    runs.append((ev, heap))
        except KeyError:  # UnknownChronicle / UnknownStory: no earlier run has it
            pass
        if not runs:
            return to_replay(np.empty(0, codec.EVENT), np.empty(0, np.uint8))
        events, heap = merge_runs(runs)
        if len(events) > 1:
            # an event can reach the client twice: from its keeper's memory and, shipped after the
            # keeper's marker, from a grapher still waiting for another keeper's marker
            dup = (
                (events["time"][1:] == events["time"][:-1])
                & (events["client"][1:] == events["client"][:-1])
                & (events["seq"][1:] == events["seq"][:-1])
            )
            if dup.any():
                keep = np.concatenate(([True], ~dup))
                events = events[keep]
        return to_replay(events, heap)

    # -- registry ----------------------------------------------------------
    def _check_open(self) -> None:
        if self._out.closed:
            raise SessionClosed("this chronompi client's session has ended; start a new session() to record more")

    def _request(self, *req: Any) -> Any:
        self._check_open()
        # the visor answers at once when it is idle (the doubling sleeps see that within twice the round
        # trip); when it is slow, it is busy, and polling it every 2 ms from every client only slowed it
        # down (64 clients acquiring their stories at start-up: 0.5 s)
        backoff = Backoff(self._backoff.min_s, max(self._backoff.max_s, self._wait_cap), self._backoff.busy)
        with self._req_lock:  # one request outstanding per client: the next reply is ours
            with self._lock:
                self._comm.send(req, dest=self._visor, tag=TAG_REQ)
            while True:
                with self._lock:
                    if self._comm.Iprobe(self._visor, TAG_REP):
                        reply = self._comm.recv(source=self._visor, tag=TAG_REP)
                        break
                backoff.sleep()
        if reply[0] == "err":
            raise _rebuild(reply[1], reply[2])
        return reply[1]

    def create_chronicle(self, name: str, attrs: dict[str, Any] | None = None) -> None:
        check_name(name, "chronicle")
        if attrs is not None and not isinstance(attrs, dict):
            raise TypeError(f"chronicle attrs must be a dict, not {type(attrs).__name__}")
        self._request("create_chronicle", name, attrs)

    def destroy_chronicle(self, name: str) -> None:
        """Remove a chronicle from the registry. What it recorded stays in the store."""
        check_name(name, "chronicle")
        self._request("destroy_chronicle", name)

    def show_chronicles(self) -> list[str]:
        return list(self._request("show_chronicles"))

    def show_stories(self, chronicle: str) -> list[str]:
        check_name(chronicle, "chronicle")
        return list(self._request("show_stories", chronicle))

    def acquire_story(self, chronicle: str, story: str) -> Story:
        """Acquire (creating it if missing) a story of an existing chronicle."""
        check_name(chronicle, "chronicle")
        check_name(story, "story")
        with self._acquire_lock:  # two threads acquiring one story get one Story (one seq counter)
            held = self._stories.get((chronicle, story))
            if held is not None and held.active:
                return held
            return self._adopt(chronicle, story, int(self._request("acquire", chronicle, story)))

    def _adopt(self, chronicle: str, story: str, sid: int) -> Story:
        """The visor gave us story ``sid``: its Story, declared to our keeper with our next batch."""
        with self._lock:
            st = Story(self, self._out, chronicle, story, sid, self._seq_of.get(sid, 0))
            self._stories[(chronicle, story)] = st
            self._names[sid] = (chronicle, story)
            if sid not in self._seq_of:
                self._decls.append((sid, chronicle, story))  # rides on our next batch
                self._seq_of[sid] = 0
                if sum(len(c) + len(s) + 24 for _, c, s in self._decls) > codec.DECL_BUDGET:
                    self._send_locked(codec.DATA)  # keep a batch's declarations within the slot margin
        return st

    def release_story(self, chronicle: str, story: str) -> None:
        st = self._stories.get((chronicle, story))
        if st is None or not st.active:
            raise StoryNotAcquired(f"story {chronicle}/{story} is not acquired by this client")
        self._release(st)

    def _release(self, st: Story) -> None:
        self._check_open()
        with self._acquire_lock:  # the visor sees acquire and release in the order they happened here
            with self._lock:
                if not st.active:
                    return
                self._seq_of[st.id] = st.end_locked(RELEASED)
            self._request("release", st.chronicle, st.name)

    # -- shutdown ----------------------------------------------------------
    def _close(self, failure: BaseException | None = None) -> None:
        """Flush, send END, report to the visor and wait for the session's release."""
        if self._out.closed:
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._poll_visor(closing=True)  # an epoch announced meanwhile: its keeper must get our END too
            if len(self._batch):
                self._send_locked(codec.DATA)
            self._send_locked(codec.END)  # (to the new keeper if the switch is due now)
            for k in self._route.end_targets()[1:]:  # the keeper we were about to move to: nothing will come
                self._emit(codec.END, k, _no_events(), FOREVER)
            for st in self._stories.values():
                self._seq_of[st.id] = max(self._seq_of.get(st.id, 0), st.end_locked(CLOSED))
            self._out.closed = True
        backoff = Backoff(self._backoff.min_s, self._backoff.max_s, self._backoff.busy)
        while self._inflight:
            self._reap()
            if self._inflight:
                backoff.sleep()
        if failure is not None:
            text = f"{type(failure).__name__}: {failure}"
            self._comm.send((FAILED, self.rank, self.ctx.host, text), dest=self._visor, tag=TAG_CTRL)
        self._comm.send((DONE, "client", self.rank, self.stats()), dest=self._visor, tag=TAG_CTRL)
        # the release comes once every rank is done and every file closed (at 2 ms, 64 waiting clients on
        # 2 cores took most of the CPU from the services they waited for: 1.5 s from last write to release)
        backoff = Backoff(backoff.min_s, max(backoff.max_s, self._wait_cap), backoff.busy)
        while True:  # membership messages sent before the visor saw our DONE are moot now
            status = MPI.Status()
            while not self._comm.Iprobe(self._visor, TAG_CTRL, status):
                backoff.sleep()
            msg = self._comm.recv(source=self._visor, tag=TAG_CTRL)
            if msg[0] == RELEASE:
                break
            if msg[0] not in (EPOCH, DROP):
                raise RuntimeError(f"client rank {self.rank} expected release, got {msg[0]!r}")
        self.summary = msg[1]

    def _story_seqs(self) -> dict[str, int]:
        """Next seq of every story this client acquired."""
        with self._lock:
            self._batch.settle()
            return {f"{c}/{s}": st.next_seq_locked() for (c, s), st in self._stories.items()}

    def stats(self) -> dict[str, Any]:
        return {
            "host": self.ctx.host,
            "events": self.n_events,
            "bytes": self.n_bytes,
            "batches": self.n_batches,
            "heartbeats": self.n_heartbeats,
            "dropped": self.n_dropped,
            "waits": self.n_waits,
            "syncs": self.n_syncs,
            "signal_syncs": self.signal_syncs,
            "sync_s": round(self.sync_s, 3),
            "sync_max_s": round(self.sync_max_s, 3),
            "wait_s": round(self.wait_s, 3),
            "offset_ns": self._out.offset,
            "error_ns": self._error,
            "clock_syncs": self._syncs,
            "offset_min_ns": self._offset_range[0],
            "offset_max_ns": self._offset_range[1],
            "first_time": self.first_time,
            "epoch": self._route.epoch,
            "last_time": self._out.last,
            "stories": self._story_seqs(),
        }


def _no_events() -> tuple[np.ndarray, ...]:
    e = np.empty(0, np.int64)
    return e, e.astype(np.uint64), e.astype(np.uint32), e.astype(np.uint32), e.astype(np.uint8)


_ERRORS = {
    name: cls for name, cls in vars(errors).items() if isinstance(cls, type) and issubclass(cls, errors.ChronoError)
}


def _rebuild(name: str, message: str) -> Exception:
    """Re-create an error the visor reported, keeping its class (so except clauses work)."""
    cls = _ERRORS.get(name, errors.ChronoError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    return exc
