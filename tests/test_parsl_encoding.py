"""Encoding version 3 of Parsl monitoring messages (chronompi.parsl.packed, msgpack): round trips (types
included, and for generated bodies), size, safety, threads; version-2 payloads (the encoder version 3 replaced)
still decoding; stores written with version 1 (JSON) and 3 exporting identically (a real session under mpirun)."""

from __future__ import annotations

import collections
import datetime as dt
import enum
import math
import pickle
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

parsl = pytest.importorskip("parsl")

from conftest import mpirun  # noqa: E402
from parsl.dataflow.states import States  # noqa: E402
from parsl.monitoring.message_type import MessageType  # noqa: E402
from storecheck import sqlite_tables  # noqa: E402

from chronompi.errors import ChronoError  # noqa: E402
from chronompi.parsl import (  # noqa: E402
    EncodingError,
    decode_message,
    encode_message,
    export_parsl,
    packed,  # noqa: E402
)
from chronompi.parsl.encoding import payload_version  # noqa: E402
from chronompi.parsl.export import TABLES  # noqa: E402
from chronompi.parsl.packed import KINDS, SCHEMAS, ZIPPED  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
from bench_parsl import make_stream  # noqa: E402
from bench_parsl_encoding import same  # noqa: E402

NOW = dt.datetime(2026, 11, 25, 7, 41, 2, 123456)


class Color(enum.Enum):
    RED = 1


ODD = {
    "run_id": "5f1d2c3e-0b4a-4e5f-9a8b-7c6d5e4f3a2b",
    "not_a_uuid": "5F1D2C3E-0B4A-4E5F-9A8B-7C6D5E4F3A2B",
    "timestamp": NOW,
    "earlier": NOW - dt.timedelta(days=400, microseconds=3),
    "aware": NOW.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    "day": NOW.date(),
    "clock": NOW.time(),
    "took": dt.timedelta(days=-1, seconds=2, microseconds=3),
    "floats": [0.0, -0.0, 1.5, 3.0, -7.0, 2.0**60, float("inf"), float("-inf"), 1e-300],
    "ints": [0, 127, 128, -1, -32, -33, 2**63, -(2**70), 10**40],
    "blob": b"\x00\xffpickle-free",
    "status": States.exec_done,
    "color": Color.RED,
    "pair": (1, "a", None),
    "tags": {3, 1, 2},
    "mixed_set": {1, "a"},
    "by_int": {1: "one", (2, 3): "tuple key", None: True},
    "$dollar": {"$datetime": "not a tag"},
    "nested": [{"a": [NOW, None, True, False, 1.5]}],
    "unicode": "héllo \u2603 " * 10,
    "np": [np.int64(5), np.float32(0.5), np.bool_(True)],
    "interned": ["pending", "None", "htex", "[]", ""],
}


V2_PAYLOADS = Path(__file__).resolve().parent / "data" / "parsl-v2-payloads.bin"


@pytest.mark.parametrize("kind", [t.name for t in MessageType] + ["SOMETHING_NEW", "MALFORMED"])
def test_every_message_type_round_trips(kind: str) -> None:
    stream = [body for k, body in make_stream(60) if k.name == kind] or [ODD]
    for body in [*stream, ODD, {**ODD, "brand_new_field": [NOW, 1]}, [ODD], 7, None, []]:
        payload = encode_message(kind, body)
        assert payload[0] == 3 and payload_version(payload) == 3
        k, back = decode_message(payload)
        assert k == kind
        assert same(back, _plain(body)), kind
        assert decode_message(encode_message(kind, body, version=1)) == (kind, _plain(body))


