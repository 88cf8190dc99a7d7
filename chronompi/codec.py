"""Wire formats of the data path: client batches and keeper chunks.

Both are one contiguous little-endian byte buffer (a numpy ``uint8`` array)
sent with mpi4py's uppercase buffer API, never pickled::

    batch  = BATCH_HEADER | declarations | BATCH_RECORD x n | payload heap
    chunk  = CHUNK_HEADER | names        | EVENT x n        | payload heap

Sections start on 8-byte boundaries. Declarations are ``id\\tchronicle\\tstory\\n``
lines (names are validated, so they hold no tab or newline): the first batch
that carries events of a story tells the keeper its names, so no other
message has to reach the keeper before the data does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._plain import plain

BATCH_MAGIC = 0x31424D43  # b"CMB1"
CHUNK_MAGIC = 0x31434D43  # b"CMC1"
VERSION = 1

# batch kinds
DATA = 0  # events (zero events: a heartbeat carrying only the promise)
END = 1  # the client has sent its last batch
QUERY = 2  # an online replay request: the heap holds one QUERY record
RECEIPT = 3  # events, then: the client waits until its keeper has applied this batch (sync until="received")
SYNC = 4  # events, then: the client waits until every event it sent so far is committed (sync())
LEAVE = 5  # events, then: the client moves to another keeper (membership epochs); like END, but it may come back

# chunk kinds
CHUNK = 0  # a closed window (or a late run, see FLAG_LATE) of one story
WATERMARK = 1  # no events: the keeper's watermark moved
CHUNK_END = 2  # the keeper has sent its last chunk
MARKER = 3  # keeper -> grapher: a replay query passed this keeper (heap: one QUERY record)
REPLY = 4  # keeper/grapher -> client: the events of a replay query held there (window = query id)
SYNC_MARK = 5  # keeper -> grapher: a client's SYNC passed this keeper and so did its chunks (heap: one SYNC record)

FLAG_LATE = 1
FLAG_HEAP_APART = 2  # the heap follows in ``parts`` messages of its own (no copy to join them on the sender)

BATCH_HEADER = np.dtype(
    [
        ("magic", "<u4"),
        ("kind", "<u2"),
        ("version", "<u2"),
        ("client", "<u8"),
        ("batch_no", "<u8"),
        ("promise", "<i8"),
        ("sender", "<i4"),
        ("n_events", "<u4"),
        ("heap_bytes", "<u4"),
        ("decl_bytes", "<u4"),
        ("dropped", "<u8"),
    ]
)
assert BATCH_HEADER.itemsize == 56

BATCH_RECORD = np.dtype([("time", "<i8"), ("seq", "<u8"), ("story", "<u4"), ("length", "<u4")])

CHUNK_HEADER = np.dtype(
    [
        ("magic", "<u4"),
        ("kind", "<u2"),
        ("flags", "<u2"),
        ("story", "<u4"),
        ("keeper", "<i4"),
        ("window", "<i8"),
        ("watermark", "<i8"),
        ("n_events", "<u8"),
        ("heap_bytes", "<u8"),
        ("names_bytes", "<u4"),
        ("parts", "<u4"),  # with FLAG_HEAP_APART: how many TAG_CHUNK_HEAP messages carry the heap
    ]
)
assert CHUNK_HEADER.itemsize == 56

# an online replay request: which client asks, for which story and time range, how many keepers it
# asked (a grapher answers once it has that many markers) and, after the record, the graphers it asked
# (int32 ranks: the keepers send their markers there). The client picks both sets from its membership view.
QUERY_RECORD = np.dtype(
    [
        ("qid", "<u8"),
        ("client", "<i4"),
        ("story", "<u4"),
        ("start", "<i8"),
        ("end", "<i8"),
        ("keepers", "<u4"),
        ("graphers", "<u4"),
    ]
)


@plain(frozen=True)
class Query:
    qid: int
    client: int
    story: int
    start: int
    end: int
    keepers: int  # number of keepers asked
    graphers: tuple[int, ...]  # ranks of the graphers asked


def encode_query(
    qid: int, client: int, story: int, start: int, end: int, keepers: int, graphers: Sequence[int]
) -> np.ndarray:
    out = np.zeros(QUERY_RECORD.itemsize + 4 * len(graphers), np.uint8)
    out[: QUERY_RECORD.itemsize].view(QUERY_RECORD)[0] = (qid, client, story, start, end, keepers, len(graphers))
    out[QUERY_RECORD.itemsize :].view("<i4")[:] = graphers
    return out


def decode_query(heap: np.ndarray) -> Query:
    if heap.nbytes < QUERY_RECORD.itemsize:
        raise CodecError(f"a query holds at least {QUERY_RECORD.itemsize} bytes, got {heap.nbytes}")
    q = heap[: QUERY_RECORD.itemsize].view(QUERY_RECORD)[0]
    n = int(q["graphers"])
    if heap.nbytes != QUERY_RECORD.itemsize + 4 * n:
        raise CodecError(f"a query naming {n} graphers holds {QUERY_RECORD.itemsize + 4 * n} bytes, got {heap.nbytes}")
    graphers = tuple(int(g) for g in heap[QUERY_RECORD.itemsize :].view("<i4"))
    return Query(
        int(q["qid"]), int(q["client"]), int(q["story"]), int(q["start"]), int(q["end"]), int(q["keepers"]), graphers
    )


# a client's sync point: the batch number of its SYNC batch and the promise it carried
SYNC_RECORD = np.dtype([("sync_no", "<u8"), ("client", "<i4"), ("pad", "<u4"), ("point", "<i8")])
# the answer to a sync, keeper or grapher -> client on TAG_SYNC: (sync_no and keeper: the SYNC batch's number in
# that keeper's stream; the answering rank; its watermark; from a keeper: how many grapher answers follow)
SYNC_ACK = np.dtype([("sync_no", "<u8"), ("rank", "<i8"), ("watermark", "<i8"), ("expect", "<i8"), ("keeper", "<i8")])


def encode_sync(sync_no: int, client: int, point: int) -> np.ndarray:
    r = np.zeros(1, SYNC_RECORD)
    r[0] = (sync_no, client, 0, point)
    return r.view(np.uint8)


def decode_sync(heap: np.ndarray) -> tuple[int, int, int]:
    """(sync_no, client rank, point) of a SYNC_MARK's heap."""
    if heap.nbytes != SYNC_RECORD.itemsize:
        raise CodecError(f"a sync record holds {SYNC_RECORD.itemsize} bytes, got {heap.nbytes}")
    r = heap.view(SYNC_RECORD)[0]
    return int(r["sync_no"]), int(r["client"]), int(r["point"])


