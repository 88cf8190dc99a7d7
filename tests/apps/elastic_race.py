"""Test app: client 0 asks for a membership change while the other clients end at once (no barrier).

Either the change is refused because the session is ending (ScaleError), or it is carried out; either
way the session must end, every rank, with nothing hanging. Prints "RACE scaled" or "RACE refused".
Usage: elastic_race.py STORE SPEC_JSON (spec: cfg, delay_s: how long the others wait before ending).
"""

from __future__ import annotations

import json
import sys
import time

import _hang  # noqa: E402

_hang.arm(60)

import chronompi  # noqa: E402


def main() -> None:
    store, spec = sys.argv[1], json.loads(sys.argv[2])
    cfg = spec["cfg"]
    cfg.setdefault("storage", {})["root"] = store
    with chronompi.session(cfg=cfg) as client:
        if client is None:
            return
        if client.comm.Get_rank() == 0:
            try:
                client.scale(keepers=2, graphers=2)
                print("RACE scaled", flush=True)
            except chronompi.ScaleError as exc:
                assert "session is ending" in str(exc), exc
                print("RACE refused", flush=True)
        else:
            time.sleep(spec["delay_s"])


if __name__ == "__main__":
    main()
