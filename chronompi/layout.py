"""Role assignment: which rank is visor, keeper, grapher, client or spare.

A pure function of the communicator size, the node of every rank and the
layout config (no MPI in here), so every rank computes the same answer and a
bad layout fails on all ranks at once, before any message is sent.

**The default layout** (the rule; ``layout.keepers`` / ``graphers`` = 0 and
``per_node`` unset mean "by the rule", any value given wins): for C clients on
n nodes,

- keepers  = max(n if n > 1 else 1, ceil(C / CLIENTS_PER_KEEPER)), placed one
  (or more, evenly) per node when n > 1;
- graphers = max(1, ceil(C / CLIENTS_PER_GRAPHER)).

The rule is stated in clients; with ``layout.clients`` = 0 (the default) the
clients are "whatever is left", so the count is solved for: C is the largest
number whose services fit, ``C + services(C) <= size``, and any rank left over
is a client too. With ``layout.clients`` = N exactly N ranks are clients, the
services are the rule's for N, and ranks beyond those are spares.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._plain import plain
from .config import LayoutConfig
from .errors import ConfigError

VISOR, KEEPER, GRAPHER, CLIENT, SPARE = "visor", "keeper", "grapher", "client", "spare"
ROLES = (VISOR, KEEPER, GRAPHER, CLIENT, SPARE)

CLIENTS_PER_KEEPER = 8  # the rule (measured: perf/bench_layout.py, docs/architecture.md "Layout")
CLIENTS_PER_GRAPHER = 32


@plain(frozen=True)
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

    def grapher_index(self, rank: int) -> int:
        """A grapher's number in segment names: its place among the layout's graphers, then among the spares."""
        return self.graphers.index(rank) if rank in self.graphers else len(self.graphers) + self.spares.index(rank)


@plain(frozen=True)
class Plan:
    """The counts a layout resolves to (before ranks are picked)."""

    per_node: bool
    keepers: int  # per node when per_node, else in all
    n_keepers: int  # in all
    graphers: int
    spares: int
    clients: int  # 0 in a plan for "the rest" (see plan()); else exactly this many

    @property
    def services(self) -> int:
        """Visor + keepers + graphers + spares."""
        return 1 + self.n_keepers + self.graphers + self.spares


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def rule(n_clients: int, n_nodes: int, layout: LayoutConfig) -> Plan:
    """The services the layout (explicit values, else the rule) gives for ``n_clients`` clients on
    ``n_nodes`` nodes; spares are ``layout.spares`` only."""
    k, g = layout.keepers, layout.graphers
    if k < 0 or g < 0:
        raise ConfigError(
            f"layout.keepers={k} layout.graphers={g}: give counts >= 1, or 0 for the default rule "
            "(a layout needs at least one keeper and one grapher)"
        )
    n = max(1, n_nodes)
    per_node = layout.per_node if layout.per_node is not None else (n > 1 and k == 0)
    if k == 0:
        want = max(n if n > 1 else 1, _ceil(n_clients, CLIENTS_PER_KEEPER))
        k = _ceil(want, n) if per_node else want
    n_keepers = k * n if per_node else k
    if g == 0:
        g = max(1, _ceil(n_clients, CLIENTS_PER_GRAPHER))
    return Plan(per_node, k, n_keepers, g, layout.spares, n_clients)


def service_ranks(n_clients: int, n_nodes: int, layout: LayoutConfig) -> int:
    """How many ranks to launch besides ``n_clients`` clients on ``n_nodes`` nodes: visor + keepers +
    graphers + spares, as :func:`assign_roles` resolves ``layout`` (explicit values, else the rule).

    For a launcher that wants exactly N clients: start ``N + service_ranks(N, nodes, layout)`` ranks
    with ``layout.clients = N``; :func:`assign_roles` then gives exactly N clients and no extra spare,
    provided the ranks do lie on ``n_nodes`` nodes (with a keeper per node, more nodes than guessed
    need more keepers: a ``ConfigError`` names the count; fewer nodes leave the surplus as spares) and,
    with a keeper per node, every node holds at least its keepers besides rank 0. ``layout.clients``
    itself is ignored here."""
    if n_clients < 1:
        raise ConfigError(f"service_ranks(n_clients={n_clients}): a session needs at least 1 client")
    return rule(n_clients, n_nodes, layout).services


def plan(size: int, n_nodes: int, layout: LayoutConfig) -> Plan:
    """The counts for ``size`` ranks on ``n_nodes`` nodes, ``clients`` filled in; a ConfigError when
    they do not fit."""
    if layout.clients > 0:
        p = rule(layout.clients, n_nodes, layout)
        need = p.services + layout.clients
        if size < need:
            raise ConfigError(
                f"layout.clients={layout.clients} needs {need} ranks ({_parts(p)} + "
                f"{layout.clients} clients), but the communicator has {size}; launch {need} ranks "
                f"(mpirun -n {need}) or lower layout.clients (0: every rank left is a client)"
            )
        return Plan(p.per_node, p.keepers, p.n_keepers, p.graphers, p.spares + size - need, layout.clients)
    lo, hi = 0, size  # the largest C >= 1 with C + services(C) <= size (services never shrink as C grows)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid + rule(mid, n_nodes, layout).services <= size:
            lo = mid
        else:
            hi = mid - 1
    if lo < 1:
        p = rule(1, n_nodes, layout)
        need = p.services + 1
        raise ConfigError(
            f"a session with {_what(p, layout, n_nodes)} needs at least {need} ranks ({_parts(p)} + at "
            f"least 1 client), but the communicator has {size}; launch more ranks (mpirun -n {need}) or lower "
            "layout.keepers / layout.graphers / layout.spares"
        )
    p = rule(lo, n_nodes, layout)
    return Plan(p.per_node, p.keepers, p.n_keepers, p.graphers, p.spares, size - p.services)


def _what(p: Plan, layout: LayoutConfig, n_nodes: int) -> str:
    keepers = f"{p.keepers} keeper(s) per node on {n_nodes} node(s)" if p.per_node else f"{p.n_keepers} keeper(s)"
    return f"{keepers} and {p.graphers} grapher(s)"


def _parts(p: Plan) -> str:
    return f"1 visor + {p.n_keepers} keepers + {p.graphers} graphers + {p.spares} spares"


def assign_roles(size: int, layout: LayoutConfig, node_of: Sequence[int] | None = None) -> Roles:
    """Assign a role to each of ``size`` ranks; ``node_of[r]`` is the node index of rank r.

    Rank 0 is the visor. Flat: the next ranks are the keepers, then the graphers. Per node: every
    node's lowest free ranks are its keepers, the graphers go round-robin over the nodes. Spares come
    next, round-robin over the nodes; every other rank is a client, using a keeper of its own node
    when there is one (round-robin), else any keeper (round-robin)."""
    nodes = list(node_of) if node_of is not None else [0] * size
    if len(nodes) != size:
        raise ConfigError(f"node_of has {len(nodes)} entries for {size} ranks")
    node_ids = sorted(set(nodes)) or [0]
    p = plan(size, len(node_ids), layout)
    k, g = p.keepers, p.graphers
    role = [CLIENT] * size
    role[0] = VISOR
    free = {n: [r for r in range(size) if nodes[r] == n and r != 0] for n in node_ids}
    if p.per_node:
        for n in node_ids:
            if len(free[n]) < k:
                raise ConfigError(
                    f"node {n} has {len(free[n])} free rank(s) but {k} keeper(s) per node were asked for "
                    f"(layout.keepers={layout.keepers}, 0: by the rule); start more ranks per node or set "
                    "layout.keepers (and layout.per_node=false to place them anywhere)"
                )
            for r in free[n][:k]:
                role[r] = KEEPER
            free[n] = free[n][k:]
        _round_robin(role, free, node_ids, g, GRAPHER)
    else:
        for r in range(1, 1 + k):
            role[r] = KEEPER
        for r in range(1 + k, 1 + k + g):
            role[r] = GRAPHER
        free = {n: [r for r in range(1 + k + g, size) if nodes[r] == n] for n in node_ids}
    _round_robin(role, free, node_ids, p.spares, SPARE)  # spares after the services
    keepers = tuple(r for r in range(size) if role[r] == KEEPER)
    graphers = tuple(r for r in range(size) if role[r] == GRAPHER)
    clients = tuple(r for r in range(size) if role[r] == CLIENT)
    assert len(clients) == size - p.services >= 1, (p, size)
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


def _round_robin(role: list[str], free: dict[int, list[int]], node_ids: list[int], count: int, what: str) -> None:
    """Give ``what`` to ``count`` free ranks, one node after the other (the counts were checked to fit)."""
    placed = i = 0
    while placed < count:
        n = node_ids[i % len(node_ids)]
        if free[n]:
            role[free[n].pop(0)] = what
            placed += 1
        i += 1


def autoscaler_on(auto: bool | None, roles: Roles) -> bool:
    """``elastic.auto`` resolved: as given, or (unset) on exactly when the layout has spares."""
    return bool(roles.spares) if auto is None else auto


def rank_ranges(ranks: Sequence[int]) -> str:
    """``[3, 5, 6, 7]`` -> ``"3,5-7"``."""
    runs: list[list[int]] = []
    for r in sorted(ranks):
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def placement(hosts: Sequence[str], roles: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each host's ranks by role, as ranges: ``{"n2": {"keeper": "4", "client": "5-7"}}`` (the run record)."""
    by: dict[str, dict[str, list[int]]] = {}
    for rank, (host, role) in enumerate(zip(hosts, roles, strict=True)):
        by.setdefault(host, {}).setdefault(role, []).append(rank)
    return {
        h: {role: rank_ranges(rs) for role, rs in sorted(d.items(), key=lambda kv: kv[1][0])} for h, d in by.items()
    }
