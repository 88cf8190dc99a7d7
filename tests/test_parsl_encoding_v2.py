"""Encoding version 2 of Parsl monitoring messages (chronompi.parsl.packed): round trips, size, safety,
and stores written with version 1 (JSON) still exporting identically (a real session under mpirun)."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import math
import pickle
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

parsl = pytest.importorskip("parsl")

from conftest import mpirun  # noqa: E402
from parsl.dataflow.states import States  # noqa: E402
from parsl.monitoring.message_type import MessageType  # noqa: E402

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
from chronompi.parsl.packed import KINDS, SCHEMAS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
from bench_parsl import make_stream  # noqa: E402

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


@pytest.mark.parametrize("kind", [t.name for t in MessageType] + ["SOMETHING_NEW", "MALFORMED"])
def test_every_message_type_round_trips(kind: str) -> None:
    stream = [body for k, body in make_stream(60) if k.name == kind] or [ODD]
    for body in [*stream, ODD, {**ODD, "brand_new_field": [NOW, 1]}, [ODD], 7, None]:
        payload = encode_message(kind, body)
        assert payload[0] == 2 and payload_version(payload) == 2
        k, back = decode_message(payload)
        assert k == kind
        assert back == _plain(body), kind
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


def test_types_are_kept_exactly() -> None:
    _, back = decode_message(encode_message("TASK_INFO", ODD))
    assert type(back["status"]) is States and back["status"] is States.exec_done
    assert type(back["pair"]) is tuple and back["by_int"][(2, 3)] == "tuple key"
    assert back["aware"].utcoffset() == dt.timedelta(hours=-5, minutes=-30) and back["aware"] == ODD["aware"]
    assert type(back["floats"][3]) is float and math.copysign(1, back["floats"][1]) == -1
    assert back["not_a_uuid"] == ODD["not_a_uuid"]  # upper case: kept as text, not as 16 bytes
    nan = decode_message(encode_message("X", float("nan")))[1]
    assert math.isnan(nan)


def test_records_use_the_schema_and_unknown_keys_round_trip() -> None:
    for code, fields in SCHEMAS.items():
        assert len(set(fields)) == len(fields), KINDS[code]
    body = {"task_id": 3, "run_id": "r", "future_field": {"x": [1, 2]}, "timestamp": NOW}
    payload = encode_message("TASK_INFO", body)
    assert b"task_id" not in payload and b"future_field" in payload
    assert decode_message(payload)[1] == body


def test_large_bodies_are_compressed() -> None:
    node = {"run_id": "r", "timestamp": NOW, "packages": {f"package-{i}": f"1.{i}.0" for i in range(80)}}
    payload = encode_message("NODE_INFO", node)
    assert payload[2] == 0x97 and len(payload) < len(encode_message("NODE_INFO", {**node, "packages": {}})) + 600
    assert decode_message(payload) == ("NODE_INFO", node)
    for cut in range(3, len(payload)):
        with pytest.raises(EncodingError):
            decode_message(payload[:cut])
    small = encode_message("TASK_INFO", {"task_id": 1})
    assert 0x97 not in small[2:3]


def test_never_unpickles_and_rejects_damage() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 7>"

    assert decode_message(encode_message("X", {"x": Thing()}))[1] == {"x": "<Thing 7>"}
    payload = encode_message("TASK_INFO", ODD)
    for cut in range(1, len(payload)):  # every truncation is an EncodingError, never another exception
        with pytest.raises(EncodingError):
            decode_message(payload[:cut])
    for bad in (pickle.dumps({"a": 1}), b"\x02\x02\x9f", b"\x02\x09\x00", b"\x03\x01\x00", payload + b"\x00"):
        with pytest.raises(EncodingError) as ei:
            decode_message(bad)
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


def test_encoding_is_byte_identical_to_the_version_2_reference() -> None:
    """The payloads of a stream and of its odd variants hash as the first version-2 encoder wrote them
    (a field loop, before the per-shape record writers): the format is stable, not only round-tripping."""
    msgs = make_stream(2000)
    stream, variants = hashlib.sha256(), hashlib.sha256()
    for kind, body in msgs:
        stream.update(encode_message(kind.name, body))
    for name, body in _variants(msgs[:3000]):
        variants.update(encode_message(name, body))
    assert stream.hexdigest() == "75f027af585941f8304d2729731164e721988e453f8b91abd5fcabd11c78bc5e"
    assert variants.hexdigest() == "701b08a15a09c8d797439ae80c916cedc83d813aade4265017dafae42035c581"


def test_record_writers_past_the_shape_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """More record shapes than the writer cache keeps: still right (the cache starts over)."""
    monkeypatch.setattr(packed, "_CODERS_MAX", 4)
    monkeypatch.setattr(packed, "_CODERS", {})
    fields = SCHEMAS[KINDS.index("TASK_INFO")]
    for n in range(1, len(fields) + 1):
        body = {f: (NOW if n % 3 else n, "htex", None)[i % 3] for i, f in enumerate(fields[:n])}
        assert decode_message(encode_message("TASK_INFO", body)) == ("TASK_INFO", body)
        assert len(packed._CODERS) <= 4


def test_string_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct strings (paths, ids) keep the cache of string encodings small; long ones are never kept."""
    monkeypatch.setattr(packed, "_STR_CODES_MAX", 8)
    monkeypatch.setattr(packed, "_STR_CODES", {})
    monkeypatch.setattr(packed, "_CODERS", {})  # writers made now look strings up in the dict above
    for i in range(50):
        body = {"task_stdout": f"/scratch/run/{i}.out", "task_inputs": "x" * 65 + str(i), "run_id": "r"}
        assert decode_message(encode_message("TASK_INFO", body)) == ("TASK_INFO", body)
        assert len(packed._STR_CODES) <= 8
        assert all(len(k) <= packed._STR_CACHED_LEN for k in packed._STR_CODES)


