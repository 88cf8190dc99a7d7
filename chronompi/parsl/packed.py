"""Encoding version 3 of Parsl monitoring messages: MessagePack (the ``msgpack`` C library), pickle-free.

A payload is the version byte ``0x03`` and one msgpack array ``[kind, form, body]``:

* ``kind``: the message type, as its index in ``KINDS`` (an int) or, for a type not listed there, its name
  (a str);
* ``form``: 0, the body as it is; 1, the body is a *record* of the kind's schema; 2, a list of records;
* a *record* is an array ``[bitmap, values..., extra?]``: bit i of ``bitmap`` (least significant first) says
  that field i of ``SCHEMAS[kind]`` is present; the present fields' values follow in schema order, names
  omitted; keys the schema does not list follow as one map (so fields a newer Parsl adds round-trip; key
  order is not kept).

A payload of 512 bytes or more that zlib shrinks by a quarter or more (NODE_INFO with a worker's
``packages``) is stored as ``0x03 0xc1`` (a byte msgpack never uses), the length of the msgpack bytes (4
bytes, big-endian) and their zlib stream (RFC 1950).

What msgpack has no type for is an extension type (``ExtType(code, data)``); ints, floats (64-bit), str,
bytes, None, bool, lists and maps (any key type) are msgpack's own:

====== ===================== ==========================================================================
code   Python value          data
====== ===================== ==========================================================================
1      naive datetime        int64 big-endian: microseconds since 1970-01-01 00:00 (no zone applied); the
                             message's *base*
2      naive datetime        signed big-endian int of 2, 4 or 8 bytes: microseconds after the base (the
                             latest code-1 datetime before it in the payload)
3      aware datetime        two int64: microseconds since the epoch (UTC), the UTC offset in microseconds
4      date                  int32: days since 1970-01-01
5      time                  its ISO 8601 text
6      timedelta             msgpack ``[days, seconds, microseconds]``
7      tuple                 msgpack array of its items
8      set                   msgpack array of its items (sorted when sortable)
9      frozenset             as 8
10     enum member           msgpack ``["module:Qualname", name, value]``; decodes to the member when the
                             class is among the imported modules (``sys.modules``), else to its name
11     canonical UUID str    its 16 bytes (a record's ``run_id`` when it is a lower-case UUID)
12     int past 64 bits      signed big-endian two's complement
13     anything else         msgpack ``["module:Qualname", repr]``; lossy: decodes to the repr string
====== ===================== ==========================================================================

Subclasses of the plain types (``OrderedDict``, numpy scalars, str enums...) go through the table: numpy
scalars become the Python number, other subclasses their base type. Decoding never unpickles, imports or
calls user code. ``SCHEMAS`` are part of the format (version 2 used the same): only ever appended to.
"""

from __future__ import annotations

import datetime as _dt
import enum
import struct
import sys
import threading
import uuid
import zlib
from typing import Any

from ..errors import ChronoError

try:
    import msgpack
except ImportError:  # the JSON version (1) and the export of JSON stores need no msgpack
    msgpack = None


class EncodingError(ChronoError, ValueError):
    """A payload is not a chronompi-encoded Parsl monitoring message."""


VERSION = 3
KINDS = ("", "WORKFLOW_INFO", "TASK_INFO", "WORKER_TASK_INFO", "RESOURCE_INFO", "NODE_INFO", "BLOCK_INFO", "MALFORMED")
KIND_CODE = {k: i for i, k in enumerate(KINDS) if k}

