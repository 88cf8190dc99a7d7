"""Test app: one client raises inside the session.

mode "alone": the other clients finish normally; the failing rank re-raises after the session.
mode "stuck": the other clients wait for the failed one in a Barrier (a science code's collective);
the visor waits service.failure_grace_s, writes what was recorded and aborts the job.
Usage: client_fails.py STORE MODE
"""

from __future__ import annotations

import sys

import _hang  # noqa: E402

_hang.arm(100)

import chronompi  # noqa: E402

store, mode = sys.argv[1], sys.argv[2]
cfg = {"storage": {"root": store}, "service": {"failure_grace_s": 2.0, "summary": False}}
with chronompi.session(cfg=cfg) as client:
    if client is not None:
        r = client.comm.Get_rank()
        if r == 0:
            client.create_chronicle("c")
        client.comm.Barrier()
        st = client.acquire_story("c", f"s{r}")
        st.log_many([b"%d-%d" % (r, i) for i in range(100)])
        if r == 0:
            raise RuntimeError("science code failed on purpose")
        if mode == "stuck":
            client.comm.Barrier()  # never completes: rank 0 is gone
        st.log(b"last")
