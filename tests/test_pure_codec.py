"""Wire formats (chronompi.codec): batch and chunk round trips, corrupt input, slot capacity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronompi import codec
from chronompi.codec import (
    BATCH_HEADER,
    BATCH_RECORD,
    CHUNK_HEADER,
    EVENT,
    CodecError,
    batch_capacity,
    decode_batch,
    decode_chunk,
    encode_batch,
    encode_chunk,
)
from chronompi.names import MAX_NAME_LEN, check_name
from chronompi.windows import FOREVER, NEVER

I64 = st.integers(-(2**63), 2**63 - 1)
U64 = st.integers(0, 2**64 - 1)
U32 = st.integers(0, 2**32 - 1)
NAMES = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}", fullmatch=True).filter(
    lambda n: ".." not in n and check_name(n) == n
)
DECLS = st.lists(st.tuples(U32, NAMES, NAMES), max_size=5)


def _heap(lengths: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, int(sum(lengths)), dtype=np.uint8)


@st.composite
def batches(draw):
    n_big = draw(st.integers(0, 2))
    lengths = draw(st.lists(st.integers(0, 300), max_size=40))
    lengths += draw(st.lists(st.integers(0, 70000), min_size=n_big, max_size=n_big))
    n = len(lengths)
    return dict(
        kind=draw(st.sampled_from([codec.DATA, codec.END])),
        client=draw(U64),
        batch_no=draw(U64),
        promise=draw(I64),
        sender=draw(st.integers(0, 2**31 - 1)),
        time=draw(st.lists(I64, min_size=n, max_size=n)),
        seq=draw(st.lists(U64, min_size=n, max_size=n)),
        story=draw(st.lists(U32, min_size=n, max_size=n)),
        length=lengths,
        heap=_heap(lengths, draw(st.integers(0, 2**32 - 1))),
        decls=draw(DECLS),
        dropped=draw(U64),
    )


def _check_batch(b: codec.Batch, a: dict) -> None:
    assert b.kind == a["kind"]
    assert b.client == a["client"]
    assert b.batch_no == a["batch_no"]
    assert b.promise == a["promise"]
    assert b.sender == a["sender"]
    assert b.dropped == a["dropped"]
    assert b.decls == [tuple(d) for d in a["decls"]]
    assert b.records.dtype == BATCH_RECORD
    assert len(b.records) == len(a["time"])
    assert b.records["time"].tolist() == list(a["time"])
    assert b.records["seq"].tolist() == list(a["seq"])
    assert b.records["story"].tolist() == list(a["story"])
    assert b.records["length"].tolist() == list(a["length"])
    assert b.heap.tobytes() == np.asarray(a["heap"], np.uint8).tobytes()
    # payload i is the next length[i] bytes of the heap
    ends = np.cumsum([0, *a["length"]])
    for i in range(len(a["length"])):
        assert b.heap[ends[i] : ends[i + 1]].tobytes() == a["heap"][ends[i] : ends[i + 1]].tobytes()


# -- batches ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(batches())
def test_batch_round_trip(a: dict) -> None:
    buf = encode_batch(**a)
    assert buf.dtype == np.uint8 and buf.ndim == 1
    n = len(a["time"])
    decl = sum(len(f"{i}\t{c}\t{s}\n") for i, c, s in a["decls"])
    assert buf.nbytes == BATCH_HEADER.itemsize + (-(-decl // 8) * 8) + n * BATCH_RECORD.itemsize + sum(a["length"])
    _check_batch(decode_batch(buf), a)


@settings(max_examples=30, deadline=None)
@given(batches(), st.integers(0, 5000))
def test_batch_decodes_from_a_larger_receive_slot(a: dict, extra: int) -> None:
    buf = encode_batch(**a)
    slot = np.full(buf.nbytes + extra, 0xAB, np.uint8)  # stale bytes after the message
    slot[: buf.nbytes] = buf
    b = decode_batch(slot, buf.nbytes)
    _check_batch(b, a)
    # arrays are views into the slot, not copies
    if len(b.records):
        assert np.shares_memory(b.records, slot)
    if b.heap.nbytes:
        assert np.shares_memory(b.heap, slot)


def test_batch_heap_as_bytes_or_array() -> None:
    a = encode_batch(codec.DATA, 1, 0, 5, 3, [10, 20], [0, 1], [7, 7], [3, 2], b"abcde")
    b = encode_batch(
        codec.DATA,
        1,
        0,
        5,
        3,
        np.array([10, 20], np.int64),
        np.array([0, 1], np.uint64),
        np.array([7, 7], np.uint32),
        np.array([3, 2], np.uint32),
        np.frombuffer(b"abcde", np.uint8),
    )
    assert a.tobytes() == b.tobytes()
    d = decode_batch(a)
    assert d.heap.tobytes() == b"abcde"
    assert d.records["time"].tolist() == [10, 20]


def test_heartbeat_and_end_batches() -> None:
    hb = decode_batch(encode_batch(codec.DATA, 9, 4, 123, 2, [], [], [], [], b""))
    assert (hb.kind, hb.client, hb.batch_no, hb.promise, hb.sender) == (codec.DATA, 9, 4, 123, 2)
    assert len(hb.records) == 0 and hb.heap.nbytes == 0 and hb.decls == [] and hb.dropped == 0
    end = decode_batch(encode_batch(codec.END, 9, 5, int(FOREVER), 2, [], [], [], [], b"", dropped=17))
    assert end.kind == codec.END
    assert end.promise == FOREVER
    assert end.dropped == 17


def test_batch_extreme_values() -> None:
    a = dict(
        kind=codec.DATA,
        client=2**64 - 1,
        batch_no=2**64 - 1,
        promise=int(NEVER),
        sender=2**31 - 1,
        time=[int(NEVER), int(FOREVER), -1, 0],
        seq=[0, 2**64 - 1, 1, 2],
        story=[0, 2**32 - 1, 1, 2],
        length=[0, 0, 0, 0],
        heap=np.empty(0, np.uint8),
        decls=[(2**32 - 1, "c" * MAX_NAME_LEN, "s" * MAX_NAME_LEN), (1, "a.b", "x-y_z")],
        dropped=2**64 - 1,
    )
    _check_batch(decode_batch(encode_batch(**a)), a)


def test_sections_are_8_byte_aligned() -> None:
    for decls in ([], [(1, "a", "b")], [(12, "abc", "defg"), (3, "x", "y")]):
        buf = encode_batch(codec.DATA, 1, 0, 0, 0, [1], [0], [1], [1], b"z", decls)
        hdr = buf[: BATCH_HEADER.itemsize].view(BATCH_HEADER)[0]
        r0 = BATCH_HEADER.itemsize + int(hdr["decl_bytes"])
        r0 += -r0 % 8
        assert r0 % 8 == 0
        rec = buf[r0 : r0 + BATCH_RECORD.itemsize].view(BATCH_RECORD)[0]
        assert (int(rec["time"]), int(rec["length"])) == (1, 1)
        # the padding after the declarations is zeroed, so equal batches are equal bytes
        pad = buf[BATCH_HEADER.itemsize + int(hdr["decl_bytes"]) : r0]
        assert not pad.any()


# -- chunks ------------------------------------------------------------------------------


@st.composite
def chunks(draw):
    kind = draw(st.sampled_from([codec.CHUNK, codec.WATERMARK, codec.CHUNK_END]))
    args = dict(
        kind=kind,
        keeper=draw(st.integers(0, 2**31 - 1)),
        watermark=draw(st.one_of(I64, st.sampled_from([int(NEVER), int(FOREVER)]))),
    )
    if kind != codec.CHUNK:
        return args
    n_big = draw(st.integers(0, 2))
    lengths = draw(st.lists(st.integers(0, 300), max_size=40))
    lengths += draw(st.lists(st.integers(0, 70000), min_size=n_big, max_size=n_big))
    n = len(lengths)
    ev = np.zeros(n, EVENT)
    ev["time"] = draw(st.lists(I64, min_size=n, max_size=n))
    ev["client"] = draw(st.lists(U64, min_size=n, max_size=n))
    ev["seq"] = draw(st.lists(U64, min_size=n, max_size=n))
    ev["length"] = lengths
    ev["offset"] = np.cumsum([0, *lengths])[:-1]
    args.update(
        story=draw(U32),
        window=draw(I64),
        names=(draw(NAMES), draw(NAMES)),
        events=ev,
        heap=_heap(lengths, draw(st.integers(0, 2**32 - 1))),
        flags=draw(st.sampled_from([0, codec.FLAG_LATE])),
    )
    return args


@settings(max_examples=60, deadline=None)
@given(chunks())
def test_chunk_round_trip(a: dict) -> None:
    buf = encode_chunk(**a)
    c = decode_chunk(buf)
    assert c.kind == a["kind"]
    assert c.keeper == a["keeper"]
    assert c.watermark == a["watermark"]
    assert c.story == a.get("story", 0)
    assert c.window == a.get("window", 0)
    assert c.flags == a.get("flags", 0)
    assert c.names == a.get("names", ("", ""))
    ev = a.get("events", np.empty(0, EVENT))
    heap = a.get("heap", np.empty(0, np.uint8))
    assert c.events.dtype == EVENT
    assert c.events.tobytes() == ev.tobytes()
    assert c.heap.tobytes() == heap.tobytes()
    for row in c.events:
        o, n = int(row["offset"]), int(row["length"])
        assert c.heap[o : o + n].tobytes() == heap[o : o + n].tobytes()


def test_watermark_and_end_notices_are_header_only() -> None:
    wm = encode_chunk(codec.WATERMARK, keeper=3, watermark=-5)
    assert wm.nbytes == CHUNK_HEADER.itemsize
    c = decode_chunk(wm)
    assert (c.kind, c.keeper, c.watermark, c.names, len(c.events), c.heap.nbytes) == (
        codec.WATERMARK,
        3,
        -5,
        ("", ""),
        0,
        0,
    )
    end = decode_chunk(encode_chunk(codec.CHUNK_END, keeper=1, watermark=int(FOREVER)))
    assert end.kind == codec.CHUNK_END and end.watermark == FOREVER


def test_chunk_late_flag_and_negative_window() -> None:
    ev = np.zeros(1, EVENT)
    ev["time"], ev["length"] = -7, 2
    heap = np.frombuffer(b"hi", np.uint8)
    buf = encode_chunk(codec.CHUNK, 2, -1, story=9, window=-3, names=("c", "s"), events=ev, heap=heap, flags=1)
    c = decode_chunk(buf)
    assert c.flags == codec.FLAG_LATE == 1
    assert c.window == -3
    assert c.events["time"].tolist() == [-7]
    assert c.heap.tobytes() == b"hi"


# -- corrupt input -------------------------------------------------------------------------


def _sample_batch() -> np.ndarray:
    return encode_batch(
        codec.DATA, 5, 1, 100, 2, [1, 2, 3], [0, 1, 2], [4, 4, 4], [3, 0, 5], b"abcdefgh", [(4, "chron", "story")]
    )


def _sample_chunk() -> np.ndarray:
    ev = np.zeros(2, EVENT)
    ev["time"], ev["length"], ev["offset"] = [1, 2], [3, 4], [0, 3]
    heap = np.frombuffer(b"abcdefg", np.uint8)
    return encode_chunk(codec.CHUNK, 1, 0, story=4, window=0, names=("chron", "story"), events=ev, heap=heap)


def test_batch_truncated_anywhere_is_refused() -> None:
    buf = _sample_batch()
    for k in range(buf.nbytes):
        with pytest.raises(CodecError):
            decode_batch(buf[:k].copy())
        with pytest.raises(CodecError):
            decode_batch(buf, k)  # a receive that got fewer bytes than the header announces


def test_batch_with_trailing_bytes_is_refused() -> None:
    buf = _sample_batch()
    longer = np.concatenate([buf, np.zeros(8, np.uint8)])
    with pytest.raises(CodecError, match="sizes disagree"):
        decode_batch(longer)
    assert decode_batch(longer, buf.nbytes).heap.tobytes() == b"abcdefgh"


def test_chunk_truncated_or_extended_is_refused() -> None:
    buf = _sample_chunk()
    assert decode_chunk(buf).heap.tobytes() == b"abcdefg"
    for k in range(buf.nbytes):
        with pytest.raises(CodecError):
            decode_chunk(buf[:k].copy())
    with pytest.raises(CodecError, match="sizes disagree"):
        decode_chunk(np.concatenate([buf, np.zeros(1, np.uint8)]))


@pytest.mark.parametrize("field", ["n_events", "heap_bytes", "decl_bytes"])
def test_batch_header_size_fields_corrupt(field: str) -> None:
    buf = _sample_batch()
    hdr = buf[: BATCH_HEADER.itemsize].view(BATCH_HEADER)
    hdr[0][field] += 8  # keeps decl padding a multiple of 8 so only the total can catch it
    with pytest.raises(CodecError, match="sizes disagree"):
        decode_batch(buf)


@pytest.mark.parametrize("field", ["n_events", "heap_bytes", "names_bytes"])
def test_chunk_header_size_fields_corrupt(field: str) -> None:
    buf = _sample_chunk()
    hdr = buf[: CHUNK_HEADER.itemsize].view(CHUNK_HEADER)
    hdr[0][field] += 8
    with pytest.raises(CodecError, match="sizes disagree"):
        decode_chunk(buf)


def test_bad_magic_and_version() -> None:
    buf = _sample_batch()
    bad = buf.copy()
    bad[0] ^= 0xFF
    with pytest.raises(CodecError, match="magic"):
        decode_batch(bad)
    bad = buf.copy()
    bad[: BATCH_HEADER.itemsize].view(BATCH_HEADER)[0]["version"] = codec.VERSION + 1
    with pytest.raises(CodecError):
        decode_batch(bad)
    chunk = _sample_chunk()
    bad = chunk.copy()
    bad[3] ^= 0x01
    with pytest.raises(CodecError, match="magic"):
        decode_chunk(bad)
    # one format is never mistaken for the other
    with pytest.raises(CodecError):
        decode_batch(chunk)
    with pytest.raises(CodecError):
        decode_chunk(buf)
    with pytest.raises(CodecError):
        decode_batch(np.zeros(200, np.uint8))


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


def _corrupt_decls(how: str) -> np.ndarray:
    buf = _sample_batch()
    d0 = BATCH_HEADER.itemsize
    if how == "utf8":
        buf[d0] = 0xFF  # not UTF-8
    else:
        buf[d0 : d0 + 14][buf[d0 : d0 + 14] == ord("\t")] = ord("x")  # fields run together
    return buf


def _corrupt_names(how: str) -> np.ndarray:
    buf = _sample_chunk()
    n0 = CHUNK_HEADER.itemsize
    if how == "utf8":
        buf[n0] = 0xFF
    else:
        buf[n0 + 5] = ord("x")  # the tab between chronicle and story
    return buf


@pytest.mark.parametrize(
    "make",
    [
        lambda: decode_batch(_corrupt_decls("utf8")),
        lambda: decode_batch(_corrupt_decls("tab")),
        lambda: decode_chunk(_corrupt_names("utf8")),
        lambda: decode_chunk(_corrupt_names("tab")),
    ],
    ids=["batch-utf8", "batch-no-tab", "chunk-utf8", "chunk-no-tab"],
)
def test_corrupt_name_sections_raise_codec_error(make) -> None:
    with pytest.raises(CodecError):
        make()


# -- receive slot capacity -------------------------------------------------------------------


def _largest_batch(batch_bytes: int, max_event_bytes: int, decls: list[tuple[int, str, str]]) -> np.ndarray:
    """The largest batch a client sends: its open batch was one byte short of ``batch_bytes``
    (payload + BATCH_RECORD per event, as the client counts it) when one more event of
    ``max_event_bytes`` arrived."""
    filler = max(0, batch_bytes - 1 - BATCH_RECORD.itemsize)
    lengths = [filler, max_event_bytes]
    heap = np.zeros(sum(lengths), np.uint8)
    return encode_batch(codec.DATA, 1, 0, 0, 1, [1, 2], [0, 1], [1, 1], lengths, heap, decls)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 1 << 20), st.integers(0, 1 << 20), st.integers(0, 3))
def test_batch_capacity_holds_a_full_batch_plus_one_max_event(batch_bytes: int, max_event: int, n_decl: int) -> None:
    longest = "n" * MAX_NAME_LEN
    decls = [(2**32 - 1 - i, longest, longest) for i in range(n_decl)]
    buf = _largest_batch(batch_bytes, max_event, decls)
    cap = batch_capacity(batch_bytes, max_event)
    assert buf.nbytes <= cap
    assert cap >= BATCH_HEADER.itemsize + batch_bytes + max_event
    # and the batch decodes from a slot of exactly that capacity
    slot = np.zeros(cap, np.uint8)
    slot[: buf.nbytes] = buf
    assert decode_batch(slot, buf.nbytes).records["length"].tolist()[-1] == max_event


def test_batch_capacity_defaults() -> None:
    kib = 256 * 1024
    buf = _largest_batch(kib, kib, [(1, "chron0", "story0")])
    assert buf.nbytes <= batch_capacity(kib, kib)


def _decl_estimate(decls: list[tuple[int, str, str]]) -> int:
    """What the client counts against codec.DECL_BUDGET (client.acquire_story)."""
    return sum(len(c) + len(s) + 24 for _, c, s in decls)


def test_declaration_budget_fits_the_slot_margin() -> None:
    # the client sends as soon as its pending declarations pass DECL_BUDGET, so a batch carries at
    # most DECL_BUDGET plus one declaration; the client's estimate is never below the real size
    longest = "n" * MAX_NAME_LEN
    one = [(2**32 - 1, longest, longest)]
    real = len("".join(f"{i}\t{c}\t{s}\n" for i, c, s in one))
    assert real <= _decl_estimate(one)
    assert codec.DECL_BUDGET + _decl_estimate(one) + 7 < codec.DECL_MARGIN


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 1 << 20), st.integers(0, 1 << 20), st.lists(st.tuples(U32, NAMES, NAMES), max_size=200))
def test_batch_capacity_holds_the_declarations_a_client_may_send(batch_bytes: int, max_event: int, pending) -> None:
    # replay acquire_story: a declaration is appended, and the batch is sent once over budget
    decls: list[tuple[int, str, str]] = []
    for d in pending:
        decls.append(d)
        if _decl_estimate(decls) > codec.DECL_BUDGET:
            break
    buf = _largest_batch(batch_bytes, max_event, decls)
    assert buf.nbytes <= batch_capacity(batch_bytes, max_event)
    assert decode_batch(buf).decls == decls


def test_batch_capacity_holds_the_largest_declaration_batch() -> None:
    longest = "n" * MAX_NAME_LEN
    decls: list[tuple[int, str, str]] = []
    while _decl_estimate(decls) <= codec.DECL_BUDGET:
        decls.append((2**32 - 1 - len(decls), longest, f"{len(decls):0{MAX_NAME_LEN}d}"))
    buf = _largest_batch(256 * 1024, 256 * 1024, decls)
    assert buf.nbytes <= batch_capacity(256 * 1024, 256 * 1024)
    # without the budget (every pending declaration on one batch) ~30 such stories overflow the slot
    many = [(2**32 - 1 - i, longest, f"{i:0{MAX_NAME_LEN}d}") for i in range(40)]
    assert _largest_batch(256 * 1024, 256 * 1024, many).nbytes > batch_capacity(256 * 1024, 256 * 1024)


def test_event_rows_move_whole_and_only_as_event() -> None:
    """codec.rows(): a take, a concatenation and an assignment through the void view give the same rows as
    numpy's field-by-field ones; another dtype (same size, other fields) is refused, not reinterpreted."""
    from chronompi.codec import EVENT, rows

    rng = np.random.default_rng(3)
    ev = np.zeros(1000, EVENT)
    for name in EVENT.names:
        ev[name] = rng.integers(0, 2**31, len(ev))
    order = rng.permutation(len(ev))
    assert np.array_equal(rows(ev)[order].view(EVENT), ev[order])
    both = np.concatenate([rows(ev[:300]), rows(ev[300:])]).view(EVENT)
    assert np.array_equal(both, ev)
    out = np.empty(500, EVENT)
    rows(out)[...] = rows(ev[::2])
    assert np.array_equal(out, ev[::2])
    other = np.dtype([("a", "<u8"), ("b", "<u8"), ("c", "<u8"), ("d", "<u8"), ("e", "<u4")])
    with pytest.raises(TypeError, match="EVENT rows"):
        rows(np.zeros(3, other))
