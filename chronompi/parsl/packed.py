"""Encoding version 2 of Parsl monitoring messages: a compact binary layout, pickle-free.

A payload is ``0x02, kind, value``: the version byte (a version-1 JSON payload
starts with ``{``), one byte naming the message type (``KINDS``; 0: the name
follows as a string value) and the body as one *value*. A value is a type byte,
sometimes followed by data (``varint``: unsigned LEB128 of any length;
``zigzag``: a signed integer n as varint of ``2n`` or ``-2n-1``):

====================== ===================================================================
type byte              value
====================== ===================================================================
``0x00``-``0x7f``      the int 0..127 itself
``0xe0``-``0xff``      the int -32..-1 (byte - 256)
``0x80`` / 81 / 82     None / False / True
``0x83``               int: zigzag
``0x84``               float: 8 bytes IEEE 754, little-endian
``0x85``               float with an integral value (not -0.0, below 2**53): zigzag of ``int(x)``
``0x86``               str: varint byte length, UTF-8 (``0xa0``-``0xbf``: length 0..31 in the type byte)
``0x87``               bytes: varint length, bytes
``0x88`` / 89 / 8a     list / tuple / set: varint count, values (sets sorted when sortable)
``0x8b``               dict: varint count, then key value, value value (keys of any type)
``0x8c``               naive datetime: zigzag of microseconds since 1970-01-01 00:00 (no zone applied)
``0x8d``               aware datetime: zigzag of microseconds since the epoch (UTC), zigzag of the UTC offset in
                       microseconds
``0x8e``               naive datetime: zigzag of microseconds after the message's *base*: the first ``0x8c``
                       datetime of the payload, in encoding order
``0x8f``               date: zigzag of days since 1970-01-01
``0x90``               time: its ISO 8601 text as a str value
``0x91``               timedelta: zigzag days, varint seconds, varint microseconds
``0x92``               enum member: class ("module:Qualname") value, member name value, member value value
``0x93``               interned str: varint index into ``STRINGS``
``0x94``               str holding a canonical lower-case UUID: its 16 bytes
``0x95``               anything else: class value, ``repr()`` value (lossy: decodes to the repr string)
``0x96``               record: schema byte (a code of ``KINDS``), bitmap of ``ceil(len(fields) / 8)``
                       bytes (bit i, least significant first: field i is present), the present fields'
                       values in schema order, varint count of other keys, then key value, value value
``0x97``               only as the body: a compressed body (a body of 400 bytes or more that zlib shrinks by
                       a quarter or more, e.g. NODE_INFO's ``packages``): varint length of the encoded body,
                       varint length of the zlib stream (RFC 1950), the stream; decompressed, it is one value
                       (with its own datetime base)
====================== ===================================================================

A body that is a dict with str keys is written as a record of its message
type's schema (``SCHEMAS``); a BLOCK_INFO body is a list of such records.
Keys a schema does not name go after the known fields, so new Parsl fields
round-trip; key order is not kept. ``SCHEMAS`` and ``STRINGS`` are part of
version 2: they are only ever appended to in a new version.
"""

from __future__ import annotations

import datetime as _dt
import enum
import itertools
import math
import struct
import sys
import uuid
import zlib
from typing import Any

from ..errors import ChronoError


class EncodingError(ChronoError, ValueError):
    """A payload is not a chronompi-encoded Parsl monitoring message."""


VERSION = 2
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
#: Interned strings (type 0x93): Parsl's task states, job states and executor labels, common values.
STRINGS = tuple(
    "pending launched running running_ended exec_done failed dep_fail memo_done fail_retryable joining unsched "
    "retries_exhausted None htex threads _parsl_internal sleeping disk-sleep stopped zombie idle "
    "UNKNOWN PENDING RUNNING CANCELLED COMPLETED FAILED TIMEOUT HELD MISSING SCALED_IN "
    "parsl.dataflow.states:States parsl.jobs.states:JobState []".split()
)
_STRING_CODE = {s: i for i, s in enumerate(STRINGS)}

