"""Peer: ADIOS2 BP5 with MPI aggregation, one output written by all client ranks together.

Needs an ``adios2`` built with MPI (``adios2.is_built_with_mpi``) against the same MPI as mpi4py; the
PyPI wheel is serial, so on a pip-only install this peer is skipped and the results say why. Each rank
puts its batch as its own block of the same local-array variables as the serial peer; ``BeginStep`` /
``EndStep`` are collective, so ranks with fewer batches write empty steps to keep in step.

Not yet run anywhere: the development machine and CI have only the serial wheel, so this module has
only been exercised as far as its skip. The first run on an MPI build should check its row's
``events_stored``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from events import Events

from .adios2_bp5 import count_events, missing_adios2, write_steps
from .base import Peer


class Adios2Mpi(Peer):
    name = "adios2_mpi"
    label = "ADIOS2 BP5, one file, MPI aggregation"

    def unavailable(self) -> str | None:
        why = missing_adios2()
        if why:
            return why
        import adios2

        if not adios2.is_built_with_mpi:
            return (
                f"adios2 {adios2.__version__} is the serial build (adios2.is_built_with_mpi is False); "
                "the aggregated variant needs an adios2 built with MPI against the MPI that mpi4py uses"
            )
        return None

    def write(self, comm: Any, events: Events, root: Path, batch: int, shape: str = "arrays") -> None:
        from adios2 import bindings as ab

        steps = comm.allreduce(-(-events.n // max(1, batch)), op=_max())
        adios = ab.ADIOS(comm)  # kept until the engine is closed
        write_steps(adios, str(root / "all.bp"), events, batch, shape, steps)

    def stored(self, root: Path) -> int:
        return count_events(root / "all.bp")

    def versions(self) -> dict[str, str]:
        import adios2

        return {"adios2": adios2.__version__, "adios2_mpi": str(bool(adios2.is_built_with_mpi))}


def _max() -> Any:
    from mpi4py import MPI

    return MPI.MAX
