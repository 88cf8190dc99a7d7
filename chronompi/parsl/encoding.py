"""The pickle-free payload encoding of Parsl monitoring messages (documented in docs/parsl.md).

One event = one message = one UTF-8 JSON object::

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
import sys
from typing import Any

from ..errors import ChronoError

VERSION = 1


class EncodingError(ChronoError, ValueError):
    """A payload is not a chronompi-encoded Parsl monitoring message."""


def _qualname(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


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
        return {"$enum": [_qualname(t), x.name, encode_value(x.value)]}
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
        items = list(x)
        try:
            items.sort()
        except TypeError:
            pass
        return {"$set": [encode_value(v) for v in items]}
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
    return {"$repr": [_qualname(t), repr(x)]}


def _find_enum(name: str) -> type[enum.Enum] | None:
    module, _, qual = name.partition(":")
    obj: Any = sys.modules.get(module)
    for part in qual.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return obj
    return None


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
            return {_hashable(decode_value(k)): decode_value(val) for k, val in v}
        if tag == "$enum":
            cls = _find_enum(v[0])
            if cls is not None:
                try:
                    return cls[v[1]]
                except KeyError:
                    pass
            return v[1]
        if tag == "$repr":
            return v[1]
    except (TypeError, ValueError, IndexError) as exc:
        raise EncodingError(f"bad {tag} value {v!r}: {exc}") from None
    raise EncodingError(f"unknown tag {tag!r} (written by a newer chronompi?)")


def _hashable(k: Any) -> Any:
    if isinstance(k, list):
        return tuple(_hashable(i) for i in k)
    if isinstance(k, set):
        return frozenset(k)
    return k


def encode_message(kind: str, body: Any) -> bytes:
    """One monitoring message (type name, body) as an event payload."""
    return json.dumps(
        {"v": VERSION, "type": kind, "msg": encode_value(body)}, separators=(",", ":"), allow_nan=False
    ).encode()


def decode_message(payload: bytes | str) -> tuple[str, Any]:
    """(type name, body) of an event payload written by :func:`encode_message`."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EncodingError(f"payload is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "type" not in doc or "msg" not in doc:
        raise EncodingError(f"payload is not a chronompi Parsl message: {str(payload)[:80]!r}")
    if doc.get("v", 0) > VERSION:
        raise EncodingError(f"payload version {doc.get('v')} is newer than this chronompi reads ({VERSION})")
    return str(doc["type"]), decode_value(doc["msg"])
