"""Test app: one synthetic Parsl monitoring stream recorded twice, with encoding version 1 and 3.

Usage: mpirun -n 4 python parsl_encodings.py STORE [TASKS]
Client rank 0 records perf/bench_parsl.py's stream (every message type) through ChronicleSink into
chronicle "v1" (JSON payloads, as chronompi can still write) and chronicle "v3" (msgpack), and
into chronicle "mixed" alternating the two versions message by message.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "perf"))


def main() -> int:
    store = sys.argv[1]
    tasks = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    from bench_parsl import make_stream

    import chronompi
    from chronompi.parsl.sink import ChronicleSink

    msgs = make_stream(tasks, run_id="5f1d2c3e-0b4a-4e5f-9a8b-7c6d5e4f3a2b")
    with chronompi.session(cfg={"storage": {"root": store}}) as client:
        if client is None or client.comm.Get_rank() != 0:
            return 0
        sinks = {v: ChronicleSink(client, f"v{v}", version=v) for v in (1, 3)}
        mixed = [ChronicleSink(client, "mixed", version=v) for v in (1, 3)]
        for i, m in enumerate(msgs):
            sinks[1].record(m)
            sinks[3].record(m)
            mixed[i % 2].record(m)
        client.flush()
        for s in [*sinks.values(), *mixed]:
            s.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
