"""Story without MPI: log_many's argument checks (a whole str or bytes is refused, nothing logged), its cutting
into batches, and what the client uses of a Story (through the Sender it hands every Story)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chronompi.errors import SessionClosed, StoryNotAcquired
from chronompi.story import CLOSED, RECORD_OVERHEAD, RELEASED, Sender, Story


def never(*args: Any) -> Any:
    raise AssertionError(f"called with {args}: nothing reaches the client here")


def make_sender(limit: int = 1 << 20, send: Any = never) -> Sender:
    """The Sender a client hands its stories (limit = batch_bytes, max_event_bytes 1000), no client behind it."""
    return Sender(limit, 1000, send, never, never)


def appended(sender: Sender) -> list[Any]:
    """What log_many put into the open batch: (lengths, heap bytes) per call."""
    return [(seg[3].tolist(), seg[4].tobytes()) for seg in sender.batch.segments]


@pytest.mark.parametrize("whole", ["abc", b"abc", bytearray(b"abc"), memoryview(b"abc")])
def test_one_str_or_bytes_is_refused(whole: object) -> None:
    sender = make_sender()
    st = Story(None, sender, "c", "s", 1, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError) as ei:
        st.log_many(whole)  # type: ignore[arg-type]
    msg = str(ei.value)
    assert f"not one {type(whole).__name__} of length 3" in msg
    assert "a sequence of bytes/str payloads, or a 2-D uint8 array" in msg and "use log()" in msg
    assert appended(sender) == [] and st.seq == 0, "nothing is logged"


def test_sequences_and_arrays_still_log() -> None:
    sender = make_sender()
    st = Story(None, sender, "c", "s", 1, 0)  # type: ignore[arg-type]
    st.log_many(["ab", b"c", bytearray(b"de")])  # type: ignore[list-item]
    st.log_many(np.frombuffer(b"xyzw", np.uint8).reshape(2, 2))
    st.log_many(p for p in (b"g",))
    assert appended(sender) == [([2, 1, 2], b"abcde"), ([2, 2], b"xyzw"), ([1], b"g")]
    assert st.seq == 6


def test_seq_counts_events_logged_one_at_a_time() -> None:
    """``Story.seq`` is current while ``log`` appends a run (the stale ``_seq`` made the workload
    driver log seq 1000.. with the payloads of seq 0..: `chronompi run --verify` failed in CI)."""
    sender = make_sender()
    a, b = Story(None, sender, "c", "a", 1, 0), Story(None, sender, "c", "b", 2, 5)  # type: ignore[arg-type]
    for _ in range(3):
        a.log(b"x")
    assert a.seq == 3 and b.seq == 5
    b.log(b"y")
    a.log(b"z")
    assert (a.seq, b.seq) == (4, 6)
    a.log_many([b"1", b"2"])
    assert a.seq == 6
    a.log(b"w")
    assert a.seq == 7


def test_arrays_are_cut_into_batches_and_kept_rows_are_copies() -> None:
    """``OpenBatch.add_arrays`` (log_many's batch cutting, MPI-free since it moved from the client):
    a full batch is sent, one event larger than a batch travels alone, what stays open is a copy."""
    sent: list[list[int]] = []

    def send(kind: int) -> None:
        sent.append(sender.batch.take()[3].tolist())  # the lengths of the batch that went out

    sender = make_sender(3 * (10 + RECORD_OVERHEAD), send)  # three 10-byte events fill a batch
    st = Story(None, sender, "c", "s", 1, 0)  # type: ignore[arg-type]
    rows = np.zeros((7, 10), np.uint8)
    st.log_many(rows)
    assert sent == [[10, 10, 10], [10, 10, 10]]
    rows[:] = 1  # the caller refills its array: the row still open is its own copy
    assert appended(sender) == [([10], bytes(10))]
    st.log_many([b"x" * 200])  # larger than a batch: the open row goes first, then it alone
    assert sent[2:] == [[10], [200]] and appended(sender) == []
    assert st.seq == 8


def test_what_the_client_uses_of_a_story() -> None:
    """``active``, ``next_seq_locked`` and ``end_locked``: the client's whole view of a Story."""
    sender = make_sender()
    a, b = Story(None, sender, "c", "a", 1, 0), Story(None, sender, "c", "b", 2, 0)  # type: ignore[arg-type]
    a.log(b"x")
    a.log(b"y")
    with sender.lock:
        assert a.next_seq_locked() == 2 and a.active
        assert a.end_locked(RELEASED) == 2 and not a.active
    with pytest.raises(StoryNotAcquired):
        a.log(b"z")
    b.log(b"x")
    with sender.lock:
        assert b.end_locked(CLOSED) == 1
    with pytest.raises(SessionClosed):
        b.log_many([b"z"])
    assert (a.seq, b.seq) == (2, 1)