def _plain(x: Any) -> Any:
    """What decoding gives back: numpy scalars as Python numbers (nan compares by identity, so none here)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


Point = collections.namedtuple("Point", "x y")


class Stamp(dt.datetime):
    """A datetime subclass whose replace() keeps its class (as pandas' Timestamp does)."""

    def replace(self, *args: Any, **kwargs: Any) -> Stamp:
        return self


def test_types_are_kept_exactly() -> None:
    _, back = decode_message(encode_message("TASK_INFO", ODD))
    assert type(back["status"]) is States and back["status"] is States.exec_done
    assert type(back["pair"]) is tuple and back["by_int"][(2, 3)] == "tuple key"
    assert back["aware"].utcoffset() == dt.timedelta(hours=-5, minutes=-30) and back["aware"] == ODD["aware"]
    assert type(back["floats"][3]) is float and math.copysign(1, back["floats"][1]) == -1
    assert back["not_a_uuid"] == ODD["not_a_uuid"]  # upper case: kept as text, not as 16 bytes
    assert back["ints"] == ODD["ints"] and back["tags"] == {1, 2, 3}
    nan = decode_message(encode_message("X", float("nan")))[1]
    assert math.isnan(nan)
    odd = {
        "point": Point(1, NOW),  # subclasses as their base type
        "ordered": collections.OrderedDict(b=1, a=2),
        "frozen_key": {frozenset({1, 2}): "f"},
        "edges": [2**64 - 1, 2**64, -(2**63), -(2**63) - 1],
        "far": [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999), dt.date(1, 1, 1)],
    }
    _, back = decode_message(encode_message("TASK_INFO", {**odd, "stamp": Stamp(2026, 1, 2, 3, 4, 5, 6)}))
    assert same(back["stamp"], dt.datetime(2026, 1, 2, 3, 4, 5, 6))  # a datetime subclass: as a datetime
    assert same(back["point"], (1, NOW)) and same(back["ordered"], {"b": 1, "a": 2})
    assert same(back["frozen_key"], {frozenset({1, 2}): "f"}) and same(back["edges"], odd["edges"])
    assert same(back["far"], odd["far"])


def test_records_use_the_schema_and_unknown_keys_round_trip() -> None:
    for code, fields in SCHEMAS.items():
        assert len(set(fields)) == len(fields), KINDS[code]
    body = {"task_id": 3, "run_id": "r", "future_field": {"x": [1, 2]}, "timestamp": NOW}
    payload = encode_message("TASK_INFO", body)
    assert b"task_id" not in payload and b"future_field" in payload
    assert decode_message(payload)[1] == body
    run_id = "5f1d2c3e-0b4a-4e5f-9a8b-7c6d5e4f3a2b"  # a run id as its 16 bytes
    compact = encode_message("TASK_INFO", {**body, "run_id": run_id})
    assert run_id.encode() not in compact and uuid_bytes(run_id) in compact
    assert decode_message(compact)[1] == {**body, "run_id": run_id}


def uuid_bytes(s: str) -> bytes:
    import uuid

    return uuid.UUID(s).bytes


def test_large_bodies_are_compressed() -> None:
    node = {"run_id": "r", "timestamp": NOW, "packages": {f"package-{i}": f"1.{i}.0" for i in range(80)}}
    payload = encode_message("NODE_INFO", node)
    assert payload[1] == ZIPPED and len(payload) < len(encode_message("NODE_INFO", {**node, "packages": {}})) + 600
    assert decode_message(payload) == ("NODE_INFO", node)
    for cut in range(2, len(payload)):
        with pytest.raises(EncodingError):
            decode_message(payload[:cut])
    with pytest.raises(EncodingError):
        decode_message(payload[:2] + struct.pack(">I", 10**9) + payload[6:])  # a wrong length
    small = encode_message("TASK_INFO", {"task_id": 1})
    assert small[1] != ZIPPED


def test_never_unpickles_and_rejects_damage() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 7>"

    assert decode_message(encode_message("X", {"x": Thing()}))[1] == {"x": "<Thing 7>"}
    payload = encode_message("TASK_INFO", ODD)
    for cut in range(1, len(payload)):  # every truncation is an EncodingError, never another exception
        with pytest.raises(EncodingError):
            decode_message(payload[:cut])
    bad = [
        pickle.dumps({"a": 1}),
        b"\x03\x93\x02\x09\xc0",  # an unknown body form
        b"\x03\x93\x09\x00\xc0",  # an unknown message type code
        b"\x03\x93\x02\x01\x91\xce\xff\xff\xff\xff",  # a bitmap past the schema's fields
        b"\x03\x93\xa1X\x00\xd4\x63\x00",  # an unknown extension type
        b"\x03\x93\xa1X\x00\xd6\x02\x00\x00\x00\x01",  # a relative datetime with no base
        b"\x03\x92\x01\x00",  # not [kind, form, body]
        payload + b"\x00",
    ]
    for b in bad:
        with pytest.raises(EncodingError) as ei:
            decode_message(b)
        assert isinstance(ei.value, ChronoError)
    with pytest.raises(EncodingError, match="newer"):
        decode_message(b"\x05\x01\x00")


