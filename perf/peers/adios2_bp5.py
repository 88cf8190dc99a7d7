"""Peer: ADIOS2's BP5 engine with the serial ``adios2`` wheel, one file (BP directory) per client rank.

Every batch is one ADIOS2 step of three local-array variables: ``payload`` (uint8, the batch's bytes
back to back), ``time`` (int64) and ``offset`` (uint64, into the step's ``payload``). Timestamps as in
the h5py peer. ``Put`` is deferred (ADIOS2's default): BP5 gathers the step and writes it at ``EndStep``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from events import Events

from .base import Peer, batches


def missing_adios2() -> str | None:
    try:
        import adios2  # noqa: F401
    except ImportError as exc:
        return f"adios2 is not importable ({exc}); pip install 'chronompi[perf]' (or pip install adios2)"
    return None


def write_steps(adios: Any, path: str, events: Events, batch: int, steps: int | None = None) -> None:
    """Write ``events`` to one BP5 output in steps of ``batch`` events (``steps``: pad with empty steps)."""
    from adios2 import bindings as ab

    w, n = events.payload, events.n
    io = adios.DeclareIO("events")  # a fresh ADIOS object per output: one IO each
    io.SetEngine("BP5")
    k0 = min(batch, max(n, 1))
    v_p = io.DefineVariable("payload", np.empty(k0 * w, np.uint8), [], [], [k0 * w], False)
    v_t = io.DefineVariable("time", np.empty(k0, np.int64), [], [], [k0], False)
    v_o = io.DefineVariable("offset", np.empty(k0, np.uint64), [], [], [k0], False)
    engine = io.Open(path, ab.Mode.Write)
    done = 0
    for a in batches(n, batch):
        b = min(n, a + batch)
        k = b - a
        t = time.time_ns()
        ts = np.arange(t, t + k, dtype=np.int64)
        off = np.arange(k, dtype=np.uint64) * np.uint64(w)
        engine.BeginStep()
        v_t.SetSelection([[], [k]])
        v_o.SetSelection([[], [k]])
        engine.Put(v_t, ts)
        engine.Put(v_o, off)
        if w:
            v_p.SetSelection([[], [k * w]])
            engine.Put(v_p, events.rows[a:b].reshape(-1))
        engine.EndStep()  # deferred puts: the arrays above stay referenced until here
        done += 1
    for _ in range(done, steps or 0):  # collective engines: every rank takes part in every step
        engine.BeginStep()
        engine.EndStep()
    engine.Close()


def count_events(path: Path) -> int:
    """Events in one BP output: the sum of the ``time`` blocks' counts over all steps."""
    from adios2 import bindings as ab

    adios = ab.ADIOS()
    io = adios.DeclareIO("count")
    io.SetEngine("BP5")
    engine = io.Open(str(path), ab.Mode.ReadRandomAccess)
    try:
        var = io.InquireVariable("time")
        steps = var.Steps() if var else 0
        return sum(int(b["Count"]) for s in range(steps) for b in engine.BlocksInfo("time", s))
    finally:
        engine.Close()


class Adios2BP5(Peer):
    name = "adios2"
    label = "ADIOS2 BP5, one file per rank"

    def unavailable(self) -> str | None:
        return missing_adios2()

    def write(self, comm: Any, events: Events, root: Path, batch: int) -> None:
        from adios2 import bindings as ab

        write_steps(ab.ADIOS(), str(root / f"rank{comm.Get_rank():05d}.bp"), events, batch)

    def stored(self, root: Path) -> int:
        return sum(count_events(p) for p in sorted(root.glob("rank*.bp")))

    def versions(self) -> dict[str, str]:
        import adios2

        return {"adios2": adios2.__version__, "adios2_mpi": str(bool(adios2.is_built_with_mpi))}
