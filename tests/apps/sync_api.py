"""Test app: the sync() API seen from a science code, while the job runs.

Each client logs rounds of events into two stories, syncs, and then reads the store with the
*offline* reader (``open_store``, another process's view of the files, SWMR) to check that every
event it logged at or before the returned sync point is already there, byte for byte. Also:
a timeout too short raises SyncTimeout and loses nothing; bad arguments are refused; sync()
after the session raises SessionClosed. Prints "SYNC OK <rounds>" per client.
Usage: sync_api.py STORE SPEC_JSON (spec: cfg, rounds, per_round).
"""

from __future__ import annotations

import json
import sys
import warnings

import _hang  # noqa: E402

_hang.arm(100)

import chronompi  # noqa: E402


def payload(rank: int, story: int, i: int) -> bytes:
    return f"{rank}/{story}/{i}|".encode() * (1 + i % 7)


def main() -> None:
    store, spec = sys.argv[1], json.loads(sys.argv[2])
    cfg = spec.get("cfg", {})
    cfg.setdefault("storage", {})["root"] = store
    rounds, per = spec["rounds"], spec["per_round"]
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return
        comm = client.comm
        if comm.Get_rank() == 0:
            client.create_chronicle("c")
        comm.Barrier()
        stories = [client.acquire_story("c", f"s{j}") for j in range(2)]
        for bad in ({"until": "disk"}, {"timeout": 0}, {"timeout": -1.0}):
            try:
                stories[0].sync(**bad)
            except ValueError as exc:
                assert str(bad[next(iter(bad))]) in str(exc), exc
            else:
                raise AssertionError(f"sync({bad}) was accepted")
        logged: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
        last_point = 0
        timeouts = 0
        for r in range(rounds):
            for i in range(r * per, (r + 1) * per):
                j = i % 2
                p = payload(client.rank, j, i)
                logged[j].append((stories[j].log(p), p))
            if r % 4 == 3:
                try:
                    client.sync(timeout=1e-6)  # no answer can come back this fast
                except chronompi.SyncTimeout as exc:
                    assert exc.expected >= 1 and exc.answered < exc.expected
                    timeouts += 1
            point = stories[r % 2].sync() if r % 3 else client.sync(until="committed")
            assert point > last_point, f"sync points must grow: {point} after {last_point}"
            last_point = point
            assert point >= max(t for t, _ in logged[0] + logged[1])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # open segments of this live run are read in SWMR mode
                with chronompi.open_store(store) as st:
                    for j in (0, 1):
                        ev = st.replay("c", f"s{j}")
                        mine = {
                            int(t): bytes(p)
                            for t, c, p in zip(ev["time"], ev["client"], ev["payload"])
                            if int(c) == client.id
                        }
                        for t, p in logged[j]:
                            assert mine.get(t) == p, f"round {r}: event {t} of s{j} synced but not in the store"
            received = client.sync(until="received")
            assert received >= point
        assert timeouts == rounds // 4
        print(f"SYNC OK {rounds}", flush=True)
    try:
        client.sync()
    except chronompi.SessionClosed:
        pass
    else:
        raise AssertionError("sync() after the session was accepted")


if __name__ == "__main__":
    main()
