"""The pickle-free payload encodings of Parsl monitoring messages (documented in docs/parsl.md).

Version 3 (the default, msgpack) is :mod:`chronompi.parsl.packed`; its payloads start
with the byte 0x03. Version 2 (a hand-written binary layout, written until December
2026) is read by :mod:`chronompi.parsl.packed_v2`. :func:`decode_message` reads all three.

Version 1: one event = one message = one UTF-8 JSON object::

    {"v": 1, "type": "TASK_INFO", "msg": <the message body, encoded>}

Plain JSON values (str, int, bool, None, finite float, list, dict with str keys
that do not start with ``$``) are written as themselves. Everything else
becomes a one-key tagged object:

=========================== ========================================================
Python value                 encoded as
=========================== ========================================================
``datetime.datetime``        ``{"$datetime": "2026-11-25T07:41:02.123456"}`` (ISO 8601; an aware value keeps its offset)
``datetime.date``            ``{"$date": "2026-11-25"}``
``datetime.time``            ``{"$time": "07:41:02.123456"}``
``datetime.timedelta``       ``{"$timedelta": [days, seconds, microseconds]}``
``float`` nan / inf / -inf   ``{"$float": "nan"}`` / ``"inf"`` / ``"-inf"``
``bytes`` / ``bytearray``    ``{"$bytes": "<base64>"}``
``enum.Enum`` member         ``{"$enum": ["module:Qualname", "NAME", <encoded value>]}``
``tuple``                    ``{"$tuple": [...]}``
``set`` / ``frozenset``      ``{"$set": [...]}`` (sorted when sortable, so encoding is deterministic)
``dict`` with a non-str key  ``{"$dict": [[key, value], ...]}``
  or a key starting ``$``
anything else                ``{"$repr": ["module:Qualname", "repr(value)"]}`` -- lossy, decodes to that string
=========================== ========================================================

Decoding never imports or calls anything except for ``$enum``, which looks the
class up among already-imported modules only (``sys.modules``); when it is not
there the member decodes to its name (a ``str``). Nothing is ever unpickled.
"""

from __future__ import annotations

import base64
import datetime as _dt
import enum
import json
import math
from typing import Any

from . import packed, packed_v2
from .packed import EncodingError, enum_member, hashable, qualname, sorted_items

VERSION = 1  # the JSON encoding below
LATEST = packed.VERSION  # what encode_message writes by default


def encode_value(x: Any) -> Any:
    """A JSON-ready form of ``x`` (see the module docstring for the tags)."""
    t = type(x)
    if x is None or t is str or t is bool or t is int:
        return x
    if t is float:
        if math.isfinite(x):
            return x
        return {"$float": "nan" if x != x else ("inf" if x > 0 else "-inf")}
    if t is dict:
        if all(type(k) is str and not k.startswith("$") for k in x):
            return {k: encode_value(v) for k, v in x.items()}
        return {"$dict": [[encode_value(k), encode_value(v)] for k, v in x.items()]}
    if t is list:
        return [encode_value(v) for v in x]
    if isinstance(x, enum.Enum):
        return {"$enum": [qualname(t), x.name, encode_value(x.value)]}
    if isinstance(x, _dt.datetime):
        return {"$datetime": x.isoformat()}
    if isinstance(x, _dt.date):
        return {"$date": x.isoformat()}
    if isinstance(x, _dt.time):
        return {"$time": x.isoformat()}
    if isinstance(x, _dt.timedelta):
        return {"$timedelta": [x.days, x.seconds, x.microseconds]}
    if isinstance(x, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(x)).decode("ascii")}
    if isinstance(x, tuple):
        return {"$tuple": [encode_value(v) for v in x]}
    if isinstance(x, (set, frozenset)):
        return {"$set": [encode_value(v) for v in sorted_items(x)]}
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):  # int subclasses (numpy ints register as numbers.Integral only, handled below)
        return int(x)
    if isinstance(x, float):
        return encode_value(float(x))
    if isinstance(x, str):
        return str(x)
    if isinstance(x, dict):
        return encode_value(dict(x))
    if isinstance(x, list):
        return encode_value(list(x))
    item = getattr(x, "item", None)  # numpy scalars
    if callable(item) and type(x).__module__ == "numpy":
        try:
            return encode_value(item())
        except Exception:  # noqa: BLE001 - fall through to $repr
            pass
    return {"$repr": [qualname(t), repr(x)]}


def decode_value(x: Any) -> Any:
    """The inverse of :func:`encode_value` (``$repr`` values come back as their repr string)."""
    if type(x) is list:
        return [decode_value(v) for v in x]
    if type(x) is not dict:
        return x
    if len(x) == 1:
        ((k, v),) = x.items()
        if k.startswith("$"):
            return _decode_tag(k, v)
    return {k: decode_value(v) for k, v in x.items()}


def _decode_tag(tag: str, v: Any) -> Any:
    try:
        if tag == "$datetime":
            return _dt.datetime.fromisoformat(v)
        if tag == "$date":
            return _dt.date.fromisoformat(v)
        if tag == "$time":
            return _dt.time.fromisoformat(v)
        if tag == "$timedelta":
            return _dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2])
        if tag == "$float":
            return float(v)
        if tag == "$bytes":
            return base64.b64decode(v)
        if tag == "$tuple":
            return tuple(decode_value(i) for i in v)
        if tag == "$set":
            return {decode_value(i) for i in v}
        if tag == "$dict":
            return {hashable(decode_value(k)): decode_value(val) for k, val in v}
        if tag == "$enum":
            return enum_member(v[0], v[1])
        if tag == "$repr":
            return v[1]
    except (TypeError, ValueError, IndexError) as exc:
        raise EncodingError(f"bad {tag} value {v!r}: {exc}") from None
    raise EncodingError(f"unknown tag {tag!r} (written by a newer chronompi?)")


def encode_message(kind: str, body: Any, version: int = LATEST) -> bytes:
    """One monitoring message (type name, body) as an event payload: version 3 (msgpack) or 1 (JSON)."""
    if version == packed.VERSION:
        return packed.encode(kind, body)
    if version != 1:
        raise ValueError(f"encoding version {version!r}: give 3 (msgpack, the default) or 1 (JSON)")
    return json.dumps(
        {"v": VERSION, "type": kind, "msg": encode_value(body)}, separators=(",", ":"), allow_nan=False
    ).encode()


def payload_version(payload: bytes | str) -> int:
    """The encoding version of a payload: its first byte for binary versions (2, 3...), 1 for JSON."""
    if isinstance(payload, (bytes, bytearray, memoryview)) and len(payload) and payload[0] < 0x20:
        return int(payload[0])
    return 1


def decode_message(payload: bytes | str) -> tuple[str, Any]:
    """(type name, body) of an event payload written by :func:`encode_message` (any version)."""
    v = payload_version(payload)
    if v == packed.VERSION:
        return packed.decode(payload)  # type: ignore[arg-type]  # bytes-like, by payload_version
    if v == packed_v2.VERSION:
        return packed_v2.decode(payload)  # type: ignore[arg-type]
    if v != 1:
        raise EncodingError(f"payload version {v} is newer than this chronompi reads ({LATEST})")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EncodingError(f"payload is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "type" not in doc or "msg" not in doc:
        raise EncodingError(f"payload is not a chronompi Parsl message: {str(payload)[:80]!r}")
    if doc.get("v", 0) > VERSION:
        raise EncodingError(f"payload version {doc.get('v')} is newer than this chronompi reads ({LATEST})")
    return str(doc["type"]), decode_value(doc["msg"])
