"""The ingest harness: rounds of timed runs of several systems on the same events, and their statistics.

A *system* is a collective callable that runs once and returns a result with ``events``, ``seconds``,
``events_per_s``; chronompi's ``log`` / ``log_many`` sessions (``bench_ingest.chronompi_run``) and every
peer (``peers/``, wrapped by :func:`peer_run`) are systems. :func:`run_rounds` runs each system once a
round, rotating the order every round so that no system always runs first (or right after the same
neighbour) on a shared, noisy machine; :func:`aggregate` reduces the rounds of one system to one row:
median, min and max events/s, every round's numbers and the load average before its first and after its
last run.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import measured, quiet_barrier, ratio, remove_store, scratch_dir
from events import Events
from peers import Peer, select

PEERS = ["adios2", "adios2_mpi", "h5py"]


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def writers_comm(comm: Any, clients: list[int]) -> Any:
    """A communicator of the client ranks (``MPI.COMM_NULL`` elsewhere): the peers' writers. Collective."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    return comm.Split(0 if rank in clients else MPI.UNDEFINED, rank)


SHAPE_LABELS = {
    "arrays": ", arrays of {batch}",
    "events": ", one event at a time ({batch} a write)",
    "made": ", each event made in the loop ({batch} a write)",
}


def peer_system(peer: Peer, shape: str) -> str:
    """A peer's name in results and tables: ``adios2`` for arrays, ``adios2 events`` one event at a time."""
    return peer.name if shape == "arrays" else f"{peer.name} {shape}"


def system_names(params: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The ingest systems of ``params`` in their order (chronompi's modes, then every usable peer in every
    shape), and why each peer that cannot run here is skipped. No MPI: ``run.py`` plans its jobs with it."""
    peers, skipped = select(list(params.get("peers", PEERS)))
    shapes = list(params.get("peer_shapes", ["arrays", "events"]))
    names = [f"chronompi {m}" for m in params.get("modes", ["log", "log_many"])]
    return names + [peer_system(p, shape) for p in peers for shape in shapes], skipped


def peer_of(name: str, params: dict[str, Any]) -> tuple[Peer, str]:
    """The peer and shape of a peer system's name (:func:`peer_system` backwards)."""
    peers, _ = select(list(params.get("peers", PEERS)))
    for p in peers:
        for shape in SHAPE_LABELS:
            if peer_system(p, shape) == name:
                return p, shape
    raise ValueError(f"no usable peer system {name!r}")


def peer_run(
    comm: Any, wcomm: Any, params: dict[str, Any], peer: Peer, events: Events, batch: int, shape: str = "arrays"
) -> dict[str, Any]:
    """One timed run of ``peer``: a barrier of all ranks, every writer writes its events, files closed, barrier.

    Collective over ``comm``; the ranks outside ``wcomm`` (chronompi's service ranks) wait in a sleeping
    barrier. Then rank 0 reads back how many events the files hold and the scratch directory is deleted.
    """
    from mpi4py import MPI

    rank = comm.Get_rank()
    writer = wcomm != MPI.COMM_NULL
    root = scratch_dir(params, comm, f"peer-{peer.name}-{shape}")
    if rank == 0:
        Path(root).mkdir(parents=True)
    la0 = loadavg()
    with measured(comm) as m:  # barrier .. barrier: from before the first open to every file closed
        if writer:
            peer.write(wcomm, events, Path(root), batch, shape)
    la1 = loadavg()
    events_total = int(comm.allreduce(events.n if writer else 0))
    nbytes = int(comm.allreduce(events.nbytes if writer else 0))
    writers = int(comm.allreduce(1 if writer else 0))
    stored = peer.stored(Path(root)) if rank == 0 else 0
    remove_store(comm, root)
    wall = m["wall_s"]
    res = {
        "system": peer_system(peer, shape),
        "label": peer.label + SHAPE_LABELS[shape].format(batch=batch),
        "shape": shape,
        "payload": events.payload,
        "clients": writers,
        "events": events_total,
        "events_stored": stored,
        "bytes": nbytes,
        "batch_events": batch,
        "seconds": round(wall, 6),
        "events_per_s": round(events_total / wall, 1),
        "mb_per_s": round(nbytes / wall / 1e6, 3),
        "cpu_s": round(m["cpu_s"], 4),
        "cpu_s_per_million": round(m["cpu_s"] / events_total * 1e6, 3) if events_total else None,
        "loadavg_start": la0,
        "loadavg_end": la1,
        **peer.versions(),
    }
    return dict(comm.bcast(res, root=0))


def run_rounds(
    comm: Any, systems: list[tuple[str, Callable[[], dict[str, Any]]]], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """Run every system once per round, the order rotated by one each round. Collective."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in systems}
    k = len(systems)
    for r in range(max(1, rounds)):
        for name, run in systems[r % k :] + systems[: r % k]:
            quiet_barrier(comm)
            res = run()
            res["round"] = r
            runs[name].append(res)
    return runs


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for the rounds of one system: the median round's fields, with rates over all rounds."""
    rates = [float(r["events_per_s"]) for r in runs]
    by_rate = sorted(runs, key=lambda r: float(r["events_per_s"]))
    row = {k: v for k, v in by_rate[(len(runs) - 1) // 2].items() if k != "round"}
    cpu = [r["cpu_s_per_million"] for r in runs if r.get("cpu_s_per_million") is not None]
    row.update(
        rounds=len(runs),
        events_per_s=round(statistics.median(rates), 1),
        events_per_s_min=round(min(rates), 1),
        events_per_s_max=round(max(rates), 1),
        mb_per_s=round(statistics.median(float(r["mb_per_s"]) for r in runs), 3),
        cpu_s_per_million=round(statistics.median(cpu), 3) if cpu else None,
        events_per_s_rounds=rates,
        seconds_rounds=[r["seconds"] for r in runs],
        loadavg_rounds=[[r.get("loadavg_start"), r.get("loadavg_end")] for r in runs],
        loadavg_start=runs[0].get("loadavg_start"),
        loadavg_end=runs[-1].get("loadavg_end"),
    )
    return row


def ratios(row: dict[str, Any], others: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """``row``'s median events/s divided by each other row's."""
    return {k: ratio(row["events_per_s"], o["events_per_s"]) for k, o in others.items()}
