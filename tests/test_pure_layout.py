"""Role assignment (chronompi.layout.assign_roles): pure, no MPI."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chronompi.config import LayoutConfig
from chronompi.errors import ConfigError
from chronompi.layout import (
    CLIENT,
    CLIENTS_PER_GRAPHER,
    CLIENTS_PER_KEEPER,
    GRAPHER,
    KEEPER,
    ROLES,
    SPARE,
    VISOR,
    assign_roles,
    autoscaler_on,
    service_ranks,
)


def _check_consistent(r, size: int) -> None:
    """Invariants every Roles must satisfy, whatever the layout."""
    assert len(r.role) == size
    assert all(x in ROLES for x in r.role)
    assert r.visor == 0 and r.role[0] == VISOR
    assert r.role.count(VISOR) == 1
    assert r.keepers == tuple(i for i in range(size) if r.role[i] == KEEPER)
    assert r.graphers == tuple(i for i in range(size) if r.role[i] == GRAPHER)
    assert r.clients == tuple(i for i in range(size) if r.role[i] == CLIENT)
    # every rank has exactly one role: the role lists partition range(size)
    everyone = [r.visor, *r.keepers, *r.graphers, *r.clients]
    assert sorted(everyone) == list(range(size))
    assert set(r.keeper_of) == set(r.clients)
    assert all(k in r.keepers for k in r.keeper_of.values())
    assert sorted(c for k in r.keepers for c in r.clients_of(k)) == list(r.clients)


# -- counts, flat layout ------------------------------------------------------------


def test_default_layout_on_one_node() -> None:
    r = assign_roles(5, LayoutConfig())
    assert r.role == (VISOR, KEEPER, GRAPHER, CLIENT, CLIENT)
    assert r.visor == 0
    assert r.keepers == (1,)
    assert r.graphers == (2,)
    assert r.clients == (3, 4)
    assert r.keeper_of == {3: 1, 4: 1}
    assert r.clients_of(1) == (3, 4)
    _check_consistent(r, 5)


def test_flat_layout_counts_and_order() -> None:
    r = assign_roles(10, LayoutConfig(keepers=2, graphers=3))
    assert r.keepers == (1, 2)
    assert r.graphers == (3, 4, 5)
    assert r.clients == (6, 7, 8, 9)
    # one node: round-robin over both keepers
    assert r.keeper_of == {6: 1, 7: 2, 8: 1, 9: 2}
    assert r.clients_of(1) == (6, 8)
    assert r.clients_of(2) == (7, 9)
    _check_consistent(r, 10)


def test_smallest_session_has_one_client() -> None:
    r = assign_roles(4, LayoutConfig())
    assert r.clients == (3,)
    assert r.keeper_of == {3: 1}


def test_node_of_none_means_one_node() -> None:
    a = assign_roles(9, LayoutConfig(keepers=2, graphers=2))
    b = assign_roles(9, LayoutConfig(keepers=2, graphers=2), [0] * 9)
    assert a == b


def test_node_of_length_mismatch() -> None:
    with pytest.raises(ConfigError, match="node_of has 3 entries for 5 ranks"):
        assign_roles(5, LayoutConfig(), [0, 0, 0])


# -- client -> keeper mapping -----------------------------------------------------------


def test_flat_clients_prefer_same_node_keeper() -> None:
    # keepers are ranks 1 (node 0) and 2 (node 1); grapher is rank 3 (node 1)
    nodes = [0, 0, 1, 1, 0, 0, 1, 1, 1]
    r = assign_roles(9, LayoutConfig(keepers=2, graphers=1), nodes)
    assert r.keepers == (1, 2)
    assert r.clients == (4, 5, 6, 7, 8)
    assert r.keeper_of == {4: 1, 5: 1, 6: 2, 7: 2, 8: 2}


def test_flat_clients_without_local_keeper_round_robin_over_all() -> None:
    # keepers 1, 2 on node 0; clients on node 1 have no local keeper
    nodes = [0, 0, 0, 0, 1, 1, 1, 1, 1]
    r = assign_roles(9, LayoutConfig(keepers=2, graphers=1), nodes)
    assert r.keepers == (1, 2)
    assert r.clients == (4, 5, 6, 7, 8)
    assert [r.keeper_of[c] for c in r.clients] == [1, 2, 1, 2, 1]


def test_flat_mixed_local_and_remote_round_robins_are_independent() -> None:
    # keeper 1 on node 0, keeper 2 on node 1; node 2 has no keeper
    nodes = [0, 0, 1, 0, 2, 1, 2, 0, 2]
    r = assign_roles(9, LayoutConfig(keepers=2, graphers=1), nodes)
    assert r.keepers == (1, 2)
    assert r.graphers == (3,)
    assert r.clients == (4, 5, 6, 7, 8)
    assert r.keeper_of[5] == 2  # node 1: local keeper
    assert r.keeper_of[7] == 1  # node 0: local keeper
    assert [r.keeper_of[c] for c in (4, 6, 8)] == [1, 2, 1]  # node 2: round-robin over all


# -- per_node ---------------------------------------------------------------------


def test_per_node_places_keepers_on_every_node() -> None:
    nodes = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    r = assign_roles(12, LayoutConfig(keepers=1, graphers=2, per_node=True), nodes)
    _check_consistent(r, 12)
    # lowest free rank of every node (rank 0 is the visor)
    assert r.keepers == (1, 4, 8)
    # graphers round-robin over the nodes: one on node 0, one on node 1
    assert r.graphers == (2, 5)
    assert sorted(nodes[g] for g in r.graphers) == [0, 1]
    for c in r.clients:
        assert nodes[r.keeper_of[c]] == nodes[c]
    assert r.clients_of(1) == (3,)
    assert r.clients_of(4) == (6, 7)
    assert r.clients_of(8) == (9, 10, 11)


def test_per_node_two_keepers_per_node_round_robin_locally() -> None:
    nodes = [0] * 6 + [1] * 6
    r = assign_roles(12, LayoutConfig(keepers=2, graphers=1, per_node=True), nodes)
    _check_consistent(r, 12)
    assert r.keepers == (1, 2, 6, 7)
    assert r.graphers == (3,)
    assert r.clients == (4, 5, 8, 9, 10, 11)
    assert r.keeper_of == {4: 1, 5: 2, 8: 6, 9: 7, 10: 6, 11: 7}


def test_per_node_interleaved_ranks() -> None:
    # ranks placed round-robin over the nodes (mpirun --map-by node)
    nodes = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]
    r = assign_roles(12, LayoutConfig(keepers=1, graphers=3, per_node=True), nodes)
    _check_consistent(r, 12)
    assert r.keepers == (1, 2, 3)
    assert sorted(nodes[k] for k in r.keepers) == [0, 1, 2]
    assert sorted(nodes[g] for g in r.graphers) == [0, 1, 2]
    for c in r.clients:
        assert nodes[r.keeper_of[c]] == nodes[c]


def test_per_node_non_contiguous_node_ids() -> None:
    nodes = [7, 7, 7, 42, 42, 42]
    r = assign_roles(6, LayoutConfig(keepers=1, graphers=1, per_node=True), nodes)
    _check_consistent(r, 6)
    assert r.keepers == (1, 3)
    for c in r.clients:
        assert nodes[r.keeper_of[c]] == nodes[c]


# -- errors --------------------------------------------------------------------------


def _need(match_need: int) -> str:
    return rf"needs at least {match_need} ranks"


def test_too_few_ranks_names_the_needed_count() -> None:
    with pytest.raises(ConfigError, match=_need(4)) as ei:
        assign_roles(3, LayoutConfig())
    msg = str(ei.value)
    assert "has 3" in msg
    assert "mpirun -n 4" in msg


def test_no_room_for_a_client_names_the_needed_count() -> None:
    # 1 visor + 2 keepers + 2 graphers = 5 ranks leave no client
    with pytest.raises(ConfigError, match=_need(6)) as ei:
        assign_roles(5, LayoutConfig(keepers=2, graphers=2))
    assert "client" in str(ei.value)


def test_more_keepers_than_ranks() -> None:
    with pytest.raises(ConfigError, match=_need(13)) as ei:
        assign_roles(5, LayoutConfig(keepers=10, graphers=1))
    assert "10 keeper(s)" in str(ei.value)


@pytest.mark.parametrize(("keepers", "graphers"), [(-1, 1), (1, -1), (-1, -2)])
def test_negative_keepers_or_graphers(keepers: int, graphers: int) -> None:
    with pytest.raises(ConfigError, match=f"layout.keepers={keepers} layout.graphers={graphers}"):
        assign_roles(16, LayoutConfig(keepers=keepers, graphers=graphers))


def test_per_node_needs_keepers_on_every_node() -> None:
    # 3 nodes x 2 keepers + 1 grapher + visor + client = 9
    nodes = [0, 0, 0, 1, 1, 1, 2, 2]
    with pytest.raises(ConfigError, match=_need(9)) as ei:
        assign_roles(8, LayoutConfig(keepers=2, graphers=1, per_node=True), nodes)
    assert "per node on 3 node(s)" in str(ei.value)


def test_per_node_with_too_few_ranks_on_one_node() -> None:
    # enough ranks overall (need 1 + 2*2 + 1 + 1 = 7) but node 1 has a single rank
    nodes = [0, 0, 0, 0, 0, 0, 0, 1]
    with pytest.raises(ConfigError) as ei:
        assign_roles(8, LayoutConfig(keepers=2, graphers=1, per_node=True), nodes)
    msg = str(ei.value)
    assert "node 1 has 1 free rank(s)" in msg
    assert "layout.keepers=2" in msg


def test_per_node_visor_node_counts_rank_zero_as_taken() -> None:
    # node 0 holds only the visor, so it has no free rank for its keeper
    nodes = [0, 1, 1, 1, 1]
    with pytest.raises(ConfigError, match="node 0 has 0 free rank"):
        assign_roles(5, LayoutConfig(keepers=1, graphers=1, per_node=True), nodes)


# -- property-based ---------------------------------------------------------------


@st.composite
def layouts(draw):
    per_node = draw(st.booleans())
    n_nodes = draw(st.integers(1, 4))
    k = draw(st.integers(1, 3))
    g = draw(st.integers(1, 4))
    size = draw(st.integers(1, 40))
    node_of = draw(st.lists(st.integers(0, n_nodes - 1), min_size=size, max_size=size))
    return size, LayoutConfig(keepers=k, graphers=g, per_node=per_node), node_of


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_assign_roles_invariants(case) -> None:
    size, layout, node_of = case
    k, g = layout.keepers, layout.graphers
    n_nodes = len(set(node_of))
    n_keepers = k * n_nodes if layout.per_node else k
    need = 1 + n_keepers + g + 1
    per_node_short = layout.per_node and any(
        sum(1 for r in range(1, size) if node_of[r] == n) < k for n in set(node_of)
    )
    if size < need or per_node_short:
        with pytest.raises(ConfigError) as ei:
            assign_roles(size, layout, node_of)
        if size < need:
            assert f"needs at least {need} ranks" in str(ei.value)
        else:
            assert re.search(r"node \d+ has \d+ free rank", str(ei.value))
        return
    r = assign_roles(size, layout, node_of)
    _check_consistent(r, size)
    assert len(r.keepers) == n_keepers
    assert len(r.graphers) == g
    assert len(r.clients) == size - 1 - n_keepers - g >= 1
    if layout.per_node:
        per = Counter(node_of[x] for x in r.keepers)
        assert per == {n: k for n in set(node_of)}
        # keepers are the lowest non-visor ranks of their node
        for n in set(node_of):
            lowest = [x for x in range(1, size) if node_of[x] == n][:k]
            assert tuple(x for x in r.keepers if node_of[x] == n) == tuple(lowest)
    else:
        assert r.keepers == tuple(range(1, 1 + k))
        assert r.graphers == tuple(range(1 + k, 1 + k + g))
    # same-node keeper first; balanced round-robin within each pool
    pools: dict[object, list[int]] = {}
    for c in r.clients:
        local = [x for x in r.keepers if node_of[x] == node_of[c]]
        if local:
            assert r.keeper_of[c] in local
            pools.setdefault(node_of[c], []).append(r.keeper_of[c])
        else:
            pools.setdefault("remote", []).append(r.keeper_of[c])
    for key, chosen in pools.items():
        pool = [x for x in r.keepers if key == "remote" or node_of[x] == key]
        assert chosen == [pool[i % len(pool)] for i in range(len(chosen))]
    # a pure function: the same inputs give the same answer (every rank agrees)
    assert assign_roles(size, layout, list(node_of)) == r


@settings(max_examples=100, deadline=None)
@given(st.integers(4, 64), st.integers(1, 3), st.integers(1, 3))
def test_flat_single_node_sizes(size: int, k: int, g: int) -> None:
    assume(size >= k + g + 2)
    r = assign_roles(size, LayoutConfig(keepers=k, graphers=g))
    _check_consistent(r, size)
    loads = Counter(r.keeper_of.values())
    if len(r.clients) >= k:
        assert set(loads) == set(r.keepers)  # no idle keeper
    else:
        assert set(loads) <= set(r.keepers)
    assert max(loads.values()) - min(loads.values()) <= 1


# -- the default rule (layout.keepers / graphers = 0, per_node unset) ---------------------------------------------


def _blocks(size: int, n_nodes: int) -> list[int]:
    """Ranks filled node by node (mpirun's default --map-by slot over equal nodes)."""
    return [r * n_nodes // size for r in range(size)]


@pytest.mark.parametrize(
    ("size", "n_nodes", "keepers", "graphers", "clients"),
    [
        (4, 1, 1, 1, 1),  # the smallest session
        (8, 1, 1, 1, 5),  # `chronompi mpirun -n 8 chronompi run`: the README's layout
        (11, 1, 1, 1, 8),  # 8 clients: still one keeper
        (12, 1, 1, 1, 9),  # 9 clients would need a 2nd keeper, which leaves 8: the rank left over is a client
        (13, 1, 2, 1, 9),
        (64, 1, 7, 2, 54),  # 54 clients: ceil(54/8) = 7 keepers, ceil(54/32) = 2 graphers
        (128, 1, 14, 4, 109),
        (8, 2, 2, 1, 4),  # two nodes: a keeper on each
        (64, 2, 8, 2, 53),  # the rule's 7 keepers, rounded up to 4 per node
        (64, 4, 8, 2, 53),  # 2 per node
        (64, 8, 8, 2, 53),  # one per node
    ],
)
def test_rule_table(size: int, n_nodes: int, keepers: int, graphers: int, clients: int) -> None:
    nodes = _blocks(size, n_nodes)
    r = assign_roles(size, LayoutConfig(), nodes)
    _check_consistent(r, size)
    assert (len(r.keepers), len(r.graphers), len(r.clients), r.spares) == (keepers, graphers, clients, ())
    if n_nodes > 1:  # a keeper per node, each the same count, every client on its own node's keeper
        assert Counter(nodes[k] for k in r.keepers) == {n: keepers // n_nodes for n in range(n_nodes)}
        assert all(nodes[r.keeper_of[c]] == nodes[c] for c in r.clients)
    else:
        assert r.keepers == tuple(range(1, 1 + keepers))


def test_rule_grows_with_the_ranks_and_keeps_keepers_loaded_evenly() -> None:
    before = (1, 1)
    for size in range(4, 400):
        r = assign_roles(size, LayoutConfig())
        k, g, c = len(r.keepers), len(r.graphers), len(r.clients)
        assert (k, g) >= before and k >= before[0] and g >= before[1], size  # never shrinks as ranks are added
        before = (k, g)
        assert c <= CLIENTS_PER_KEEPER * k + 2 and c > CLIENTS_PER_KEEPER * (k - 1), (size, k, c)
        assert c <= CLIENTS_PER_GRAPHER * g + 2 and c > CLIENTS_PER_GRAPHER * (g - 1), (size, g, c)
        assert max(Counter(r.keeper_of.values()).values()) <= CLIENTS_PER_KEEPER + 2


# -- explicit values win ------------------------------------------------------------------------------------------


def test_explicit_counts_win_over_the_rule() -> None:
    r = assign_roles(64, LayoutConfig(keepers=1, graphers=1))
    assert (len(r.keepers), len(r.graphers), len(r.clients)) == (1, 1, 61)
    r = assign_roles(64, LayoutConfig(keepers=2))  # graphers still by the rule: ceil(59 / 32) = 2
    assert (len(r.keepers), len(r.graphers), len(r.clients)) == (2, 2, 59)
    r = assign_roles(64, LayoutConfig(graphers=1))  # keepers by the rule: ceil(55 / 8) = 7
    assert (len(r.keepers), len(r.graphers), len(r.clients)) == (7, 1, 55)


def test_explicit_per_node_wins() -> None:
    nodes = _blocks(64, 2)
    flat = assign_roles(64, LayoutConfig(per_node=False), nodes)  # the rule's count, placed as ranks 1..k
    assert flat.keepers == tuple(range(1, 8)) and len(flat.graphers) == 2
    one_node = assign_roles(64, LayoutConfig(per_node=True), [0] * 64)
    assert one_node.keepers == tuple(range(1, 8))
    # explicit keepers on several nodes keep their meaning: that many in all, unless per_node=true
    assert assign_roles(64, LayoutConfig(keepers=1), nodes).keepers == (1,)
    assert len(assign_roles(64, LayoutConfig(keepers=1, per_node=True), nodes).keepers) == 2


# -- layout.clients: exactly N clients -----------------------------------------------------------------------------


def test_clients_exact_and_extra_ranks_become_spares() -> None:
    r = assign_roles(8, LayoutConfig(clients=5))
    assert (len(r.keepers), len(r.graphers), len(r.clients), r.spares) == (1, 1, 5, ())
    r = assign_roles(10, LayoutConfig(clients=5))  # 2 ranks beyond 1 + 1 + 1 + 5: spares
    _check_consistent_with_spares(r, 10)
    assert (len(r.clients), r.spares) == (5, (3, 4))
    r = assign_roles(11, LayoutConfig(clients=5, spares=1))
    assert (len(r.clients), len(r.spares)) == (5, 3)
    r = assign_roles(64, LayoutConfig(clients=54))  # the rule for 54 clients: 7 + 2
    assert (len(r.keepers), len(r.graphers), len(r.clients), r.spares) == (7, 2, 54, ())
    r = assign_roles(64, LayoutConfig(clients=40))  # the rule for 40: 5 + 2; 64 - 48 = 16 spares
    assert (len(r.keepers), len(r.graphers), len(r.clients), len(r.spares)) == (5, 2, 40, 16)


def _check_consistent_with_spares(r, size: int) -> None:
    everyone = [r.visor, *r.keepers, *r.graphers, *r.clients, *r.spares]
    assert sorted(everyone) == list(range(size))
    assert r.spares == tuple(i for i in range(size) if r.role[i] == SPARE)


def test_clients_more_than_the_ranks_allow() -> None:
    with pytest.raises(ConfigError) as ei:
        assign_roles(60, LayoutConfig(clients=54))
    msg = str(ei.value)
    assert "layout.clients=54 needs 64 ranks" in msg and "has 60" in msg
    assert "1 visor + 7 keepers + 2 graphers + 0 spares + 54 clients" in msg
    assert "mpirun -n 64" in msg and "lower layout.clients" in msg


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 300),
    st.integers(1, 4),
    st.sampled_from([LayoutConfig(), LayoutConfig(keepers=1, graphers=1), LayoutConfig(keepers=2, per_node=True)]),
    st.integers(0, 3),
    st.integers(0, 5),
)
def test_service_ranks_gives_exactly_n_clients(
    n: int, n_nodes: int, base: LayoutConfig, spares: int, extra: int
) -> None:
    """A launcher starts N + service_ranks(N, nodes, layout) ranks with layout.clients = N: exactly N clients;
    ranks beyond that become spares."""
    layout = dataclasses.replace(base, spares=spares)
    s = service_ranks(n, n_nodes, layout)
    size = n + s + extra
    with_clients = dataclasses.replace(layout, clients=n)
    r = assign_roles(size, with_clients, _blocks(size, n_nodes))
    _check_consistent_with_spares(r, size)
    assert len(r.clients) == n
    assert len(r.spares) == spares + extra
    assert 1 + len(r.keepers) + len(r.graphers) + spares == s
    if extra == 0 and layout.keepers == 0 and layout.graphers == 0:  # the same services as the rule gives N + S ranks
        r2 = assign_roles(size, dataclasses.replace(layout), _blocks(size, n_nodes))
        assert (r2.keepers, r2.graphers, len(r2.clients)) == (r.keepers, r.graphers, n)
    if size > 1:
        with pytest.raises(ConfigError, match=f"layout.clients={n} needs {n + s} ranks"):
            assign_roles(n + s - 1, with_clients, _blocks(n + s - 1, n_nodes))


def test_service_ranks_examples() -> None:
    assert service_ranks(5, 1, LayoutConfig()) == 3
    assert service_ranks(54, 1, LayoutConfig()) == 10
    assert service_ranks(61, 1, LayoutConfig(keepers=1, graphers=1)) == 3
    assert service_ranks(4, 2, LayoutConfig()) == 4  # a keeper on each node
    assert service_ranks(5, 1, LayoutConfig(spares=2)) == 5
    with pytest.raises(ConfigError, match="at least 1 client"):
        service_ranks(0, 1, LayoutConfig())


# -- errors and the autoscaler's default ----------------------------------------------------------------------------


def test_rule_too_few_ranks() -> None:
    with pytest.raises(ConfigError, match=_need(4)):
        assign_roles(3, LayoutConfig())
    with pytest.raises(ConfigError, match=_need(5)) as ei:  # a keeper on each of 2 nodes
        assign_roles(4, LayoutConfig(), [0, 0, 1, 1])
    assert "1 keeper(s) per node on 2 node(s)" in str(ei.value)


def test_rule_per_node_on_a_node_without_room() -> None:
    with pytest.raises(ConfigError, match="node 0 has 0 free rank") as ei:
        assign_roles(9, LayoutConfig(), [0, 1, 1, 1, 1, 1, 1, 1, 1])
    assert "layout.keepers" in str(ei.value) and "per_node=false" in str(ei.value)
    assign_roles(9, LayoutConfig(per_node=False), [0, 1, 1, 1, 1, 1, 1, 1, 1])  # the way out it names


def test_autoscaler_default_follows_the_spares() -> None:
    with_spares = assign_roles(10, LayoutConfig(clients=5))
    without = assign_roles(10, LayoutConfig())
    assert autoscaler_on(None, with_spares) is True and autoscaler_on(None, without) is False
    assert autoscaler_on(False, with_spares) is False and autoscaler_on(True, without) is True
