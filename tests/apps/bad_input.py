"""Test app: every kind of bad input gets a clear error, and nothing logged before it is lost.

Prints one line "CHECKED <name>" per check; the test compares the list.
Usage: bad_input.py STORE
"""

from __future__ import annotations

import sys

import _hang  # noqa: E402

_hang.arm(100)

import chronompi  # noqa: E402
from chronompi import errors  # noqa: E402


def expect(name: str, exc_type: type[BaseException], fragment: str, fn, *args) -> None:
    try:
        fn(*args)
    except exc_type as exc:
        assert fragment in str(exc), f"{name}: message {str(exc)!r} lacks {fragment!r}"
        print(f"CHECKED {name}", flush=True)
        return
    raise AssertionError(f"{name}: no {exc_type.__name__} raised")


def main() -> None:
    store = sys.argv[1]
    cfg = {"storage": {"root": store}, "client": {"max_event_bytes": 1000}, "service": {"summary": False}}
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return
        if client.comm.Get_rank() != 0:
            return  # one client does the checks, the others just take part
        client.create_chronicle("good")
        st = client.acquire_story("good", "s")
        st.log(b"before-1")
        for bad in ["../x", "a/b", "", "x" * 65, "bad name", "caf\u00e9", ".hidden", "..", "-dash"]:
            expect(f"chronicle-name {bad!r}", errors.InvalidName, repr(bad), client.create_chronicle, bad)
            expect(f"story-name {bad!r}", errors.InvalidName, repr(bad), client.acquire_story, "good", bad)
        expect("name-not-str", errors.InvalidName, "must be a str", client.acquire_story, "good", 123)
        expect("invalid-is-valueerror", ValueError, "invalid", client.create_chronicle, "a/b")
        st.log(b"before-2")
        expect("payload-too-large", errors.PayloadTooLarge, "1001 bytes", st.log, b"x" * 1001)
        expect(
            "payload-too-large-many", errors.PayloadTooLarge, "max_event_bytes=1000", st.log_many, [b"ok", b"y" * 5000]
        )
        expect("payload-type", TypeError, "bytes or str", st.log, 12345)
        expect("log_many-bad-array", ValueError, "2-D uint8", st.log_many, __import__("numpy").zeros(3))
        st.log("before-3 as str")
        for whole in ("abc", b"abc", bytearray(b"abc"), memoryview(b"abc")):  # one payload, not three events
            kind = type(whole).__name__
            expect(f"log_many-{kind}", TypeError, f"not one {kind} of length 3", st.log_many, whole)
            expect(f"log_many-{kind}-advice", TypeError, "to log one event use log()", st.log_many, whole)
        expect("unknown-chronicle-acquire", errors.UnknownChronicle, "'nope'", client.acquire_story, "nope", "s")
        expect("unknown-chronicle-stories", errors.UnknownChronicle, "create it first", client.show_stories, "nope")
        expect("unknown-chronicle-destroy", errors.UnknownChronicle, "'nope'", client.destroy_chronicle, "nope")
        expect("chronicle-exists", errors.ChronicleExists, "exists already", client.create_chronicle, "good")
        expect("destroy-in-use", errors.ChronicleInUse, "release them", client.destroy_chronicle, "good")
        st.release()
        st.release()  # twice is fine
        expect("log-after-release", errors.StoryNotAcquired, "acquire it again", st.log, b"late")
        expect("log_many-after-release", errors.StoryNotAcquired, "was released", st.log_many, [b"late"])
        expect("release-not-acquired", errors.StoryNotAcquired, "not acquired", client.release_story, "good", "zzz")
        st2 = client.acquire_story("good", "s")  # re-acquire: seq continues
        st2.log(b"after-reacquire")
        with client.acquire_story("good", "ctx") as st3:
            st3.log(b"in-context")
        expect("context-released", errors.StoryNotAcquired, "released", st3.log, b"x")
        client.create_chronicle("doomed")
        client.destroy_chronicle("doomed")
        assert "doomed" not in client.show_chronicles()
        print("CHECKED destroy", flush=True)
        held = st2
        survivor = client
    # after the session (only the checking client reaches here with a client)
    expect("log-after-session", errors.SessionClosed, "session has ended", held.log, b"x")
    expect(
        "acquire-after-session", errors.SessionClosed, "session() to record more", survivor.acquire_story, "good", "s"
    )
    expect("show-after-session", errors.SessionClosed, "ended", survivor.show_chronicles)
    with chronompi.open_store(store) as s:
        ev = s.replay("good", "s")
        got = ev["payload"].tolist()
        assert got == [b"before-1", b"before-2", b"before-3 as str", b"after-reacquire"], got
        assert ev["seq"].tolist() == [0, 1, 2, 3], ev["seq"].tolist()
        assert s.replay("good", "ctx")["payload"].tolist() == [b"in-context"]
    print("CHECKED nothing-lost", flush=True)


if __name__ == "__main__":
    main()
