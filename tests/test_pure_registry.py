"""The visor's registry of chronicles and stories (chronompi.visor.Registry): pure bookkeeping."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronompi.errors import (
    ChronicleExists,
    ChronicleInUse,
    ChronoError,
    InvalidName,
    StoryNotAcquired,
    UnknownChronicle,
)
from chronompi.visor import Registry, error_reply


@pytest.fixture
def reg() -> Registry:
    return Registry()


# -- chronicles -----------------------------------------------------------------------------------


def test_create_and_show(reg: Registry) -> None:
    assert reg.show_chronicles() == []
    reg.create_chronicle("b", None)
    reg.create_chronicle("a", {"owner": "me"})
    assert reg.show_chronicles() == ["a", "b"]
    assert reg.show_stories("a") == []
    assert reg.chronicles["a"].attrs == {"owner": "me"}
    assert reg.chronicles["b"].attrs == {}


def test_attrs_are_copied(reg: Registry) -> None:
    attrs = {"k": 1}
    reg.create_chronicle("c", attrs)
    attrs["k"] = 2
    assert reg.chronicles["c"].attrs == {"k": 1}


def test_create_twice_raises_chronicle_exists(reg: Registry) -> None:
    reg.create_chronicle("c", None)
    with pytest.raises(ChronicleExists, match="'c'"):
        reg.create_chronicle("c", {"x": 1})
    assert reg.show_chronicles() == ["c"]


def test_unknown_chronicle(reg: Registry) -> None:
    for call in (
        lambda: reg.destroy_chronicle("nope"),
        lambda: reg.show_stories("nope"),
        lambda: reg.acquire("nope", "s", 1),
        lambda: reg.release("nope", "s", 1),
    ):
        with pytest.raises(UnknownChronicle) as ei:
            call()
        assert "'nope'" in str(ei.value)
        assert ei.value.name == "nope"


def test_invalid_names_are_refused(reg: Registry) -> None:
    with pytest.raises(InvalidName):
        reg.create_chronicle("../etc", None)
    reg.create_chronicle("c", None)
    with pytest.raises(InvalidName):
        reg.acquire("c", "a/b", 1)
    with pytest.raises(InvalidName):
        reg.acquire("c", "", 1)
    assert reg.show_chronicles() == ["c"]
    assert reg.show_stories("c") == []


def test_destroy(reg: Registry) -> None:
    reg.create_chronicle("c", None)
    reg.create_chronicle("d", None)
    reg.destroy_chronicle("c")
    assert reg.show_chronicles() == ["d"]
    with pytest.raises(UnknownChronicle):
        reg.destroy_chronicle("c")


def test_destroy_while_a_story_is_held(reg: Registry) -> None:
    reg.create_chronicle("c", None)
    reg.acquire("c", "s1", 5)
    reg.acquire("c", "s2", 6)
    with pytest.raises(ChronicleInUse) as ei:
        reg.destroy_chronicle("c")
    assert "s1" in str(ei.value) and "s2" in str(ei.value)
    assert reg.show_chronicles() == ["c"]
    reg.release("c", "s1", 5)
    with pytest.raises(ChronicleInUse, match="s2"):
        reg.destroy_chronicle("c")
    reg.release("c", "s2", 6)
    reg.destroy_chronicle("c")  # released stories do not keep it alive
    assert reg.show_chronicles() == []


# -- stories -------------------------------------------------------------------------------------


def test_same_story_same_id_across_clients(reg: Registry) -> None:
    reg.create_chronicle("c", None)
    a = reg.acquire("c", "s", 3)
    b = reg.acquire("c", "s", 4)
    assert a == b
    assert isinstance(a, int) and a >= 1
    assert reg.show_stories("c") == ["s"]
    assert reg.chronicles["c"].stories["s"].holders == {3, 4}
    assert reg.chronicles["c"].stories["s"].acquired == 2


def test_different_stories_different_ids(reg: Registry) -> None:
    reg.create_chronicle("c", None)
    reg.create_chronicle("d", None)
    ids = [reg.acquire("c", "s", 1), reg.acquire("c", "t", 1), reg.acquire("d", "s", 1), reg.acquire("d", "t", 2)]
    assert len(set(ids)) == 4, "the same story name in another chronicle is another story"
    assert reg.show_stories("c") == ["s", "t"]


def test_ids_survive_destroy_and_are_never_reused(reg: Registry) -> None:
    reg.create_chronicle("c", None)
    s = reg.acquire("c", "s", 1)
    reg.release("c", "s", 1)
    reg.destroy_chronicle("c")
    reg.create_chronicle("c", None)
    assert reg.show_stories("c") == []
    # a new story after the destroy must not get a recycled id
    t = reg.acquire("c", "t", 1)
    assert t != s
    # the same names come back to the same id: stored events keep one identity
    assert reg.acquire("c", "s", 2) == s
    u = reg.acquire("c", "u", 2)
    assert len({s, t, u}) == 3


def test_release_counts_holders(reg: Registry) -> None:
    reg.create_chronicle("c", None)
    sid = reg.acquire("c", "s", 1)
    reg.acquire("c", "s", 2)
    assert reg.release("c", "s", 1) == 1
    assert reg.chronicles["c"].stories["s"].holders == {2}
    with pytest.raises(ChronicleInUse):
        reg.destroy_chronicle("c")  # client 2 still holds it
    with pytest.raises(StoryNotAcquired):
        reg.release("c", "s", 1)  # client 1 released it already
    assert reg.release("c", "s", 2) == 0
    assert reg.show_stories("c") == ["s"], "a released story stays in the chronicle"
    assert reg.acquire("c", "s", 1) == sid


def test_release_of_a_story_never_acquired(reg: Registry) -> None:
    reg.create_chronicle("c", None)
    with pytest.raises(StoryNotAcquired, match="c/s"):
        reg.release("c", "s", 1)
    reg.acquire("c", "s", 1)
    with pytest.raises(StoryNotAcquired):
        reg.release("c", "s", 2)  # held, but not by this client
    assert reg.chronicles["c"].stories["s"].holders == {1}


# -- dispatch / JSON --------------------------------------------------------------------------


def test_handle_dispatch(reg: Registry) -> None:
    assert reg.handle(("create_chronicle", "c", {"a": 1}), 9) is None
    assert reg.handle(("show_chronicles",), 9) == ["c"]
    sid = reg.handle(("acquire", "c", "s"), 9)
    assert sid == reg.handle(("acquire", "c", "s"), 10)
    assert reg.chronicles["c"].stories["s"].holders == {9, 10}  # the client is the asking rank
    assert reg.handle(("show_stories", "c"), 9) == ["s"]
    assert reg.handle(("release", "c", "s"), 9) == 1
    with pytest.raises(ChronicleInUse):
        reg.handle(("destroy_chronicle", "c"), 9)
    assert reg.handle(("release", "c", "s"), 10) == 0
    assert reg.handle(("destroy_chronicle", "c"), 9) is None
    assert reg.handle(("show_chronicles",), 9) == []
    with pytest.raises(UnknownChronicle):
        reg.handle(("show_stories", "c"), 9)
    with pytest.raises(ValueError, match="unknown registry request 'frobnicate'"):
        reg.handle(("frobnicate", "c"), 9)


def test_errors_travel_as_tuples() -> None:
    reg = Registry()
    try:
        reg.handle(("show_stories", "missing"), 1)
    except ChronoError as exc:
        reply = error_reply(exc)
    else:
        pytest.fail("no error")
    assert reply[0] == "err"
    assert reply[1] == "UnknownChronicle"
    assert "'missing'" in reply[2]
    assert not reply[2].startswith('"')  # KeyError's repr quoting is undone


def test_to_json(reg: Registry) -> None:
    reg.create_chronicle("c", {"owner": "me", "n": 3, "tags": ["x"]})
    reg.create_chronicle("empty", None)
    sid = reg.acquire("c", "s", 1)
    reg.acquire("c", "s", 2)
    reg.release("c", "s", 1)
    tid = reg.acquire("c", "t", 1)
    doc = reg.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc == {
        "c": {
            "attrs": {"owner": "me", "n": 3, "tags": ["x"]},
            "stories": {"s": {"id": sid, "acquired": 2}, "t": {"id": tid, "acquired": 1}},
        },
        "empty": {"attrs": {}, "stories": {}},
    }


# -- property: ids are a function of the names, and unique ----------------------------------


OPS = st.lists(
    st.tuples(
        st.sampled_from(["create", "destroy", "acquire", "release"]),
        st.sampled_from(["c0", "c1"]),
        st.sampled_from(["s0", "s1", "s2"]),
        st.integers(1, 3),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_ids_are_stable_and_unique(ops) -> None:
    reg = Registry()
    id_of: dict[tuple[str, str], int] = {}
    held: dict[tuple[str, str], set[int]] = {}
    for op, c, s, client in ops:
        try:
            if op == "create":
                reg.create_chronicle(c, None)
            elif op == "destroy":
                reg.destroy_chronicle(c)
                for key in list(held):
                    if key[0] == c:
                        assert not held[key], "destroyed a chronicle with a held story"
                        del held[key]
            elif op == "acquire":
                sid = reg.acquire(c, s, client)
                assert id_of.setdefault((c, s), sid) == sid
                held.setdefault((c, s), set()).add(client)
            else:
                left = reg.release(c, s, client)
                assert client in held[(c, s)]
                held[(c, s)].discard(client)
                assert left == len(held[(c, s)])
        except (ChronicleExists, ChronicleInUse, UnknownChronicle, StoryNotAcquired) as exc:
            if isinstance(exc, ChronicleInUse):
                assert any(v for k, v in held.items() if k[0] == c)
            if isinstance(exc, StoryNotAcquired):
                assert client not in held.get((c, s), set())
    assert len(set(id_of.values())) == len(id_of)


# -- stories held from the start (session(stories=...)) ------------------------------------------


def test_held_from_start_gives_the_ids_clients_compute(reg: Registry) -> None:
    """The visor's fresh registry and every client agree on the ids with no request: clients compute them
    (protocol.held_from_start), the visor acquires them for every client; a repeated pair counts once."""
    from chronompi.protocol import held_from_start

    stories = (("app", "log"), ("app", "stdout"), ("other", "log"), ("app", "log"))
    reg.hold_from_start(stories, [3, 4, 5])
    ids = held_from_start(stories)
    assert ids == {("app", "log"): 1, ("app", "stdout"): 2, ("other", "log"): 3}
    assert reg.show_chronicles() == ["app", "other"]
    for (c, s), sid in ids.items():
        assert reg.chronicles[c].stories[s].id == sid
        assert reg.chronicles[c].stories[s].holders == {3, 4, 5}
    assert reg.release("app", "log", 4) == 2  # held as if acquired: released the same way
    assert reg.acquire("app", "new", 4) == 4  # later stories get the next ids
    with pytest.raises(ChronicleExists):
        reg.create_chronicle("app", None)