T_INT, T_FLOAT, T_FLOATINT, T_STR, T_BYTES, T_LIST, T_TUPLE, T_SET, T_DICT = range(0x83, 0x8C)
T_DT, T_DT_AWARE, T_DT_DELTA, T_DATE, T_TIME, T_TIMEDELTA, T_ENUM, T_ISTR, T_UUID, T_REPR, T_RECORD = range(0x8C, 0x97)
T_ZBODY = 0x97
_ZMIN = 400  # bodies of this many bytes or more are tried with zlib
T_NONE, T_FALSE, T_TRUE = 0x80, 0x81, 0x82
_FIXSTR = 0xA0
_EPOCH = _dt.datetime(1970, 1, 1)
_EPOCH_UTC = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_EPOCH_DAY = _EPOCH.date().toordinal()
_F64 = struct.Struct("<d")
_US = _dt.timedelta(microseconds=1)


#: 14 low bits -> their two varint bytes, both with the continuation bit (more bytes follow)
_V14 = [bytes(((i & 0x7F) | 0x80, (i >> 7) | 0x80)) for i in range(1 << 14)]


def _varint(n: int, out: bytearray) -> None:
    while n >= 1 << 14:  # two bytes a step (absolute datetimes take 8 bytes)
        out += _V14[n & 0x3FFF]
        n >>= 14
    if n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(n: int, out: bytearray) -> None:
    n = 2 * n if n >= 0 else -2 * n - 1
    if n <= 0x7F:
        out.append(n)
    else:
        _varint(n, out)


def _int(x: int, out: bytearray) -> None:
    """An int as :meth:`_Encoder.value` writes it."""
    if 0 <= x < 0x80:
        out.append(x)
    elif -32 <= x < 0:
        out.append(x + 256)
    else:
        out.append(T_INT)
        _zigzag(x, out)


def _float(x: float, out: bytearray) -> None:
    """A float as :meth:`_Encoder.value` writes it."""
    if x.is_integer() and abs(x) < 2**53 and (x != 0 or math.copysign(1.0, x) > 0):
        out.append(T_FLOATINT)
        _zigzag(int(x), out)
    else:
        out.append(T_FLOAT)
        out += _F64.pack(x)


def _micros(d: _dt.timedelta) -> int:
    return d // _US