def encode_sync_ack(sync_no: int, rank: int, watermark: int, expect: int, keeper: int) -> np.ndarray:
    a = np.zeros(1, SYNC_ACK)
    a[0] = (sync_no, rank, watermark, expect, keeper)
    return a.view(np.uint8)


# one event as stored: in chunks and in the HDF5 events table
EVENT = np.dtype([("time", "<i8"), ("client", "<u8"), ("seq", "<u8"), ("offset", "<u8"), ("length", "<u4")])
# An EVENT row as 36 opaque bytes. NumPy copies, concatenates and gathers a packed structured dtype field
# by field: through this view the same operations are one block copy per row, 9-22x faster (50 k rows:
# an assignment 923 -> 41 us, np.take 1,648 -> 178 us, concatenate 686 -> 57 us). Hot paths move rows
# through it (:func:`rows`).
EVENT_ROW = np.dtype((np.void, EVENT.itemsize))


def rows(events: np.ndarray) -> np.ndarray:
    """``events`` (EVENT) as EVENT_ROW: the same memory, copied as whole rows. Any other dtype is a TypeError
    (a copy by field names would convert it; bytes moved whole would be misread)."""
    if events.dtype != EVENT:
        raise TypeError(f"codec.rows() takes EVENT rows, not {events.dtype}")
    return events.view(EVENT_ROW)


def _pad8(n: int) -> int:
    return (n + 7) & ~7


class CodecError(ValueError):
    """A buffer is not a well-formed batch or chunk."""


# A client sends its pending story declarations as soon as they pass DECL_BUDGET bytes,
# so one batch carries at most DECL_BUDGET + one declaration (< DECL_MARGIN).
DECL_BUDGET = 2048
DECL_MARGIN = 4096


def batch_capacity(batch_bytes: int, max_event_bytes: int) -> int:
    """Bytes a receive slot needs to hold any batch a client may send."""
    return BATCH_HEADER.itemsize + batch_bytes + max_event_bytes + BATCH_RECORD.itemsize + DECL_MARGIN


class Batch:
    """A decoded batch; arrays are views into the buffer it was decoded from. (One per message: a class
    with slots, not a dataclass, which compiles its methods at import and @plain's shared __init__ is 8x
    slower per object.)"""

    __slots__ = ("kind", "client", "batch_no", "promise", "sender", "dropped", "decls", "records", "heap")

    def __init__(
        self,
        *,
        kind: int,
        client: int,
        batch_no: int,
        promise: int,
        sender: int,
        dropped: int,
        decls: list[tuple[int, str, str]],
        records: np.ndarray,  # BATCH_RECORD
        heap: np.ndarray,  # uint8
    ) -> None:
        self.kind, self.client, self.batch_no, self.promise = kind, client, batch_no, promise
        self.sender, self.dropped, self.decls, self.records, self.heap = sender, dropped, decls, records, heap


