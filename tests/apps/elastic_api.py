"""Test app: scale() requests that cannot be carried out are refused with a clear error, nothing changes.

Usage: elastic_api.py STORE SPEC_JSON (spec: cfg). Client 0 checks the refusals; prints "API OK".
"""

from __future__ import annotations

import json
import sys
import time

import _hang  # noqa: E402

_hang.arm(100)

import chronompi  # noqa: E402
from chronompi.errors import ScaleError  # noqa: E402


def refused(call, *words: str) -> None:
    try:
        call()
    except ScaleError as exc:
        text = str(exc)
        assert all(w in text for w in words), f"{text!r} should name {words}"
    else:
        raise AssertionError(f"{call} was accepted")


def main() -> None:
    store, spec = sys.argv[1], json.loads(sys.argv[2])
    cfg = spec["cfg"]
    cfg.setdefault("storage", {})["root"] = store
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return
        comm = client.comm
        if comm.Get_rank() == 0:
            client.create_chronicle("c")
        comm.Barrier()
        st = client.acquire_story("c", "s")
        for i in range(200):
            st.log(b"before %d" % i)
        comm.Barrier()
        if comm.Get_rank() == 0:
            before = client.members()
            refused(lambda: client.scale(keepers=0), "keepers=0", "at least one")
            refused(lambda: client.scale(graphers=0), "graphers=0", "at least one")
            spares = len(before["spares"])
            refused(lambda: client.scale(keepers=1 + spares + 1), "spare", str(spares))
            refused(lambda: client.scale(keepers=1 + spares, graphers=2), "spare")
            try:
                client.scale(keepers="2")  # type: ignore[arg-type]
            except TypeError as exc:
                assert "'2'" in str(exc)
            else:
                raise AssertionError("scale(keepers='2') accepted")
            assert client.members()["epoch"] == before["epoch"] == 0, "a refused request changed something"
            first = client.scale(keepers=2, wait=False)
            refused(lambda: client.scale(graphers=2), "in progress", "epoch 1")
            while client.members()["changing"]:
                time.sleep(0.01)
            done = client.scale(keepers=2)  # what is there already: nothing changes
            assert done["epoch"] == 1 and len(done["keepers"]) == 2 and not done["changing"], (first, done)
            assert client.scale(keepers=2)["epoch"] == 1, "asking for what is there must change nothing"
            print("API OK", flush=True)
        for i in range(200):
            st.log(b"after %d" % i)
        comm.Barrier()


if __name__ == "__main__":
    main()