def test_size_per_message_type_and_speed() -> None:
    msgs = make_stream(2000)
    v1 = [len(encode_message(k.name, b, version=1)) for k, b in msgs]
    v2 = [len(encode_message(k.name, b)) for k, b in msgs]
    avg1, avg2 = sum(v1) / len(v1), sum(v2) / len(v2)
    print(f"payload bytes per message: JSON v1 {avg1:.0f}, packed v2 {avg2:.0f}")
    # Parsl's own SQLite holds this stream in ~173 B a message; chronompi adds a 36-byte event row
    assert avg2 + 36 < 173 and avg2 * 5 < avg1


@pytest.mark.mpi
def test_v1_and_v2_stores_export_identically(tmp_path: Path) -> None:
    store = tmp_path / "store"
    mpirun(4, "parsl_encodings.py", str(store), "150", timeout=120)
    import chronompi

    with chronompi.open_store(store) as st:
        sizes = {}
        for ch in ("v1", "v2"):
            n = sum(st.count(ch, s) for s in st.stories(ch))
            b = sum(sum(len(p) for p in st.replay(ch, s)["payload"]) for s in st.stories(ch))
            sizes[ch] = b / n
        assert payload_version(st.replay("v1", "TASK_INFO")["payload"][0]) == 1
        assert payload_version(st.replay("v2", "TASK_INFO")["payload"][0]) == 2
    print(f"payload bytes per message in the store: {sizes}")
    assert sizes["v2"] * 5 < sizes["v1"]
    dbs = {}
    for ch in ("v1", "v2", "mixed"):
        dbs[ch] = tmp_path / f"{ch}.db"
        rb = export_parsl(store, dbs[ch], chronicle=ch)
        assert len(rb.rows["task"]) == 150 and not rb.duplicates
    export_parsl(store, tmp_path / "v2.parquet", chronicle="v2", fmt="parquet")
    ref = _tables(dbs["v1"])
    assert ref["status"] and ref["resource"] and ref["node"] and ref["block"]
    assert _tables(dbs["v2"]) == ref
    assert _tables(dbs["mixed"]) == ref
    assert _parquet_tables(tmp_path / "v2.parquet") == ref


def _tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(db)
    try:
        return {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in TABLES}
    finally:
        con.close()


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
