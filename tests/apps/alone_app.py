"""Test app: a program started alone (no mpirun) with session(): the service ranks are spawned.
Usage: alone_app.py STORE EVENTS"""

import sys

import _hang  # noqa: E402

_hang.arm(100)

import chronompi  # noqa: E402

n = int(sys.argv[2])
with chronompi.session(cfg={"storage": {"root": sys.argv[1]}}) as client:
    assert client is not None, "a program run alone is the client"
    assert client.comm.Get_size() == 1
    client.create_chronicle("alone")
    with client.acquire_story("alone", "events") as story:
        for i in range(n):
            story.log(b"event %d" % i)
print("alone_app done", flush=True)
