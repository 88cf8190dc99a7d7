"""Story.log_many's argument checks, without MPI: a whole str or bytes is refused, and nothing is logged."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from chronompi.story import OpenBatch, Story


class FakeClient(SimpleNamespace):
    """What a Story reaches of its client; records what log_many hands over."""

    def __init__(self) -> None:
        super().__init__(
            _lock=threading.Lock(), _max_event=1000, _limit=1 << 20, _batch=OpenBatch(), _offset=0, _last=0
        )
        self.appended: list[Any] = []

    def _append_many(
        self, sid: int, times: np.ndarray, seqs: np.ndarray, lengths: np.ndarray, heap: np.ndarray
    ) -> None:
        self.appended.append((lengths.tolist(), heap.tobytes()))


@pytest.mark.parametrize("whole", ["abc", b"abc", bytearray(b"abc"), memoryview(b"abc")])
def test_one_str_or_bytes_is_refused(whole: object) -> None:
    client = FakeClient()
    st = Story(client, "c", "s", 1, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError) as ei:
        st.log_many(whole)  # type: ignore[arg-type]
    msg = str(ei.value)
    assert f"not one {type(whole).__name__} of length 3" in msg
    assert "a sequence of bytes/str payloads, or a 2-D uint8 array" in msg and "use log()" in msg
    assert client.appended == [] and st._seq == 0, "nothing is logged"


def test_sequences_and_arrays_still_log() -> None:
    client = FakeClient()
    st = Story(client, "c", "s", 1, 0)  # type: ignore[arg-type]
    st.log_many(["ab", b"c", bytearray(b"de")])  # type: ignore[list-item]
    st.log_many(np.frombuffer(b"xyzw", np.uint8).reshape(2, 2))
    st.log_many(p for p in (b"g",))
    assert client.appended == [([2, 1, 2], b"abcde"), ([2, 2], b"xyzw"), ([1], b"g")]
    assert st._seq == 6


def test_seq_counts_events_logged_one_at_a_time() -> None:
    """``Story.seq`` is current while ``log`` appends a run (the stale ``_seq`` made the workload
    driver log seq 1000.. with the payloads of seq 0..: `chronompi run --verify` failed in CI)."""
    client = FakeClient()
    a, b = Story(client, "c", "a", 1, 0), Story(client, "c", "b", 2, 5)  # type: ignore[arg-type]
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
