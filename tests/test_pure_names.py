"""Chronicle and story name validation (chronompi.names.check_name)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronompi.errors import ChronoError, InvalidName
from chronompi.names import MAX_NAME_LEN, check_name


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "Z",
        "0",
        "_",
        "story",
        "chron0",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "a.b",
        "a-b",
        "a_b",
        "x.",
        "x-",
        "_hidden",
        "0.5",
        "v1.2-rc_3",
        "a" * MAX_NAME_LEN,
    ],
)
def test_accepts(name: str) -> None:
    assert check_name(name) is name
    assert check_name(name, "chronicle") is name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "a/b",
        "a\\b",
        "..",
        ".",
        ".hidden",
        "-x",
        "x" * (MAX_NAME_LEN + 1),
        "has space",
        "tab\t",
        "é",
        "a..b",
        "x/",
        "/x",
        "nl\n",
        "nul\x00",
        "colon:",
        "star*",
        "ａ",
        "٣",
    ],
)
def test_rejects_with_the_value_in_the_message(name: str) -> None:
    with pytest.raises(InvalidName) as ei:
        check_name(name)
    err = ei.value
    assert repr(name) in str(err)
    assert err.name == name
    assert err.kind == "story"
    assert str(err).startswith("invalid story name")


@pytest.mark.parametrize("value", [123, None, b"x", ["a"], 1.5])
def test_rejects_non_str(value: object) -> None:
    with pytest.raises(InvalidName) as ei:
        check_name(value, "chronicle")
    assert repr(value) in str(ei.value)
    assert type(value).__name__ in str(ei.value)
    assert str(ei.value).startswith("invalid chronicle name")


def test_invalid_name_is_a_value_error_and_a_chrono_error() -> None:
    with pytest.raises(ValueError):
        check_name("a/b")
    with pytest.raises(ChronoError):
        check_name("a/b")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("x" * 65, "65 characters"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("../x", "path separator"),
        ("has space", "' '"),
        ("é", "'é'"),
        (".hidden", "start with"),
        ("-x", "start with"),
    ],
)
def test_reason_is_given(name: str, why: str) -> None:
    with pytest.raises(InvalidName) as ei:
        check_name(name)
    assert why in ei.value.why


def _safe_component(n: str) -> None:
    assert "/" not in n and "\\" not in n
    assert ".." not in n
    assert n not in (".", "..")
    assert os.path.basename(n) == n
    assert not n.startswith(("-", "."))
    assert 1 <= len(n) <= MAX_NAME_LEN
    assert n.isascii() and n.isprintable() and not any(c.isspace() for c in n)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=70), st.text(alphabet="ab./\\-_ \t.é", max_size=8)))
def test_any_accepted_name_is_a_safe_path_component(name: str) -> None:
    try:
        out = check_name(name)
    except InvalidName as exc:
        assert repr(name) in str(exc)
        return
    assert out == name
    _safe_component(name)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}", fullmatch=True))
def test_names_from_the_documented_alphabet(name: str) -> None:
    if ".." in name:
        with pytest.raises(InvalidName):
            check_name(name)
    else:
        assert check_name(name) == name
        _safe_component(name)
