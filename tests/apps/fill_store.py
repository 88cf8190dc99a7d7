"""Test app for storage faults: clients log a fixed number of 1 KiB events, keeping a reference log.

Like crashy.py: each client appends (time, seq, story) of every event to REFDIR/ref-<client id>.bin
in whole records, so a job ended by Abort leaves a usable reference. Payloads are a function of
(rank, story, seq): see payload(). Usage: fill_store.py STORE REFDIR SPEC_JSON
(spec: cfg, events per client, rate per client in events/s, 0 = as fast as possible).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import _hang  # noqa: E402
import numpy as np

import chronompi

REF = np.dtype([("time", "<i8"), ("seq", "<u8"), ("story", "<u4"), ("pad", "<u4")])


def payload(rank: int, story: int, seq: int) -> bytes:
    """The 1 KiB payload of event ``seq`` of story ``s<story>`` logged by session rank ``rank``."""
    return f"{rank}:{story}:{seq}:".encode().ljust(1024, b"%c" % (97 + seq % 26))


def main() -> None:
    _hang.arm(100)
    store, refdir, spec = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    cfg = spec["cfg"]
    cfg.setdefault("storage", {})["root"] = store
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return
        comm = client.comm
        if comm.Get_rank() == 0:
            client.create_chronicle("c")
        comm.Barrier()
        stories = [client.acquire_story("c", f"s{j}") for j in range(2)]
        fd = os.open(refdir / f"ref-{client.id:016x}.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        buf = np.zeros(100, REF)
        k = 0
        period = 1.0 / spec["rate"] if spec.get("rate") else 0.0
        t0 = time.perf_counter()
        for i in range(spec["events"]):
            j, seq = i % 2, i // 2
            t = stories[j].log(payload(client.rank, j, seq))
            buf[k] = (t, seq, j, 0)
            k += 1
            if k == len(buf):
                os.write(fd, buf.tobytes())
                k = 0
            ahead = i * period - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
        os.write(fd, buf[:k].tobytes())
        os.close(fd)


if __name__ == "__main__":
    main()