def _variants(msgs: list[Any]) -> Iterator[tuple[str, Any]]:
    """Bodies of every shape the records meet: fields missing, odd values, non-str keys, lists of records."""
    odd = {k: v for k, v in ODD.items() if k not in ("np", "unicode", "mixed_set")}  # (its order: str hashes vary)
    for kind, b in msgs:
        for i, x in enumerate(b if isinstance(b, list) else [b]):
            y = dict(x)
            if i % 2 == 0:
                y.pop("run_id", None)
            y["task_id"] = 10**6 + len(y)
            y["from_memo"] = bool(len(y) % 2)
            for body in (y, {**y, **odd}, {**y, 7: "int key"}, [y, y]):
                yield kind.name, body


def test_version_2_payloads_still_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores written before version 3 export as they did: the payloads of a stream and of its odd variants,
    as the version-2 encoder wrote them (tests/data/parsl-v2-payloads.bin, written at commit 8b77f78 from
    these same messages), decode to the messages."""
    monkeypatch.setitem(sys.modules, "test_parsl_encoding_v2", sys.modules[__name__])  # Color's module then
    msgs = make_stream(60)
    items = [(k.name, b) for k, b in msgs] + list(_variants(msgs[:100]))
    items += [("TASK_INFO", ODD), ("X", [ODD]), ("NEW_KIND", 7)]
    data, pos = V2_PAYLOADS.read_bytes(), 0
    for kind, body in items:
        (n,) = struct.unpack_from(">I", data, pos)
        payload = data[pos + 4 : pos + 4 + n]
        pos += 4 + n
        assert payload_version(payload) == 2
        assert decode_message(payload) == (kind, _plain(body))
    assert pos == len(data)
    with pytest.raises(ValueError, match="give 3"):
        encode_message("TASK_INFO", {}, version=2)


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """More record shapes and run ids than the caches keep: still right, and the caches stay small."""
    monkeypatch.setattr(packed, "_CACHE_MAX", 4)
    for cache in ("_PLANS", "_FIELDS", "_RUN_IDS"):
        monkeypatch.setattr(packed, cache, {})
    fields = SCHEMAS[KINDS.index("TASK_INFO")]
    for n in range(1, len(fields) + 1):
        body = {f: (NOW if n % 3 else n, "htex", None)[i % 3] for i, f in enumerate(fields[:n])}
        body["run_id"] = f"5f1d2c3e-0b4a-4e5f-9a8b-7c6d5e4f{n:04x}"
        assert decode_message(encode_message("TASK_INFO", body)) == ("TASK_INFO", body)
        assert max(len(packed._PLANS), len(packed._FIELDS), len(packed._RUN_IDS)) <= 4


def test_threads_encode_at_once() -> None:
    """Each thread packs with its own packer and datetime base (the hub's sink is called from several)."""
    msgs = make_stream(300)
    errors: list[str] = []

    def work(shift: int) -> None:
        for k, b in msgs:
            body = {**b, "timestamp": NOW + dt.timedelta(days=shift)} if isinstance(b, dict) else b
            if decode_message(encode_message(k.name, body)) != (k.name, body):
                errors.append(f"{shift}: {k.name}")

    threads = [threading.Thread(target=work, args=(i * 1000,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def test_without_msgpack_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = encode_message("TASK_INFO", {"task_id": 1})
    monkeypatch.setattr(packed, "msgpack", None)
    for call in (lambda: encode_message("TASK_INFO", {"task_id": 1}), lambda: decode_message(payload)):
        with pytest.raises(EncodingError, match=r"pip install 'chronompi\[parsl\]'"):
            call()
    assert decode_message(encode_message("TASK_INFO", {"task_id": 1}, version=1)) == ("TASK_INFO", {"task_id": 1})


# -- generated bodies: what a Parsl message may hold, round-tripped exactly ------------------------------------
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()).filter(lambda d: d.utcoffset() is not None),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.sampled_from(list(States)),
    st.uuids().map(str),
)
_keys = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.tuples(st.integers(), st.text(max_size=4)))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.frozensets(st.integers(), max_size=4),
        st.sets(st.text(max_size=4), max_size=4),
        st.dictionaries(_keys, inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def _messages(draw: Any) -> tuple[str, Any]:
    kind = draw(st.sampled_from([*KINDS[1:], "SOMETHING_NEW"]))
    code = KINDS.index(kind) if kind in KINDS else 0
    names = list(SCHEMAS.get(code, ())) + ["brand_new", "run_id"]
    record = st.dictionaries(st.sampled_from(names) | st.text(max_size=8), _values, max_size=12)
    body = draw(st.one_of(record, st.lists(record, max_size=3), _values))
    return kind, body


@settings(max_examples=300, deadline=None)
@given(_messages())
def test_generated_messages_round_trip_exactly(message: tuple[str, Any]) -> None:
    kind, body = message
    k, back = decode_message(encode_message(kind, body))
    assert k == kind and same(back, body), (body, back)


def test_size_per_message_type_and_speed() -> None:
    msgs = make_stream(2000)
    v1 = [len(encode_message(k.name, b, version=1)) for k, b in msgs]
    v3 = [len(encode_message(k.name, b)) for k, b in msgs]
    avg1, avg3 = sum(v1) / len(v1), sum(v3) / len(v3)
    print(f"payload bytes per message: JSON v1 {avg1:.0f}, msgpack v3 {avg3:.0f}")
    # Parsl's own SQLite holds this stream in ~173 B a message; chronompi adds a 36-byte event row
    assert avg3 + 36 < 173 and avg3 * 5 < avg1


@pytest.mark.mpi
def test_v1_and_v3_stores_export_identically(tmp_path: Path) -> None:
    store = tmp_path / "store"
    mpirun(4, "parsl_encodings.py", str(store), "150", timeout=120)
    import chronompi

    with chronompi.open_store(store) as st:
        sizes = {}
        for ch in ("v1", "v3"):
            n = sum(st.count(ch, s) for s in st.stories(ch))
            b = sum(sum(len(p) for p in st.replay(ch, s)["payload"]) for s in st.stories(ch))
            sizes[ch] = b / n
        assert payload_version(st.replay("v1", "TASK_INFO")["payload"][0]) == 1
        assert payload_version(st.replay("v3", "TASK_INFO")["payload"][0]) == 3
    print(f"payload bytes per message in the store: {sizes}")
    assert sizes["v3"] * 5 < sizes["v1"]
    dbs = {}
    for ch in ("v1", "v3", "mixed"):
        dbs[ch] = tmp_path / f"{ch}.db"
        rb = export_parsl(store, dbs[ch], chronicle=ch)
        assert len(rb.rows["task"]) == 150 and not rb.duplicates
    export_parsl(store, tmp_path / "v3.parquet", chronicle="v3", fmt="parquet")
    ref = _tables(dbs["v1"])
    assert ref["status"] and ref["resource"] and ref["node"] and ref["block"]
    assert _tables(dbs["v3"]) == ref
    assert _tables(dbs["mixed"]) == ref
    assert _parquet_tables(tmp_path / "v3.parquet") == ref


def _tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    return sqlite_tables(db, TABLES)


def _parquet_tables(d: Path) -> dict[str, list[tuple[Any, ...]]]:
    pq = pytest.importorskip("pyarrow.parquet")
    out = {}
    for t in TABLES:
        tab = pq.read_table(d / f"{t}.parquet")
        rows = []
        for r in tab.to_pylist():
            rows.append(tuple(_as_sqlite(v) for v in r.values()))
        out[t] = sorted(rows, key=repr)
    return out


def _as_sqlite(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, bool):
        return int(v)
    return v


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chronompi.parsl import ParslMonitoringError, make_extractor

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ParslMonitoringError, match="pip install pyarrow"):
        make_extractor("parquet", tmp_path / "out").open()
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="sqlite, parquet"):
        make_extractor("csv", tmp_path / "x")