def encode_batch(
    kind: int,
    client: int,
    batch_no: int,
    promise: int,
    sender: int,
    time: np.ndarray | Sequence[int],
    seq: np.ndarray | Sequence[int],
    story: np.ndarray | Sequence[int],
    length: np.ndarray | Sequence[int],
    heap: bytes | np.ndarray | Sequence[bytes | np.ndarray],
    decls: Sequence[tuple[int, str, str]] = (),
    dropped: int = 0,
) -> np.ndarray:
    """Pack one batch into a new uint8 buffer.

    ``heap`` may be a list of parts (bytes, or contiguous uint8 arrays) laid end to end: they
    are copied once, straight into the batch (one ``bytes.join`` of header, records and parts),
    never joined first. The buffer returned is then read-only (it is only sent)."""
    n = len(time)
    decl = "".join(f"{i}\t{c}\t{s}\n" for i, c, s in decls).encode()
    parts = heap if isinstance(heap, list) else None
    if parts is None:
        heap_arr = np.frombuffer(heap, np.uint8) if not isinstance(heap, np.ndarray) else heap  # type: ignore[arg-type]
        heap_bytes = heap_arr.nbytes
    else:
        heap_bytes = sum(len(p) if type(p) is bytes else p.nbytes for p in parts)
    d0 = BATCH_HEADER.itemsize
    r0 = d0 + _pad8(len(decl))
    h0 = r0 + n * BATCH_RECORD.itemsize
    head = np.empty(h0 if parts is not None else h0 + heap_bytes, np.uint8)
    hdr = head[:d0].view(BATCH_HEADER)[0]
    hdr["magic"], hdr["kind"], hdr["version"] = BATCH_MAGIC, kind, VERSION
    hdr["client"], hdr["batch_no"], hdr["promise"], hdr["sender"] = client, batch_no, promise, sender
    hdr["n_events"], hdr["heap_bytes"], hdr["decl_bytes"], hdr["dropped"] = n, heap_bytes, len(decl), dropped
    head[d0 : d0 + len(decl)] = np.frombuffer(decl, np.uint8)
    head[d0 + len(decl) : r0] = 0
    rec = head[r0:h0].view(BATCH_RECORD)
    rec["time"], rec["seq"], rec["story"], rec["length"] = time, seq, story, length
    if parts is None:
        head[h0:] = heap_arr
        return head
    return np.frombuffer(b"".join([head.tobytes(), *parts]), np.uint8)  # (the header part is small)


def decode_batch(buf: np.ndarray, nbytes: int | None = None) -> Batch:
    """Decode the first ``nbytes`` of ``buf`` (a uint8 array); arrays returned are views."""
    nbytes = buf.nbytes if nbytes is None else nbytes
    if nbytes < BATCH_HEADER.itemsize:
        raise CodecError(f"batch of {nbytes} bytes is shorter than its header")
    hdr = buf[: BATCH_HEADER.itemsize].view(BATCH_HEADER)[0]
    if hdr["magic"] != BATCH_MAGIC or hdr["version"] != VERSION:
        raise CodecError(f"not a chronompi v{VERSION} batch (magic {int(hdr['magic']):#x})")
    n, heap_bytes, decl_bytes = int(hdr["n_events"]), int(hdr["heap_bytes"]), int(hdr["decl_bytes"])
    d0 = BATCH_HEADER.itemsize
    r0 = d0 + _pad8(decl_bytes)
    h0 = r0 + n * BATCH_RECORD.itemsize
    if h0 + heap_bytes != nbytes:
        raise CodecError(f"batch sizes disagree: header says {h0 + heap_bytes} bytes, got {nbytes}")
    decls = []
    if decl_bytes:
        try:
            for line in buf[d0 : d0 + decl_bytes].tobytes().decode().splitlines():
                i, c, s = line.split("\t")
                decls.append((int(i), c, s))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise CodecError(f"batch declarations are corrupt: {exc}") from None
    return Batch(
        kind=int(hdr["kind"]),
        client=int(hdr["client"]),
        batch_no=int(hdr["batch_no"]),
        promise=int(hdr["promise"]),
        sender=int(hdr["sender"]),
        dropped=int(hdr["dropped"]),
        decls=decls,
        records=buf[r0:h0].view(BATCH_RECORD),
        heap=buf[h0 : h0 + heap_bytes],
    )


class Chunk:
    """A decoded chunk (one per message: slots, as :class:`Batch`)."""

    __slots__ = ("kind", "flags", "story", "keeper", "window", "watermark", "names", "events", "heap")

    def __init__(
        self,
        *,
        kind: int,
        flags: int,
        story: int,
        keeper: int,
        window: int,
        watermark: int,
        names: tuple[str, str],
        events: np.ndarray,  # EVENT, offsets into heap
        heap: np.ndarray,  # uint8
    ) -> None:
        self.kind, self.flags, self.story, self.keeper, self.window = kind, flags, story, keeper, window
        self.watermark, self.names, self.events, self.heap = watermark, names, events, heap