def qualname(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


class _Encoder:
    __slots__ = ("out", "base")

    def __init__(self) -> None:
        self.out = bytearray()
        self.base: _dt.datetime | None = None

    def value(self, x: Any) -> None:
        out = self.out
        t = type(x)
        if t is str:
            self.string(x)
        elif t is int:
            _int(x, out)
        elif x is None:
            out.append(T_NONE)
        elif t is bool:
            out.append(T_TRUE if x else T_FALSE)
        elif t is float:
            _float(x, out)
        elif t is _dt.datetime:
            self.datetime(x)
        elif t is list or t is tuple:
            out.append(T_LIST if t is list else T_TUPLE)
            _varint(len(x), out)
            for v in x:
                self.value(v)
        elif t is dict:
            self.mapping(x)
        else:
            self.other(x)

    def string(self, s: str) -> None:
        out = self.out
        code = _STRING_CODE.get(s)
        if code is not None:
            out.append(T_ISTR)
            out.append(code)
            return
        if len(s) == 36 and s[8] == "-" and s[23] == "-":
            try:
                u = uuid.UUID(s)
            except ValueError:
                u = None
            if u is not None and str(u) == s:
                out.append(T_UUID)
                out += u.bytes
                return
        b = s.encode("utf-8", "surrogatepass")
        if len(b) < 32:
            out.append(_FIXSTR + len(b))
        else:
            out.append(T_STR)
            _varint(len(b), out)
        out += b

    def datetime(self, x: _dt.datetime) -> None:
        out = self.out
        if x.tzinfo is None:  # the common case first: naive, after the message's first
            base = self.base
            if base is not None:
                out.append(T_DT_DELTA)
                _zigzag((x - base) // _US, out)
                return
        if x.tzinfo is not None and x.utcoffset() is not None:
            out.append(T_DT_AWARE)
            _zigzag(_micros(x - _EPOCH_UTC), out)
            off = x.utcoffset()
            assert off is not None
            _zigzag(_micros(off), out)
        else:
            if x.tzinfo is not None:  # a tzinfo without an offset: as naive
                x = x.replace(tzinfo=None)
            if self.base is None:
                self.base = x
                out.append(T_DT)
                _zigzag(_micros(x - _EPOCH), out)
            else:
                out.append(T_DT_DELTA)
                _zigzag(_micros(x - self.base), out)

    def mapping(self, x: dict[Any, Any]) -> None:
        self.out.append(T_DICT)
        _varint(len(x), self.out)
        for k, v in x.items():
            self.value(k)
            self.value(v)

    def record(self, x: dict[str, Any], schema: int) -> bool:
        """Write ``x`` as a record of ``schema``; False (nothing written) when a key outside the schema
        is not a str: then ``x`` is written as a plain dict."""
        fields = SCHEMAS[schema]
        vals = list(map(x.get, fields, _MISSING_ALL))
        shape = tuple(map(type, vals))
        coder = _CODERS.get((schema, shape))
        if coder is None:
            coder = _compile(schema, shape)
        known, write = coder
        extra: list[Any] = []
        if known < len(x):
            index = _INDEX[schema]
            extra = [k for k in x if k not in index]
            if any(type(k) is not str for k in extra):
                return False
        write(vals, self, self.out)
        _varint(len(extra), self.out)
        for k in extra:
            self.string(k)
            self.value(x[k])
        return True

    def other(self, x: Any) -> None:  # the rarer types
        out = self.out
        t = type(x)
        if isinstance(x, enum.Enum):
            out.append(T_ENUM)
            self.string(qualname(t))
            self.string(x.name)
            self.value(x.value)
        elif isinstance(x, (bool, int, float, str, list, tuple, dict)):  # subclasses: as the base type
            base: Any = next(b for b in (bool, int, float, str, list, tuple, dict) if isinstance(x, b))
            self.value(base(x))
        elif isinstance(x, _dt.datetime):
            self.datetime(x)
        elif isinstance(x, _dt.date):
            out.append(T_DATE)
            _zigzag(x.toordinal() - _EPOCH_DAY, out)
        elif isinstance(x, _dt.time):
            out.append(T_TIME)
            self.string(x.isoformat())
        elif isinstance(x, _dt.timedelta):
            out.append(T_TIMEDELTA)
            _zigzag(x.days, out)
            _varint(x.seconds, out)
            _varint(x.microseconds, out)
        elif isinstance(x, (bytes, bytearray, memoryview)):
            b = bytes(x)
            out.append(T_BYTES)
            _varint(len(b), out)
            out += b
        elif isinstance(x, (set, frozenset)):
            items = list(x)
            try:
                items.sort()
            except TypeError:
                pass
            out.append(T_SET)
            _varint(len(items), out)
            for v in items:
                self.value(v)
        else:
            item = getattr(x, "item", None)  # numpy scalars
            if callable(item) and t.__module__ == "numpy":
                try:
                    self.value(item())
                    return
                except Exception:  # noqa: BLE001 - fall through to the repr
                    pass
            out.append(T_REPR)
            self.string(qualname(t))
            self.string(repr(x))


class _Missing:
    """A schema field the message does not have (its type marks the field absent in a shape)."""


_MISSING = _Missing()
_MISSING_ALL = itertools.repeat(_MISSING)
#: (schema, the type of each schema field's value) -> (fields present, the writer of that shape)
_CODERS: dict[tuple[int, tuple[type, ...]], tuple[int, Any]] = {}
_CODERS_MAX = 512  # shapes kept; the messages of a workflow come in a few dozen
_STR_CODES: dict[str, bytes] = {}  # str -> its encoding (values repeat: run ids, host names, states)
_STR_CODES_MAX = 4096
_STR_CACHED_LEN = 64  # longer strings are encoded each time (the cache stays under ~2 MB)


def _str_code(s: str) -> bytes:
    code = _STR_CODES.get(s)
    if code is None:
        enc = _Encoder()
        enc.string(s)
        code = bytes(enc.out)
        if len(s) <= _STR_CACHED_LEN:
            if len(_STR_CODES) >= _STR_CODES_MAX:
                _STR_CODES.clear()  # (a stream of distinct values must not crowd out the repeated ones for good)
            _STR_CODES[s] = code
    return code


def _compile(schema: int, shape: tuple[type, ...]) -> tuple[int, Any]:
    """The writer of one record shape: the header (schema, bitmap) and the None fields are constants,
    each other field's value is written as :meth:`_Encoder.value` would, with the commonest types
    inline. The hub's hot path: a TASK_INFO message in about half the time of a loop over the fields."""
    present = [i for i, t in enumerate(shape) if t is not _Missing]
    mask = sum(1 << i for i in present)
    const = bytearray([T_RECORD, schema]) + mask.to_bytes((len(SCHEMAS[schema]) + 7) // 8, "little")
    body: list[str] = []
    for i in present:
        t, v = shape[i], f"vals[{i}]"
        if t is type(None):
            const.append(T_NONE)
            continue
        if const:
            body.append(f"out += {bytes(const)!r}")
            const.clear()
        if t is str:
            body += [f"c = strings({v})", f"if c is None: c = str_code({v})", "out += c"]
        elif t is int:
            body += [f"v = {v}", "if 0 <= v < 0x80: out.append(v)", "else: write_int(v, out)"]
        elif t is float:
            body.append(f"write_float({v}, out)")
        elif t is bool:
            body.append(f"out.append({T_TRUE} if {v} else {T_FALSE})")
        elif t is _dt.datetime:
            body.append(f"enc.datetime({v})")
        else:
            body.append(f"enc.value({v})")
    if const:
        body.append(f"out += {bytes(const)!r}")
    src = "def write(vals, enc, out):\n" + "".join(f"    {line}\n" for line in body)
    scope: dict[str, Any] = {
        "strings": _STR_CODES.get,
        "str_code": _str_code,
        "write_int": _int,
        "write_float": _float,
    }
    exec(compile(src, f"<chronompi.parsl.packed record {schema}>", "exec"), scope)  # noqa: S102 - our own source
    coder = (len(present), scope["write"])
    if len(_CODERS) >= _CODERS_MAX:
        _CODERS.clear()
    _CODERS[(schema, shape)] = coder
    return coder


def _str_keys(d: dict[Any, Any]) -> bool:
    """Every key of ``d`` is a str (exactly: subclasses go through the general path)."""
    return not d or set(map(type, d)) == {str}


def encode(kind: str, body: Any) -> bytes:
    """One monitoring message as a version-2 payload."""
    enc = _Encoder()
    out = enc.out
    out.append(VERSION)
    code = KIND_CODE.get(kind, 0)
    out.append(code)
    if code == 0:
        enc.string(kind)
    start = len(out)
    if code in SCHEMAS and type(body) is dict and enc.record(body, code):
        pass
    elif code == 6 and type(body) is list and all(type(m) is dict and _str_keys(m) for m in body):
        out.append(T_LIST)
        _varint(len(body), out)
        for m in body:
            enc.record(m, code)
    else:
        enc.value(body)
    n = len(out) - start
    if n >= _ZMIN:
        z = zlib.compress(out[start:], 6)
        if len(z) * 4 <= n * 3:  # only when it saves a quarter
            del out[start:]
            out.append(T_ZBODY)
            _varint(n, out)
            _varint(len(z), out)
            out += z
    return bytes(out)


def find_enum(name: str) -> type[enum.Enum] | None:
    module, _, qual = name.partition(":")
    obj: Any = sys.modules.get(module)
    for part in qual.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return obj
    return None


def hashable(k: Any) -> Any:
    if isinstance(k, list):
        return tuple(hashable(i) for i in k)
    if isinstance(k, set):
        return frozenset(k)
    return k


class _Decoder:
    __slots__ = ("buf", "pos", "base", "body_at")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.base: _dt.datetime | None = None
        self.body_at = -1  # where a compressed body may start

    def varint(self) -> int:
        buf, pos = self.buf, self.pos
        b = buf[pos]
        if b < 0x80:  # the common case: one byte
            self.pos = pos + 1
            return b
        n = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return n
            shift += 7

    def zigzag(self) -> int:
        z = self.varint()
        return z >> 1 if not z & 1 else -((z + 1) >> 1)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise IndexError("payload ends inside a value")
        b = self.buf[self.pos : end]
        self.pos = end
        return b

    def value(self) -> Any:
        t = self.buf[self.pos]
        self.pos += 1
        if t < 0x80:
            return t
        if t >= 0xE0:
            return t - 256
        if t >= _FIXSTR:
            if t >= _FIXSTR + 32:
                raise EncodingError(f"unknown type byte 0x{t:02x} at {self.pos - 1}")
            return self.take(t - _FIXSTR).decode("utf-8", "surrogatepass")
        if t == T_ISTR:
            return STRINGS[self.varint()]
        if t == T_RECORD:
            return self.record()
        if t == T_NONE:
            return None
        if t == T_FALSE or t == T_TRUE:
            return t == T_TRUE
        if t == T_INT:
            return self.zigzag()
        if t == T_FLOATINT:
            return float(self.zigzag())
        if t == T_FLOAT:
            return _F64.unpack(self.take(8))[0]
        if t == T_STR:
            return self.take(self.varint()).decode("utf-8", "surrogatepass")
        if t == T_DT:
            self.base = _EPOCH + _dt.timedelta(microseconds=self.zigzag())
            return self.base
        if t == T_DT_DELTA:
            if self.base is None:
                raise EncodingError("a relative datetime before any absolute one")
            return self.base + _dt.timedelta(microseconds=self.zigzag())
        if t == T_UUID:
            return str(uuid.UUID(bytes=self.take(16)))
        if t == T_LIST or t == T_TUPLE or t == T_SET:
            items = [self.value() for _ in range(self.varint())]
            return items if t == T_LIST else tuple(items) if t == T_TUPLE else {hashable(i) for i in items}
        if t == T_DICT:
            n = self.varint()
            return {hashable(self.value()): self.value() for _ in range(n)}
        return self.rare(t)

    def rare(self, t: int) -> Any:
        if t == T_DT_AWARE:
            at = _dt.timedelta(microseconds=self.zigzag())
            tz = _dt.timezone(_dt.timedelta(microseconds=self.zigzag()))
            return (_EPOCH_UTC + at).astimezone(tz)
        if t == T_DATE:
            return _dt.date.fromordinal(self.zigzag() + _EPOCH_DAY)
        if t == T_TIME:
            return _dt.time.fromisoformat(self.value())
        if t == T_TIMEDELTA:
            return _dt.timedelta(days=self.zigzag(), seconds=self.varint(), microseconds=self.varint())
        if t == T_BYTES:
            return self.take(self.varint())
        if t == T_ENUM:
            cls_name, name = self.value(), self.value()
            self.value()  # the member value: the name is what identifies it
            cls = find_enum(cls_name)
            if cls is not None:
                try:
                    return cls[name]
                except KeyError:
                    pass
            return name
        if t == T_REPR:
            self.value()
            return self.value()
        if t == T_ZBODY and self.pos == self.body_at + 1:
            n = self.varint()
            raw = zlib.decompressobj().decompress(self.take(self.varint()), n)
            if len(raw) != n:
                raise EncodingError(f"a compressed body of {len(raw)} bytes, not {n}")
            inner = _Decoder(raw)
            body = inner.value()
            if inner.pos != n:
                raise EncodingError(f"{n - inner.pos} stray bytes in a compressed body")
            return body
        raise EncodingError(f"unknown type byte 0x{t:02x} at {self.pos - 1} (written by a newer chronompi?)")

    def record(self) -> dict[str, Any]:
        schema = self.buf[self.pos]
        self.pos += 1
        fields = SCHEMAS.get(schema)
        if fields is None:
            raise EncodingError(f"unknown record schema {schema}")
        bits = int.from_bytes(self.take((len(fields) + 7) // 8), "little")
        if bits >> len(fields):
            raise EncodingError(f"record bitmap names fields past the {len(fields)} of schema {schema}")
        out: dict[str, Any] = {}
        value = self.value
        while bits:  # the set bits, lowest (first field) first
            low = bits & -bits
            out[fields[low.bit_length() - 1]] = value()
            bits ^= low
        for _ in range(self.varint()):
            k = self.value()
            if type(k) is not str:
                raise EncodingError(f"record key {k!r} is not a str")
            out[k] = self.value()
        return out


def decode(payload: bytes) -> tuple[str, Any]:
    """(type name, body) of a version-2 payload."""
    dec = _Decoder(bytes(payload))
    try:
        if len(payload) < 3 or payload[0] != VERSION:
            raise EncodingError(f"not a version-{VERSION} payload: {bytes(payload[:16])!r}")
        code = payload[1]
        dec.pos = 2
        if code == 0:
            kind = dec.value()
            if type(kind) is not str:
                raise EncodingError(f"message type {kind!r} is not a str")
        elif code < len(KINDS):
            kind = KINDS[code]
        else:
            raise EncodingError(f"unknown message type code {code} (written by a newer chronompi?)")
        dec.body_at = dec.pos
        body = dec.value()
    except EncodingError:
        raise
    except (IndexError, ValueError, TypeError, OverflowError, struct.error) as exc:
        raise EncodingError(f"damaged version-{VERSION} payload at byte {dec.pos}: {exc}") from None
    if dec.pos != len(payload):
        raise EncodingError(f"{len(payload) - dec.pos} stray bytes after a version-{VERSION} payload")
    return kind, body
