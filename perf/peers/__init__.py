"""Ingest peers: one module each, registered here by name (the ``peers`` list of ``perf/conf/perf.yaml``)."""

from __future__ import annotations

from .adios2_bp5 import Adios2BP5
from .adios2_mpi import Adios2Mpi
from .base import Peer
from .h5py_files import H5pyFiles

PEERS: dict[str, Peer] = {p.name: p for p in (Adios2BP5(), Adios2Mpi(), H5pyFiles())}

__all__ = ["PEERS", "Peer", "select"]


def select(names: list[str]) -> tuple[list[Peer], dict[str, str]]:
    """The usable peers among ``names`` and, for the others, why they are skipped."""
    usable, skipped = [], {}
    for name in names:
        peer = PEERS.get(name)
        if peer is None:
            raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
        why = peer.unavailable()
        if why:
            skipped[name] = why
        else:
            usable.append(peer)
    return usable, skipped
