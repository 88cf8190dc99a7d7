"""Validation of chronicle and story names.

Names become HDF5 group names and parts of file names, so they are held to a
small safe alphabet: nothing in a valid name can be a path separator, a parent
reference or a character HDF5 treats specially.
"""

from __future__ import annotations

import re

from .errors import InvalidName

MAX_NAME_LEN = 64
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def check_name(name: object, kind: str = "story") -> str:
    """Return ``name`` if it is a valid chronicle or story name, else raise InvalidName."""
    if not isinstance(name, str):
        raise InvalidName(kind, name, f"must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidName(kind, name, "must not be empty")
    if len(name) > MAX_NAME_LEN:
        raise InvalidName(kind, name, f"is {len(name)} characters long, the limit is {MAX_NAME_LEN}")
    if "/" in name or "\\" in name:
        raise InvalidName(kind, name, "contains a path separator")
    if ".." in name:
        raise InvalidName(kind, name, "contains '..'")
    if not _NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "_.-"))})
        why = f"contains {''.join(bad)!r}" if bad else "must not start with '.' or '-'"
        raise InvalidName(kind, name, why)
    return name
