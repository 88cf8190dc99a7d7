"""Test app: Python logging from every client (two threads each) through chronompi.LogHandler."""

from __future__ import annotations

import logging
import sys
import threading

import _hang  # noqa: E402

import chronompi

_hang.arm(100)

store = sys.argv[1]
with chronompi.session(cfg={"storage": {"root": store}, "service": {"summary": False}}) as client:
    if client is not None:
        me = client.comm.Get_rank()
        if me == 0:
            client.create_chronicle("app")
        client.comm.Barrier()
        story = client.acquire_story("app", "log")
        handler = chronompi.LogHandler(story)
        root = logging.getLogger()
        root.setLevel(logging.DEBUG)
        root.addHandler(handler)
        log = logging.getLogger(f"solver.rank{me}")

        def work(tid: int) -> None:
            for i in range(200):
                log.info("step %d of thread %d residual %.3e", i, tid, 1.0 / (i + 1))
            log.debug("débogage ünicode %d", tid)

        threads = [threading.Thread(target=work, args=(t,), name=f"worker-{t}") for t in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            _ = 1 / 0
        except ZeroDivisionError:
            log.exception("rank %d divided by zero", me)
        log.warning("done")
        root.removeHandler(handler)
        story.release()