_TASK = (
    "task_func_name task_memoize task_hashsum task_fail_count task_fail_cost task_status task_id task_time_invoked "
    "task_try_time_launched task_time_returned task_try_time_returned task_executor run_id try_id timestamp "
    "task_status_name tasks_failed_count tasks_completed_count tasks_memo_completed_count from_memo task_inputs "
    "task_outputs task_stdin task_stdout task_stderr task_fail_history task_depends task_joins"
)
_RESOURCE = (
    "run_id task_id try_id timestamp resource_monitoring_interval hostname psutil_process_pid "
    "psutil_process_memory_percent psutil_process_num_threads psutil_process_status psutil_cpu_count psutil_cpu_num "
    "psutil_process_num_ctx_switches_voluntary psutil_process_num_ctx_switches_involuntary "
    "psutil_process_memory_virtual psutil_process_memory_resident psutil_process_time_user psutil_process_time_system "
    "psutil_process_children_count psutil_process_disk_write psutil_process_disk_read psutil_process_create_time "
    "psutil_process_cwd psutil_process_exe psutil_process_nice psutil_process_name psutil_process_ppid "
    "psutil_process_username psutil_process_cpu_num first_msg last_msg block_id"
)
#: Field names per record schema (index = the code in KINDS), in bitmap order.
SCHEMAS: dict[int, tuple[str, ...]] = {
    1: tuple(
        "run_id time_began time_completed workflow_name workflow_version rundir tasks_completed_count "
        "tasks_failed_count user host python_version parsl_version".split()
    ),
    2: tuple(_TASK.split()),
    3: tuple("run_id task_id try_id timestamp hostname block_id first_msg last_msg".split()),
    4: tuple(_RESOURCE.split()),
    5: tuple(
        "run_id timestamp block_id start_time tasks worker_count max_capacity active draining drain_time hostname "
        "last_heartbeat idle_since parsl_version python_version python_v uid cpu_count total_memory packages type "
        "parsl_v prefetch_capacity os dir".split()
    ),
    6: tuple("run_id timestamp executor_label block_id job_id status".split()),
}
_INDEX = {k: {f: i for i, f in enumerate(v)} for k, v in SCHEMAS.items()}
FORM_PLAIN, FORM_RECORD, FORM_RECORDS = 0, 1, 2
(X_DT, X_DT_DELTA, X_DT_AWARE, X_DATE, X_TIME, X_TIMEDELTA, X_TUPLE, X_SET, X_FROZENSET, X_ENUM, X_UUID) = range(1, 12)
X_BIGINT, X_REPR = 12, 13
ZIPPED = 0xC1
_HEAD, _HEAD_ZIPPED = bytes([VERSION]), bytes([VERSION, ZIPPED])
_ZMIN = 512  # payloads of this many bytes or more are tried with zlib
_LEN = struct.Struct(">I")
_Q, _QQ, _I, _H = struct.Struct(">q"), struct.Struct(">qq"), struct.Struct(">i"), struct.Struct(">h")
_EPOCH = _dt.datetime(1970, 1, 1)
_EPOCH_UTC = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_EPOCH_DAY = _EPOCH.date().toordinal()
_US = _dt.timedelta(microseconds=1)
#: the exact types msgpack packs itself (an int only within 64 bits)
_NATIVE = frozenset({type(None), bool, int, float, str, bytes, bytearray, dict, list})
_CACHE_MAX = 512  # record plans, field lists and run ids kept (a workflow's messages come in a few dozen shapes)


