"""Peer: ADIOS2's BP5 engine with the serial ``adios2`` wheel, one file (BP directory) per client rank.

Every batch is one ADIOS2 step of three local-array variables: ``payload`` (uint8, the batch's bytes
back to back), ``time`` (int64) and ``offset`` (uint64, into the step's ``payload``). Timestamps as
:func:`peers.base.feed` takes them. ``Put`` is deferred (ADIOS2's default): BP5 gathers the step and
writes it at ``EndStep``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from events import Events

from .base import Peer, feed


def missing_adios2() -> str | None:
    try:
        import adios2  # noqa: F401
    except ImportError as exc:
        return f"adios2 is not importable ({exc}); pip install 'chronompi[perf]' (or pip install adios2)"
    return None


def write_steps(
    adios: Any, path: str, events: Events, batch: int, shape: str = "arrays", steps: int | None = None
) -> None:
    """Write ``events`` to one BP5 output, one step a batch (``steps``: pad with empty steps)."""
    from adios2 import bindings as ab

    w = events.payload
    io = adios.DeclareIO("events")  # a fresh ADIOS object per output: one IO each
    io.SetEngine("BP5")
    v_p = io.DefineVariable("payload", np.empty(1, np.uint8), [], [], [1], False)
    v_t = io.DefineVariable("time", np.empty(1, np.int64), [], [], [1], False)
    v_o = io.DefineVariable("offset", np.empty(1, np.uint64), [], [], [1], False)
    engine = io.Open(path, ab.Mode.Write)
    done = 0
    for heap, ts in feed(events, batch, shape):
        k = len(ts)
        off = np.arange(k, dtype=np.uint64) * np.uint64(w)
        engine.BeginStep()
        v_t.SetSelection([[], [k]])
        v_o.SetSelection([[], [k]])
        engine.Put(v_t, ts)
        engine.Put(v_o, off)
        if w:
            v_p.SetSelection([[], [k * w]])
            engine.Put(v_p, heap)
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

    def write(self, comm: Any, events: Events, root: Path, batch: int, shape: str = "arrays") -> None:
        from adios2 import bindings as ab

        adios = ab.ADIOS()  # kept until the engine is closed
        write_steps(adios, str(root / f"rank{comm.Get_rank():05d}.bp"), events, batch, shape)

    def stored(self, root: Path) -> int:
        return sum(count_events(p) for p in sorted(root.glob("rank*.bp")))

    def versions(self) -> dict[str, str]:
        import adios2

        return {"adios2": adios2.__version__, "adios2_mpi": str(bool(adios2.is_built_with_mpi))}