def chunk_buffer(
    kind: int,
    keeper: int,
    watermark: int,
    story: int,
    window: int,
    names: tuple[str, str],
    n_events: int,
    heap_bytes: int,
    flags: int = 0,
    parts: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chunk buffer with its header written: (buffer, events section, heap section) to fill in place.

    With ``parts`` > 0 the heap travels apart, in that many messages of its own (FLAG_HEAP_APART):
    the buffer ends after the events and its heap section is empty."""
    nm = f"{names[0]}\t{names[1]}".encode() if names[0] else b""
    n0 = CHUNK_HEADER.itemsize
    e0 = n0 + _pad8(len(nm))
    h0 = e0 + n_events * EVENT.itemsize
    if parts:
        flags |= FLAG_HEAP_APART
    buf = np.empty(h0 + (0 if parts else heap_bytes), np.uint8)
    hdr = buf[:n0].view(CHUNK_HEADER)[0]
    hdr["magic"], hdr["kind"], hdr["flags"], hdr["story"] = CHUNK_MAGIC, kind, flags, story
    hdr["keeper"], hdr["window"], hdr["watermark"] = keeper, window, watermark
    hdr["n_events"], hdr["heap_bytes"], hdr["names_bytes"], hdr["parts"] = n_events, heap_bytes, len(nm), parts
    buf[n0 : n0 + len(nm)] = np.frombuffer(nm, np.uint8)
    buf[n0 + len(nm) : e0] = 0
    return buf, buf[e0:h0].view(EVENT), buf[h0:]


def encode_chunk(
    kind: int,
    keeper: int,
    watermark: int,
    story: int = 0,
    window: int = 0,
    names: tuple[str, str] = ("", ""),
    events: np.ndarray | None = None,
    heap: np.ndarray | None = None,
    flags: int = 0,
) -> np.ndarray:
    """Pack one chunk (or a watermark / end notice when ``events`` is None)."""
    ev = events if events is not None else np.empty(0, EVENT)
    hp = heap if heap is not None else np.empty(0, np.uint8)
    buf, ev_out, heap_out = chunk_buffer(kind, keeper, watermark, story, window, names, len(ev), hp.nbytes, flags)
    rows(ev_out)[...] = rows(ev)
    heap_out[...] = hp
    return buf


def chunk_parts(buf: np.ndarray) -> tuple[int, int]:
    """(heap parts that follow apart, heap bytes) of a received chunk header; (0, _) when the heap is inside."""
    hdr = buf[: CHUNK_HEADER.itemsize].view(CHUNK_HEADER)[0]
    if buf.nbytes < CHUNK_HEADER.itemsize or hdr["magic"] != CHUNK_MAGIC or not hdr["flags"] & FLAG_HEAP_APART:
        return 0, 0
    return int(hdr["parts"]), int(hdr["heap_bytes"])


def decode_chunk(buf: np.ndarray, heap: np.ndarray | None = None) -> Chunk:
    """Decode a chunk; ``heap`` is its heap when it travelled apart (FLAG_HEAP_APART)."""
    if buf.nbytes < CHUNK_HEADER.itemsize:
        raise CodecError(f"chunk of {buf.nbytes} bytes is shorter than its header")
    hdr = buf[: CHUNK_HEADER.itemsize].view(CHUNK_HEADER)[0]
    if hdr["magic"] != CHUNK_MAGIC:
        raise CodecError(f"not a chronompi chunk (magic {int(hdr['magic']):#x})")
    n, heap_bytes, nb = int(hdr["n_events"]), int(hdr["heap_bytes"]), int(hdr["names_bytes"])
    n0 = CHUNK_HEADER.itemsize
    e0 = n0 + _pad8(nb)
    h0 = e0 + n * EVENT.itemsize
    got = buf.nbytes + (heap.nbytes if heap is not None else 0)
    if h0 + heap_bytes != got or (heap is not None and h0 != buf.nbytes):
        raise CodecError(f"chunk sizes disagree: header says {h0 + heap_bytes} bytes, got {got}")
    names = ("", "")
    if nb:
        try:
            c, s = buf[n0 : n0 + nb].tobytes().decode().split("\t")
        except ValueError as exc:
            raise CodecError(f"chunk names are corrupt: {exc}") from None
        names = (c, s)
    return Chunk(
        kind=int(hdr["kind"]),
        flags=int(hdr["flags"]),
        story=int(hdr["story"]),
        keeper=int(hdr["keeper"]),
        window=int(hdr["window"]),
        watermark=int(hdr["watermark"]),
        names=names,
        events=buf[e0:h0].view(EVENT),
        heap=buf[h0:] if heap is None else heap,
    )