def qualname(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


def find_enum(name: str) -> type[enum.Enum] | None:
    """The enum class ``"module:Qualname"`` if its module is imported already (nothing is imported here)."""
    module, _, qual = name.partition(":")
    obj: Any = sys.modules.get(module)
    for part in qual.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return obj
    return None


def enum_member(cls_name: Any, name: Any) -> Any:
    """The member ``name`` of the enum class ``cls_name`` when that class is imported, else the name itself."""
    cls = find_enum(cls_name) if type(cls_name) is str else None
    if cls is not None:
        try:
            return cls[name]
        except KeyError:
            pass
    return name


def sorted_items(x: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's items, sorted when they sort (so its encoding is deterministic), else in iteration order."""
    items = list(x)
    try:
        items.sort()
    except TypeError:
        pass
    return items


def hashable(k: Any) -> Any:
    """A decoded dict key as a key: lists as tuples, sets as frozensets (version 1 and 2 decode them so)."""
    if isinstance(k, list):
        return tuple(hashable(i) for i in k)
    if isinstance(k, set):
        return frozenset(k)
    return k


def _need_msgpack() -> None:
    if msgpack is None:
        raise EncodingError(
            "Parsl monitoring payloads of version 3 need msgpack, which is not installed: "
            "pip install 'chronompi[parsl]' (or pip install msgpack)"
        )


def _ext(code: int, data: bytes) -> Any:
    return tuple.__new__(msgpack.ExtType, (code, data))  # (ExtType's own __new__ checks its fields in Python)


def _micros(d: _dt.timedelta) -> int:
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


class _Packing:
    """One thread's packer, with the datetime base of the message being packed."""

    __slots__ = ("base", "packer")

    def __init__(self) -> None:
        self.base: _dt.datetime | None = None
        self.packer = msgpack.Packer(default=self.default, use_bin_type=True, strict_types=True)

    def nested(self, x: Any) -> bytes:
        return msgpack.packb(x, default=self.default, use_bin_type=True, strict_types=True)

    def default(self, x: Any) -> Any:
        """What msgpack does not pack itself (called from C, once for each such value, in payload order)."""
        t = type(x)
        if t is _dt.datetime and x.tzinfo is None:
            base = self.base
            if base is not None:
                us = _micros(x - base)
                if -(1 << 15) <= us < 1 << 15:
                    return _ext(X_DT_DELTA, _H.pack(us))
                if -(1 << 31) <= us < 1 << 31:
                    return _ext(X_DT_DELTA, _I.pack(us))
                if -(1 << 63) <= us < 1 << 63:
                    return _ext(X_DT_DELTA, _Q.pack(us))
            self.base = x
            return _ext(X_DT, _Q.pack(_micros(x - _EPOCH)))
        if t is tuple:
            return _ext(X_TUPLE, self.nested(list(x)))
        if isinstance(x, enum.Enum):
            return _ext(X_ENUM, self.nested([qualname(t), x.name, x.value]))
        if isinstance(x, _dt.datetime):
            off = x.utcoffset()
            if off is None:  # a subclass (pandas' Timestamp) or a zone that gives no offset: as a plain one
                naive = _dt.datetime(x.year, x.month, x.day, x.hour, x.minute, x.second, x.microsecond, fold=x.fold)
                return self.default(naive)
            return _ext(X_DT_AWARE, _QQ.pack(_micros(x - _EPOCH_UTC), _micros(off)))
        if isinstance(x, _dt.date):
            return _ext(X_DATE, _I.pack(x.toordinal() - _EPOCH_DAY))
        if isinstance(x, _dt.time):
            return _ext(X_TIME, x.isoformat().encode())
        if isinstance(x, _dt.timedelta):
            return _ext(X_TIMEDELTA, self.nested([x.days, x.seconds, x.microseconds]))
        if isinstance(x, (set, frozenset)):
            return _ext(X_FROZENSET if isinstance(x, frozenset) else X_SET, self.nested(sorted_items(x)))
        if t is int:  # past 64 bits
            return _ext(X_BIGINT, x.to_bytes((x.bit_length() + 8) // 8, "big", signed=True))
        v: Any = x
        plain: Any
        for plain in (int, float, str, bytes, dict, list, tuple):  # subclasses as their base type
            if isinstance(x, plain):
                v = plain(x)
                break
        else:
            if t.__module__ == "numpy" and callable(getattr(x, "item", None)):  # numpy scalars as Python's
                try:
                    v = x.item()
                except Exception:  # noqa: BLE001 - fall through to the repr
                    pass
        if v is not x and type(v) is not t:
            # msgpack asks once per value: what it cannot pack either is turned into what it can here
            return v if type(v) in _NATIVE and (type(v) is not int or -(1 << 63) <= v < 1 << 64) else self.default(v)
        return _ext(X_REPR, self.nested([qualname(t), repr(x)]))


_TLS = threading.local()


def _packing() -> _Packing:
    p: _Packing | None = getattr(_TLS, "packing", None)
    if p is None:
        p = _TLS.packing = _Packing()
    p.base = None
    return p


#: (schema, the message's keys in its order) -> (bitmap, schema fields present in schema order, other keys,
#: the position of ``run_id`` among the values, or 0)
_PLANS: dict[tuple[int, tuple[Any, ...]], tuple[int, tuple[str, ...], tuple[Any, ...], int]] = {}
#: run id str -> its UUID extension (or the str itself when it is not a canonical lower-case UUID)
_RUN_IDS: dict[str, Any] = {}


def _plan(code: int, keys: tuple[Any, ...]) -> tuple[int, tuple[str, ...], tuple[Any, ...], int]:
    index = _INDEX[code]
    known = tuple(sorted((k for k in keys if type(k) is str and k in index), key=index.__getitem__))
    run_id = known.index("run_id") + 1 if "run_id" in known else 0
    plan = (sum(1 << index[k] for k in known), known, tuple(k for k in keys if k not in known), run_id)
    if len(_PLANS) >= _CACHE_MAX:
        _PLANS.clear()
    _PLANS[(code, keys)] = plan
    return plan


def _run_id(s: Any) -> Any:
    if type(s) is not str:
        return s
    v = _RUN_IDS.get(s)
    if v is None:
        v = s
        if len(s) == 36:
            try:
                u = uuid.UUID(s)
            except ValueError:
                pass
            else:
                if str(u) == s:
                    v = _ext(X_UUID, u.bytes)
        if len(_RUN_IDS) >= _CACHE_MAX:
            _RUN_IDS.clear()
        _RUN_IDS[s] = v
    return v


def _record(code: int, body: dict[Any, Any]) -> list[Any]:
    keys = tuple(body)
    plan = _PLANS.get((code, keys)) or _plan(code, keys)
    vals: list[Any] = [plan[0]]
    vals += map(body.__getitem__, plan[1])
    if plan[3]:
        vals[plan[3]] = _run_id(vals[plan[3]])
    if plan[2]:
        vals.append({k: body[k] for k in plan[2]})
    return vals


def encode(kind: str, body: Any) -> bytes:
    """One monitoring message as a version-3 payload."""
    _need_msgpack()
    code = KIND_CODE.get(kind, 0)
    p = _packing()
    if code in SCHEMAS and type(body) is dict:
        raw = p.packer.pack([code, FORM_RECORD, _record(code, body)])
    elif code in SCHEMAS and type(body) is list and body and all(type(m) is dict for m in body):
        raw = p.packer.pack([code, FORM_RECORDS, [_record(code, m) for m in body]])
    else:
        raw = p.packer.pack([code or kind, FORM_PLAIN, body])
    if len(raw) >= _ZMIN:
        z = zlib.compress(raw, 6)
        if len(z) * 4 <= len(raw) * 3:  # only when it saves a quarter
            return _HEAD_ZIPPED + _LEN.pack(len(raw)) + z
    return _HEAD + raw


#: (schema, bitmap) -> the names of the fields present, in schema order
_FIELDS: dict[tuple[int, int], tuple[str, ...]] = {}


def _fields(code: int, bitmap: Any) -> tuple[str, ...]:
    names = SCHEMAS[code]
    if type(bitmap) is not int or bitmap < 0 or bitmap >> len(names):
        raise EncodingError(f"record bitmap {bitmap!r} names fields past the {len(names)} of schema {code}")
    fields = tuple(f for i, f in enumerate(names) if bitmap >> i & 1)
    if len(_FIELDS) >= _CACHE_MAX:
        _FIELDS.clear()
    _FIELDS[(code, bitmap)] = fields
    return fields


def _unrecord(code: int, rec: Any) -> dict[Any, Any]:
    if type(rec) is not list or not rec:
        raise EncodingError(f"a record of schema {code} is not an array: {rec!r:.80}")
    fields = _FIELDS.get((code, rec[0])) or _fields(code, rec[0])
    n = len(fields)
    body = dict(zip(fields, rec[1 : 1 + n], strict=True))
    if len(rec) > n + 1:
        extra = rec[n + 1]
        if len(rec) > n + 2 or type(extra) is not dict:
            raise EncodingError(f"a record of schema {code} has {len(rec) - n - 1} values past its fields")
        body.update(extra)
    return body


class _Unpacking:
    """One payload's decoding: the extension types, with the payload's datetime base."""

    __slots__ = ("base",)

    def __init__(self) -> None:
        self.base: _dt.datetime | None = None

    def unpack(self, data: bytes | memoryview) -> Any:
        return msgpack.unpackb(data, ext_hook=self.ext, raw=False, strict_map_key=False)

    def ext(self, code: int, data: bytes) -> Any:
        if code == X_DT_DELTA:
            if self.base is None:
                raise EncodingError("a relative datetime before any absolute one")
            return self.base + _dt.timedelta(microseconds=int.from_bytes(data, "big", signed=True))
        if code == X_DT:
            self.base = _EPOCH + _dt.timedelta(microseconds=_Q.unpack(data)[0])
            return self.base
        if code == X_UUID:
            return str(uuid.UUID(bytes=data))
        if code == X_TUPLE:
            return tuple(self.unpack(data))
        if code == X_ENUM:
            cls_name, name, _value = self.unpack(data)
            return enum_member(cls_name, name)
        if code == X_DT_AWARE:
            at, off = _QQ.unpack(data)
            return (_EPOCH_UTC + _dt.timedelta(microseconds=at)).astimezone(
                _dt.timezone(_dt.timedelta(microseconds=off))
            )
        if code == X_DATE:
            return _dt.date.fromordinal(_I.unpack(data)[0] + _EPOCH_DAY)
        if code == X_TIME:
            return _dt.time.fromisoformat(data.decode())
        if code == X_TIMEDELTA:
            days, seconds, micros = self.unpack(data)
            return _dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if code == X_SET:
            return {hashable(i) for i in self.unpack(data)}
        if code == X_FROZENSET:
            return frozenset(hashable(i) for i in self.unpack(data))
        if code == X_BIGINT:
            return int.from_bytes(data, "big", signed=True)
        if code == X_REPR:
            return self.unpack(data)[1]
        raise EncodingError(f"unknown extension type {code} (written by a newer chronompi?)")


_DAMAGE = (ValueError, TypeError, IndexError, KeyError, OverflowError, struct.error, zlib.error, RecursionError)


def decode(payload: bytes | memoryview) -> tuple[str, Any]:
    """(type name, body) of a version-3 payload."""
    _need_msgpack()
    try:
        if len(payload) < 2 or payload[0] != VERSION:
            raise EncodingError(f"not a version-{VERSION} payload: {bytes(payload[:16])!r}")
        raw: bytes | memoryview = memoryview(payload)[1:]
        if payload[1] == ZIPPED:
            (n,) = _LEN.unpack_from(payload, 2)
            z = zlib.decompressobj()
            raw = z.decompress(memoryview(payload)[2 + _LEN.size :], n)
            if len(raw) != n or not z.eof or z.unused_data:
                raise EncodingError(f"a compressed payload of {len(raw)} bytes, not {n}, or with stray bytes")
        doc = _Unpacking().unpack(raw)
        if type(doc) is not list or len(doc) != 3:
            raise EncodingError(f"a version-{VERSION} payload holds {doc!r:.80}, not [kind, form, body]")
        code, form, body = doc
        if type(code) is int:
            if not 0 < code < len(KINDS):
                raise EncodingError(f"unknown message type code {code} (written by a newer chronompi?)")
            kind = KINDS[code]
        elif type(code) is str:
            kind = code
        else:
            raise EncodingError(f"message type {code!r} is not a str")
        if form == FORM_PLAIN:
            return kind, body
        if code not in SCHEMAS:
            raise EncodingError(f"a record of message type {kind!r}, which has no schema")
        if form == FORM_RECORD:
            return kind, _unrecord(code, body)
        if form == FORM_RECORDS and type(body) is list:
            return kind, [_unrecord(code, r) for r in body]
        raise EncodingError(f"unknown body form {form!r} (written by a newer chronompi?)")
    except EncodingError:
        raise
    except (*_DAMAGE, msgpack.UnpackException) as exc:
        raise EncodingError(f"damaged version-{VERSION} payload: {type(exc).__name__}: {exc}") from None
