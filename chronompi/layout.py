"""Role assignment: which rank is visor, keeper, grapher or client.

A pure function of the communicator size, the node of every rank and the
layout config (no MPI in here), so every rank computes the same answer and a
bad layout fails on all ranks at once, before any message is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import LayoutConfig
from .errors import ConfigError

VISOR, KEEPER, GRAPHER, CLIENT, SPARE = "visor", "keeper", "grapher", "client", "spare"
ROLES = (VISOR, KEEPER, GRAPHER, CLIENT, SPARE)


@dataclass(frozen=True)
class Roles:
    """The outcome of :func:`assign_roles`; all ranks are ranks of the session communicator."""

    role: tuple[str, ...]  # role of every rank
    visor: int
    keepers: tuple[int, ...]
    graphers: tuple[int, ...]
    clients: tuple[int, ...]
    keeper_of: dict[int, int]  # client rank -> its keeper's rank
    spares: tuple[int, ...] = ()  # idle ranks the visor may make keepers or graphers (layout.spares)

    def clients_of(self, keeper: int) -> tuple[int, ...]:
        return tuple(c for c in self.clients if self.keeper_of[c] == keeper)


def assign_roles(size: int, layout: LayoutConfig, node_of: Sequence[int] | None = None) -> Roles:
    """Assign a role to each of ``size`` ranks; ``node_of[r]`` is the node index of rank r."""
    nodes = list(node_of) if node_of is not None else [0] * size
    if len(nodes) != size:
        raise ConfigError(f"node_of has {len(nodes)} entries for {size} ranks")
    k, g = layout.keepers, layout.graphers
    if k < 1 or g < 1:
        raise ConfigError(f"layout needs at least one keeper and one grapher, got keepers={k} graphers={g}")
    node_ids = sorted(set(nodes))
    n_keepers = k * len(node_ids) if layout.per_node else k
    n_spares = layout.spares
    need = 1 + n_keepers + g + n_spares + 1
    if size < need:
        what = f"{k} keeper(s) per node on {len(node_ids)} node(s)" if layout.per_node else f"{k} keeper(s)"
        raise ConfigError(
            f"a session with {what} and {g} grapher(s) needs at least {need} ranks "
            f"(1 visor + {n_keepers} keepers + {g} graphers + {n_spares} spares + at least 1 client), but the "
            f"communicator has {size}; launch more ranks (mpirun -n {need}) or lower "
            "layout.keepers / layout.graphers / layout.spares"
        )
    role = [CLIENT] * size
    role[0] = VISOR
    free = {n: [r for r in range(size) if nodes[r] == n and r != 0] for n in node_ids}
    if layout.per_node:
        for n in node_ids:
            if len(free[n]) < k:
                raise ConfigError(
                    f"node {n} has {len(free[n])} free rank(s) but layout.keepers={k} keepers per "
                    "node were asked for; start more ranks per node or lower layout.keepers"
                )
            for r in free[n][:k]:
                role[r] = KEEPER
            free[n] = free[n][k:]
        placed = 0
        i = 0
        while placed < g:  # graphers round-robin over the nodes that still have free ranks
            n = node_ids[i % len(node_ids)]
            if free[n]:
                role[free[n].pop(0)] = GRAPHER
                placed += 1
            i += 1
    else:
        for r in range(1, 1 + k):
            role[r] = KEEPER
        for r in range(1 + k, 1 + k + g):
            role[r] = GRAPHER
        free = {n: [r for r in range(1 + k + g, size) if nodes[r] == n] for n in node_ids}
    placed = 0
    i = 0
    while placed < n_spares:  # spares round-robin over the nodes, after the services
        n = node_ids[i % len(node_ids)]
        if free[n]:
            role[free[n].pop(0)] = SPARE
            placed += 1
        i += 1
    if layout.clients and role.count(CLIENT) != layout.clients:
        raise ConfigError(
            f"layout.clients={layout.clients} client ranks were asked for, but {size} ranks with "
            f"{n_keepers} keeper(s), {g} grapher(s) and {n_spares} spare(s) leave {role.count(CLIENT)}; "
            f"launch {layout.clients + size - role.count(CLIENT)} ranks (chronompi record -n N does)"
        )
    keepers = tuple(r for r in range(size) if role[r] == KEEPER)
    graphers = tuple(r for r in range(size) if role[r] == GRAPHER)
    clients = tuple(r for r in range(size) if role[r] == CLIENT)
    if not clients:
        raise ConfigError(
            f"the layout leaves no client rank among {size} ranks; launch more ranks or lower "
            "layout.keepers / layout.graphers"
        )
    keeper_of: dict[int, int] = {}
    turn: dict[int, int] = {}
    for c in clients:  # same node first, round-robin; else round-robin over all keepers
        local = [kr for kr in keepers if nodes[kr] == nodes[c]]
        pool = local or list(keepers)
        key = nodes[c] if local else -1
        i = turn.get(key, 0)
        keeper_of[c] = pool[i % len(pool)]
        turn[key] = i + 1
    spares = tuple(r for r in range(size) if role[r] == SPARE)
    return Roles(tuple(role), 0, keepers, graphers, clients, keeper_of, spares)


def service_ranks(n_clients: int, n_nodes: int, layout: LayoutConfig) -> int:
    """Service ranks (visor, keepers, graphers, spares) a job of ``n_clients`` clients on ``n_nodes`` nodes
    needs: ``chronompi record -n N`` starts N + this many ranks."""
    keepers = layout.keepers * max(1, n_nodes) if layout.per_node else layout.keepers
    return 1 + keepers + layout.graphers + layout.spares
