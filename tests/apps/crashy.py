"""Test app for kill -9 tests: clients log at a steady pace until killed, keeping a reference log.

Each client appends (time, seq, story) of every event it logged to REFDIR/ref-<client id>.bin,
in blocks written with one os.write each, so a kill leaves whole records (a torn tail record
is ignored by the reader). Payloads are a function of (rank, story, seq): see payload().
With spec key ``sync_every`` = K, a client calls ``sync()`` after every K events (its reference
records written first) and appends the returned sync point (int64) to REFDIR/sync-<client id>.bin:
every event it logged at or before that point must survive a kill -9 of the whole job.
With spec key ``scale`` (a list of [keepers, graphers]), client 0 changes the membership over and
over from a thread, touching REFDIR/scaling-<n> before the n-th request, until the job is killed.
Usage: crashy.py STORE REFDIR SPEC_JSON (spec: cfg, rate per client, seconds, sync_every, scale).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import _hang  # noqa: E402
import numpy as np

import chronompi

REF = np.dtype([("time", "<i8"), ("seq", "<u8"), ("story", "<u4"), ("pad", "<u4")])


def payload(rank: int, story: int, seq: int) -> bytes:
    """The payload of event ``seq`` of story ``s<story>`` logged by session rank ``rank``."""
    return f"{rank}:{story}:{seq}:".encode().ljust(40 + seq % 60, b"x")


def main() -> None:
    _hang.arm(100)  # here, not at import: the crash test imports this module for payload()
    store, refdir, spec = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    # the test kills every rank by pid (PRRTE starts ranks in their own group); the file holds the world rank
    rank = os.environ.get("OMPI_COMM_WORLD_RANK") or os.environ.get("PMI_RANK") or ""
    (refdir / f"pid-{os.getpid()}").write_text(rank)
    cfg = spec["cfg"]
    cfg.setdefault("storage", {})["root"] = store
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return
        comm = client.comm
        me = comm.Get_rank()
        if me == 0:
            client.create_chronicle("c")
        comm.Barrier()
        stories = [client.acquire_story("c", f"s{j}") for j in range(2)]
        if spec.get("scale") and me == 0:

            def scaler() -> None:
                n = 0
                while True:
                    for k, g in spec["scale"]:
                        (refdir / f"scaling-{n}").touch()
                        client.scale(keepers=k, graphers=g)
                        n += 1

            threading.Thread(target=scaler, daemon=True).start()
        fd = os.open(refdir / f"ref-{client.id:016x}.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        buf = np.zeros(100, REF)
        every = int(spec.get("sync_every", 0))
        sync_fd = os.open(refdir / f"sync-{client.id:016x}.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        k = 0
        seqs = [0, 0]
        t0 = time.perf_counter()
        period = 1.0 / spec["rate"]
        i = 0
        while time.perf_counter() - t0 < spec["seconds"]:
            j = i % 2
            t = stories[j].log(payload(client.rank, j, seqs[j]))
            buf[k] = (t, seqs[j], j, 0)
            seqs[j] += 1
            k += 1
            i += 1
            if k == len(buf):
                os.write(fd, buf.tobytes())
                k = 0
            if every and i % every == 0:
                os.write(fd, buf[:k].tobytes())  # the reference holds every event the sync covers
                k = 0
                point = client.sync()
                os.write(sync_fd, np.int64(point).tobytes())
            ahead = i * period - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
        os.write(fd, buf[:k].tobytes())
        os.close(fd)
        os.close(sync_fd)


if __name__ == "__main__":
    main()
