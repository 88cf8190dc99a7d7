"""Test app: clients log_many the same 2-D array again and again, refilling it at once after each call
(as a science code reuses its buffer); then the clients read their stories back and print REUSE OK.
Then lists: bytes, str and bytearrays refilled after each call, lists split over batches and left in the
open batch, between log() calls and arrays (the list path keeps the payloads, not a joined copy): LISTS OK.

Usage: reuse_array.py STORE
"""

from __future__ import annotations

import sys

import numpy as np

import chronompi

ROUNDS, ROWS, WIDTH = 400, 7, 16


def main() -> None:
    cfg = {"storage": {"root": sys.argv[1], "staging": "none"}, "service": {"summary": False}}
    # batches of ~20 rows: each call leaves some rows in the open batch, which the refill must not reach
    cfg["client"] = {"batch_bytes": 20 * (WIDTH + 24)}
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return
        if client.comm.Get_rank() == 0:
            client.create_chronicle("m")
        client.comm.Barrier()
        st = client.acquire_story("m", f"s{client.comm.Get_rank()}")
        buf = np.zeros((ROWS, WIDTH), np.uint8)
        for i in range(ROUNDS):
            buf[:] = i % 251
            buf[:, 0] = np.arange(ROWS)
            st.log_many(buf)
        buf[:] = 255  # the last rows are still in the open batch now
        st.flush()
        got = st.replay()["payload"].tolist()
        want = []
        for i in range(ROUNDS):
            for r in range(ROWS):
                want.append(bytes([r]) + bytes([i % 251]) * (WIDTH - 1))
        assert got == want, f"{sum(a != b for a, b in zip(got, want))} payloads differ from what was logged"
        st.release()
        print("REUSE OK", flush=True)
        lists(client)


def lists(client: chronompi.Client) -> None:
    st = client.acquire_story("m", f"l{client.comm.Get_rank()}")
    want: list[bytes] = []
    mutable = [bytearray(WIDTH) for _ in range(3)]
    for i in range(ROUNDS):
        for k, b in enumerate(mutable):
            b[:] = bytes([k]) * WIDTH
        items: list = [b"b%05d" % i, f"s{i:05d}", *mutable, b""]
        st.log_many(items)
        want += [items[0], items[1].encode(), *(bytes(b) for b in mutable), b""]
        for b in mutable:  # refilled at once: the events keep what was logged
            b[:] = b"\xff" * WIDTH
        if i % 3 == 0:
            st.log(b"one %d" % i)
            want.append(b"one %d" % i)
        if i % 5 == 0:
            st.log_many(np.full((2, 4), i % 251, np.uint8))
            want += [bytes([i % 251]) * 4] * 2
    st.flush()
    got = st.replay()["payload"].tolist()
    assert got == want, f"{len(got)} events, {len(want)} logged; {sum(a != b for a, b in zip(got, want))} differ"
    st.release()
    print("LISTS OK", flush=True)


if __name__ == "__main__":
    main()
