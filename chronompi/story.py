"""``Story`` (what a science code logs into), the open batch it appends to, and ``Sender``: all a
story reaches of its client.

``Story.log`` is the hot path: one lock, one clock read, four list appends. A Story calls its
client's public methods (``flush``, ``sync``) and, for everything else, the :class:`Sender` the
client handed it; the client reads and changes a Story only through the methods marked "(the
client's)". See :mod:`chronompi.client` for the locking rules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from . import codec
from .errors import PayloadTooLarge, SessionClosed, StoryNotAcquired

if TYPE_CHECKING:
    from .client import Client

RECORD_OVERHEAD = codec.BATCH_RECORD.itemsize
_time_ns = time.time_ns

ACTIVE, RELEASED, CLOSED = 0, 1, 2


class Sender:
    """What a :class:`Story` may use of its client: the client makes one and hands it to every Story.

    Shared with the client (read and written with ``lock`` held; ``closed`` is also read without it):

    - ``lock``: the client's one lock: the clock, the open batch and every MPI call of its data path
      (never taken twice by one thread: a plain ``Lock`` is cheaper than an ``RLock``);
    - ``batch``: the open batch (:class:`OpenBatch`), which the client takes when it sends;
    - ``limit``: ``client.batch_bytes``, the size at which the open batch is sent;
    - ``max_event``: ``client.max_event_bytes``, the largest payload accepted;
    - ``offset``: the clock offset (ns) added to ``time_ns()``; the client's clock sync sets it;
    - ``last``: the last stamp or batch promise (ns); every new stamp is greater;
    - ``closed``: the client's session has ended (set, lock held, when the client closes).

    Calls into the client:

    - ``send(kind)``: encode the open batch and send it to the keeper (``lock`` held);
    - ``replay(story, start, end)``: an online replay (:meth:`Story.replay`);
    - ``release(story)``: release the story at the visor (:meth:`Story.release`; ``lock`` not held).

    ``lock``, ``batch``, the limits and the calls stay the same objects for the client's life: a
    Story binds them (and the batch's list appends) once, when it is made.
    """

    __slots__ = ("lock", "batch", "limit", "max_event", "offset", "last", "closed", "send", "replay", "release")

    def __init__(
        self,
        limit: int,
        max_event: int,
        send: Callable[[int], None],
        replay: Callable[[Story, Any, Any], np.ndarray],
        release: Callable[[Story], None],
    ) -> None:
        self.lock = threading.Lock()
        self.batch = OpenBatch()
        self.limit = limit
        self.max_event = max_event
        self.offset = 0
        self.last = 0
        self.closed = False
        self.send = send
        self.replay = replay
        self.release = release


class Story:
    """A story acquired by this client: ``log`` events into it. A context manager that releases itself."""

    def __init__(self, client: Client, sender: Sender, chronicle: str, name: str, story_id: int, seq: int) -> None:
        self.client = client  # (for its public methods; the rest of the client is reached through ``sender``)
        self.chronicle = chronicle
        self.name = name
        self.id = story_id
        self._seq = seq
        self._state = ACTIVE
        self._out = sender
        self._lock = sender.lock
        self._max = sender.max_event
        self._limit = sender.limit
        self._send = sender.send
        b = sender.batch
        self._b = b
        self._at, self._ap = b.t.append, b.p.append
        self._acquire, self._release_lock = self._lock.acquire, self._lock.release

    def __repr__(self) -> str:
        state = ("active", "released", "closed")[self._state]
        return f"<Story {self.chronicle}/{self.name} id={self.id} {state}>"

    @property
    def seq(self) -> int:
        """The seq the next event logged into this story gets (events logged so far, from 0 when new).

        Read this, not ``_seq``: while ``log`` appends a run of this story the attribute is stale."""
        with self._lock:
            return self.next_seq_locked()

    @property
    def active(self) -> bool:
        """True while events can be logged into this story: not released, its session not ended."""
        return self._state == ACTIVE

    def next_seq_locked(self) -> int:
        """(The client's, its lock held.) :attr:`seq` without taking the lock."""
        if self._b.cur is self:
            self._b.settle()
        return self._seq

    def end_locked(self, state: int) -> int:
        """(The client's, its lock held.) No more events: ``RELEASED`` (the story was released) or
        ``CLOSED`` (the session ended). Returns the seq the next event would have had."""
        self._state = state
        self._b.settle()
        return self._seq

    def _refuse(self) -> None:
        if self._state == CLOSED:
            raise SessionClosed(
                f"story {self.chronicle}/{self.name}: its session has ended; nothing more can be logged"
            )
        raise StoryNotAcquired(f"story {self.chronicle}/{self.name} was released; acquire it again to log into it")

    def log(self, payload: bytes | str | bytearray | memoryview) -> int:
        """Record one event; returns its timestamp (ns since the epoch, clock-corrected)."""
        if type(payload) is not bytes:
            payload = _as_bytes(payload)
        n = len(payload)
        if n > self._max:
            raise PayloadTooLarge(n, self._max)
        s = self._out
        self._acquire()  # (acquire/release in try/finally: measurably cheaper than ``with`` here)
        try:
            if self._state:
                self._refuse()
            t = _time_ns() + s.offset
            if t <= s.last:
                t = s.last + 1
            s.last = t
            b = self._b
            if b.cur is not self:  # another story logged last: a new run (its seq numbers follow on)
                b.enter(self)
            self._at(t)
            self._ap(payload)
            b.nbytes += n + RECORD_OVERHEAD
            if b.nbytes >= self._limit:
                self._send(codec.DATA)
        finally:
            self._release_lock()
        return t

    def log_many(self, payloads: Iterable[bytes | str] | np.ndarray) -> np.ndarray:
        """Record many events at once; returns their timestamps (int64 array).

        ``payloads`` is a sequence of bytes/str, or a 2-D uint8 array whose rows
        are payloads of equal size. Nothing is recorded if any payload is too large,
        or if ``payloads`` is itself one str or bytes (a TypeError: it is not split into
        one-character events).
        """
        if isinstance(payloads, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                f"log_many takes a sequence of bytes/str payloads, or a 2-D uint8 array, not one "
                f"{type(payloads).__name__} of length {len(payloads)}; to log one event use log()"
            )
        if isinstance(payloads, np.ndarray):
            if payloads.ndim != 2 or payloads.dtype != np.uint8:
                raise ValueError(
                    f"log_many takes a 2-D uint8 array (one payload a row), got {payloads.ndim}-D {payloads.dtype}"
                )
            n, width = payloads.shape
            lengths = np.full(n, width, np.uint32)
            heap = np.ascontiguousarray(payloads).reshape(-1)
        else:
            items = [p if type(p) is bytes else _as_bytes(p) for p in payloads]
            n = len(items)
            lengths = np.fromiter(map(len, items), np.uint32, n)
            heap = np.frombuffer(b"".join(items), np.uint8)
        if n and int(lengths.max()) > self._max:
            i = int(np.argmax(lengths))
            raise PayloadTooLarge(int(lengths[i]), self._max)
        s = self._out
        with self._lock:
            if self._state:
                self._refuse()
            self._b.settle()  # this story's seq is current
            t0 = max(_time_ns() + s.offset, s.last + 1)
            times = np.arange(t0, t0 + n, dtype=np.int64)
            if n:
                s.last = int(times[-1])
            seqs = np.arange(self._seq, self._seq + n, dtype=np.uint64)
            self._seq += n
            self._b.add_arrays(self.id, times, seqs, lengths, heap, self._limit, self._send)
        return times

    def flush(self) -> None:
        """Send the client's open batch now (events of every story of this client)."""
        self.client.flush()

    def sync(self, timeout: float | None = None, until: str = "committed") -> int:
        """Wait until every event this client logged so far (in every story) is committed; see
        :meth:`chronompi.Client.sync`. Returns the sync point (ns)."""
        if self._state == CLOSED:
            self._refuse()
        return self.client.sync(timeout, until)

    def replay(self, start: Any = None, end: Any = None) -> np.ndarray:
        """Events of ``[start, end)`` recorded so far by every client of the job (and earlier runs).

        Reads every tier while the job runs: keeper memory, grapher memory, the
        segments written so far, and the store. This client's own events are all
        included (it flushes first, and the query follows its data to its keeper);
        another client's events are included once they reached a keeper. Same
        result type as :meth:`chronompi.Store.replay`. Collective over nothing:
        any client may call it at any time.
        """
        if self._state == CLOSED:
            self._refuse()
        return self._out.replay(self, start, end)

    def release(self) -> None:
        """Stop logging into this story (others may go on); safe to call twice."""
        if self._state == ACTIVE:
            self._out.release(self)

    def __enter__(self) -> Story:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._state == ACTIVE and not self._out.closed:
            self.release()


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, (bytearray, memoryview, np.ndarray)):
        return bytes(memoryview(payload).cast("B"))  # type: ignore[arg-type]
    raise TypeError(f"an event payload must be bytes or str, not {type(payload).__name__}")


class OpenBatch:
    """Events logged but not yet sent: lists for ``log``, array segments for ``log_many``.

    ``log`` appends only a time and a payload. Story and seq are kept per run of
    consecutive events of one story (``runs``: first index, story id, first seq),
    and expanded to arrays when the lists become a segment. While a story is
    ``cur`` its ``_seq`` is stale; :meth:`settle` brings it up to date (lock held).
    """

    def __init__(self) -> None:
        self.t: list[int] = []
        self.p: list[bytes] = []
        self.runs: list[tuple[int, int, int]] = []
        self.cur: Story | None = None
        self.segments: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.t) + sum(len(seg[0]) for seg in self.segments)

    def enter(self, story: Story) -> None:
        """``story`` logs the next list event."""
        self.settle()
        self.runs.append((len(self.t), story.id, story._seq))
        self.cur = story

    def settle(self) -> None:
        """Give the story of the current run its next seq; the next ``log`` starts a new run."""
        cur = self.cur
        if cur is not None:
            start, _, seq0 = self.runs[-1]
            cur._seq = seq0 + len(self.t) - start
            self.cur = None

    def add_arrays(
        self,
        sid: int,
        times: np.ndarray,
        seqs: np.ndarray,
        lengths: np.ndarray,
        heap: np.ndarray,
        limit: int,
        send: Callable[[int], None],
    ) -> None:
        """Add array events of story ``sid``, calling ``send(DATA)`` (which takes the batch) whenever
        the batch reaches ``limit`` bytes (the client's lock held)."""
        self.lists_to_segment()
        n = len(times)
        if not n:
            return
        kept = len(self.segments)  # segments before this call's
        cost = np.cumsum(lengths.astype(np.int64) + RECORD_OVERHEAD)
        offs = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
        start = 0
        while start < n:
            room = limit - self.nbytes
            base = cost[start - 1] if start else 0
            end = int(np.searchsorted(cost, base + room, side="right"))
            if end <= start:
                if self.nbytes:  # the open batch is too full for even one more: send it
                    send(codec.DATA)
                    kept = 0
                    continue
                end = start + 1  # one event larger than a batch travels alone
            sid_arr = np.full(end - start, sid, np.uint32)
            self.segments.append(
                (times[start:end], seqs[start:end], sid_arr, lengths[start:end], heap[offs[start] : offs[end]])
            )
            self.nbytes += int(cost[end - 1] - base)
            start = end
            if self.nbytes >= limit:
                send(codec.DATA)
                kept = 0
        # what stays in the open batch must not be the caller's memory (it may reuse the array
        # once log_many returns); what was sent is already copied into its batch
        for i in range(kept, len(self.segments)):
            seg = self.segments[i]
            self.segments[i] = (*seg[:4], seg[4].copy())

    def lists_to_segment(self) -> None:
        """Move the list-held events into a segment (keeps time order when arrays follow).

        The segment's heap is the list of payloads itself (not joined): :meth:`take_parts`
        hands them to the batch encoder, which copies them once, into the batch."""
        self.settle()
        if not self.t:
            self.runs.clear()
            return
        n = len(self.t)
        runs = np.array(self.runs, np.int64).reshape(-1, 3)
        counts = np.diff(np.append(runs[:, 0], n))
        seg = (
            np.array(self.t, np.int64),
            (np.arange(n, dtype=np.int64) + np.repeat(runs[:, 2] - runs[:, 0], counts)).astype(np.uint64),
            np.repeat(runs[:, 1], counts).astype(np.uint32),
            np.fromiter(map(len, self.p), np.uint32, n),
            self.p[:],
        )
        self.segments.append(seg)  # type: ignore[arg-type]
        # clear in place: Story objects hold the bound append methods of these lists
        del self.t[:], self.p[:]
        self.runs.clear()

    def take_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        """Take every event: (time, seq, story, length) arrays and the heap as a list of parts
        (payload bytes, uint8 arrays) in event order, for :func:`chronompi.codec.encode_batch`."""
        self.lists_to_segment()
        segs = self.segments
        self.segments = []
        self.nbytes = 0
        parts: list[Any] = []
        for seg in segs:
            h = seg[4]
            if isinstance(h, list):
                parts += h
            elif h.nbytes:
                parts.append(h)
        if len(segs) == 1:
            return (*segs[0][:4], parts)
        if not segs:
            e = np.empty(0, np.int64)
            return e, e.astype(np.uint64), e.astype(np.uint32), e.astype(np.uint32), parts
        return (*(np.concatenate([s[i] for s in segs]) for i in range(4)), parts)  # type: ignore[return-value]

    def take(self) -> tuple[np.ndarray, ...]:
        """Take every event as five arrays, the heap joined (for the rarer paths that cut a batch)."""
        self.lists_to_segment()
        segs = [(*seg[:4], _joined(seg[4])) for seg in self.segments]
        self.segments = []
        self.nbytes = 0
        if len(segs) == 1:
            return segs[0]
        if not segs:
            e = np.empty(0, np.int64)
            return e, e.astype(np.uint64), e.astype(np.uint32), e.astype(np.uint32), e.astype(np.uint8)
        return tuple(np.concatenate([s[i] for s in segs]) for i in range(5))


def _joined(heap: np.ndarray | list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(heap), np.uint8) if isinstance(heap, list) else heap
