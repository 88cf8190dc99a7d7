"""Test app: online replay while the job runs (every tier), checked against what all clients logged.

Usage: online.py STORE SPEC_JSON. spec: cfg, phases, per_phase, tag, prev (tag of an earlier run
in the same store whose events must be replayed too, with the same phases/per_phase), window_ms,
scale (a list of [keepers, graphers]: at each phase client 0 starts the next change without waiting,
so the replays run while the membership changes; "SCALED <n>" is printed at the end).
Prints "PHASE <k> OK <n>" per verified phase on client 0.
"""

from __future__ import annotations

import json
import sys
import time

import _hang  # noqa: E402

_hang.arm(100)

import numpy as np  # noqa: E402

import chronompi  # noqa: E402


def payload(tag: str, rank: int, i: int) -> bytes:
    return f"{tag}:{rank}:{i}".encode() * (1 + i % 5)


def main() -> None:
    store, spec = sys.argv[1], json.loads(sys.argv[2])
    cfg = spec.get("cfg", {})
    cfg.setdefault("storage", {})["root"] = store
    tag, per, phases = spec["tag"], spec["per_phase"], spec["phases"]
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return
        comm = client.comm
        me, n_clients = comm.Get_rank(), comm.Get_size()
        if me == 0 and "c" not in client.show_chronicles():
            client.create_chronicle("c")
        comm.Barrier()
        st = client.acquire_story("c", "s")
        logged = 0
        changes = 0
        for k in range(phases):
            steps = spec.get("scale")
            if steps and me == 0 and not client.members()["changing"]:
                client.scale(*steps[changes % len(steps)], wait=False)
                changes += 1
            for i in range(logged, logged + per):
                st.log(payload(tag, me, i))
            logged += per
            mine = st.replay()
            got = set(mine["payload"].tolist())
            missing = [i for i in range(logged) if payload(tag, me, i) not in got]
            assert not missing, f"phase {k}: own events missing from replay: {missing[:5]}"
            comm.Barrier()  # every client's own replay passed its keeper: all events are recorded
            ev = st.replay()
            want = [payload(tag, r, i) for r in range(n_clients) for i in range(logged)]
            if spec.get("prev"):
                want += [payload(spec["prev"], r, i) for r in range(n_clients) for i in range(per * phases)]
            keys = list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist()))
            assert keys == sorted(keys) and len(set(keys)) == len(keys), "replay not in strict total order"
            assert sorted(ev["payload"].tolist()) == sorted(want), (
                f"phase {k}: replay has {len(ev)} events, expected {len(want)}"
            )
            for cid in np.unique(ev["client"]):
                seq = ev["seq"][ev["client"] == cid]
                assert np.array_equal(seq, np.arange(len(seq))), "seq not dense in replay"
            # a sub-range is exactly the slice of the full replay
            if len(ev) > 10:
                a, b = int(ev["time"][len(ev) // 3]), int(ev["time"][2 * len(ev) // 3])
                sub = st.replay(a, b)
                assert sub["payload"].tolist() == ev["payload"][(ev["time"] >= a) & (ev["time"] < b)].tolist()
            if me == 0:
                print(f"PHASE {k} OK {len(ev)}", flush=True)
            time.sleep(spec.get("pause_ms", 0) / 1000)  # let windows close and segments roll
            comm.Barrier()
        st.release()
        if spec.get("scale") and me == 0:
            print(f"SCALED {changes}", flush=True)


if __name__ == "__main__":
    main()
