"""Encoding version 2 of Parsl monitoring messages, read-only: stores written before version 3 still export.

chronompi wrote version 2 (a hand-written binary layout) until December 2026; version 3
(:mod:`chronompi.parsl.packed`, msgpack) replaced it. This module only decodes it. The layout:

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
import struct
import uuid
import zlib
from typing import Any

from .packed import KINDS, SCHEMAS, EncodingError, enum_member, hashable

VERSION = 2

#: Interned strings (type 0x93): Parsl's task states, job states and executor labels, common values.
STRINGS = tuple(
    "pending launched running running_ended exec_done failed dep_fail memo_done fail_retryable joining unsched "
    "retries_exhausted None htex threads _parsl_internal sleeping disk-sleep stopped zombie idle "
    "UNKNOWN PENDING RUNNING CANCELLED COMPLETED FAILED TIMEOUT HELD MISSING SCALED_IN "
    "parsl.dataflow.states:States parsl.jobs.states:JobState []".split()
)

T_INT, T_FLOAT, T_FLOATINT, T_STR, T_BYTES, T_LIST, T_TUPLE, T_SET, T_DICT = range(0x83, 0x8C)
T_DT, T_DT_AWARE, T_DT_DELTA, T_DATE, T_TIME, T_TIMEDELTA, T_ENUM, T_ISTR, T_UUID, T_REPR, T_RECORD = range(0x8C, 0x97)
T_ZBODY = 0x97
T_NONE, T_FALSE, T_TRUE = 0x80, 0x81, 0x82
_FIXSTR = 0xA0
_EPOCH = _dt.datetime(1970, 1, 1)
_EPOCH_UTC = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_EPOCH_DAY = _EPOCH.date().toordinal()
_F64 = struct.Struct("<d")


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
            return enum_member(cls_name, name)
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
