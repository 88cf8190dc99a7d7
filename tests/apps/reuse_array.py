"""Test app: clients log_many the same 2-D array again and again, refilling it at once after each call
(as a science code reuses its buffer); then the clients read their stories back and print REUSE OK.

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


if __name__ == "__main__":
    main()
