"""Multi-node jobs on a cluster in a box: nodes made of Linux namespaces, Open MPI over TCP between them.

Each test makes its own nodes (the ``netns_cluster`` fixture, tests/cluster.py, .ci/netns-cluster.sh): every node
has its own hostname, address on a private subnet and node-local TMPDIR (a tmpfs), and the store is on the shared
file system, as on a real cluster. mpirun runs on the cluster's head node and reaches the nodes through an ssh
stand-in. The tests skip where namespaces cannot be made (not root, no ip/unshare/nsenter).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from cluster import Cluster
from storecheck import check_reader, check_store, read_h5

import chronompi

pytestmark = [pytest.mark.mpi, pytest.mark.multinode]

APPS = Path(__file__).parent / "apps"
TIMEOUT = 240  # a loaded 2-core machine: a 2-node job takes ~10 s idle, several times that when loaded


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["CHRONOMPI_TEST_HANG_S"] = str(TIMEOUT - 30)
    e.update(extra)
    return e


def chronompi_mpirun(cluster: Cluster, n: int, *command: str, hostfile: bool = True) -> list[str]:
    return [sys.executable, "-m", "chronompi", "mpirun", "-n", str(n), *cluster.mpirun_args(hostfile), "--", *command]


def node_local_empty(cluster: Cluster) -> None:
    """Staging was emptied on every node: nothing of chronompi is left on a node's local disk."""
    for node in cluster.nodes:
        left = cluster.shell(node, 'ls -A "$TMPDIR"').split()
        assert not [f for f in left if f.startswith("chronompi")], f"{node}: left on its local disk: {left}"


def test_run_per_node_verify_on_two_nodes(netns_cluster, tmp_path: Path) -> None:
    cluster = netns_cluster(2)
    assert cluster.shell("n1", "hostname").strip() == "n1" and cluster.shell("n2", "hostname").strip() == "n2"
    store = tmp_path / "store"
    argv = chronompi_mpirun(
        cluster,
        8,
        "chronompi",
        "run",
        "layout=per_node",
        "client.clock_resync_s=0.05",
        f"storage.root={store}",
        "storage.staging=local",  # (the default on several nodes is the store: see the next test)
        "--verify",
    )
    r = cluster.on("head", argv, timeout=TIMEOUT, env=env(), cwd=tmp_path)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "verify: OK" in r.stdout
    assert "8 / n1, n2" in r.stdout  # ranks / hosts in the summary table
    runs = chronompi.open_store(store).runs()
    assert len(runs) == 1
    run = runs[0]
    assert run["status"] == "complete" and run["hosts"] == ["n1", "n2"]
    assert run["events_logged"] == run["events_stored"] > 0 and run["events_lost"] == 0
    # clocks: a client on the visor's node (n1) reads the visor's clock; one on n2 measures its offset by
    # ping-pong over TCP, at start-up and again every 50 ms (an error bound above 0, several estimates)
    clients = {c["rank"]: c["host"] for c in run["roles"]["client"]}
    clock = run["clock"]
    assert sorted(set(clients.values())) == ["n1", "n2"], clients
    for rank, host in clients.items():
        c = clock[str(rank)]
        if host == "n1":
            assert (c["syncs"], c["offset_ns"], c["error_ns"]) == (0, 0, 0), (rank, c)
        else:
            assert c["syncs"] >= 2 and c["error_ns"] > 0, (rank, c)
    # mpirun fills node by node (4 slots each): a keeper per node means keepers among ranks 0-3 and 4-7
    keepers = run["epochs"][0]["keepers"]
    assert sorted({k // 4 for k in keepers}) == [0, 1], f"keepers {keepers}: not one per node"
    # asked to (storage.staging=local), the graphers staged on their node's local disk (TMPDIR there)
    for g in run["graphers"]:
        assert g["host"] in ("n1", "n2") and g["staging"].startswith(str(cluster.local)), g
    assert not cluster.local.exists() or not any(cluster.local.iterdir()), "staging leaked to the machine's disk"
    node_local_empty(cluster)


def test_store_holds_every_event_once_from_three_nodes(netns_cluster, tmp_path: Path) -> None:
    cluster = netns_cluster(3, slots=3)  # ranks 0-2 on n1, 3-5 on n2, 6-8 on n3
    store, outdir = tmp_path / "store", tmp_path / "out"
    outdir.mkdir()
    spec = {
        "cfg": {
            "layout": {"per_node": True, "graphers": 2},
            "client": {"batch_ms": 10},
            "keeper": {"window_ms": 20},
        },
        "events": 1500,
        "stories": 3,
        "threads": 2,
        "mode": "mixed",
        "sizes": [0, 1, 64, 1000, 4096],
        "sync_every": 50,
    }
    argv = chronompi_mpirun(
        cluster, 9, sys.executable, str(APPS / "record.py"), str(store), str(outdir), json.dumps(spec)
    )
    r = cluster.on("head", argv, timeout=TIMEOUT, env=env(), cwd=tmp_path)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    # visor + 3 keepers + 2 graphers leave 3 clients, each logging from 2 threads
    assert len(list(outdir.glob("expected-*.npy"))) == 3
    n = check_store(store, outdir)
    assert n == 3 * 2 * 1500
    assert check_reader(store) == n
    run = chronompi.open_store(store).runs()[0]
    assert run["status"] == "complete" and run["hosts"] == ["n1", "n2", "n3"]
    assert run["events_logged"] == run["events_stored"] == n
    keepers = run["epochs"][0]["keepers"]
    assert sorted(k // 3 for k in keepers) == [0, 1, 2], f"keepers {keepers}: not one per node"
    hosts = sorted(g["host"] for g in run["graphers"])
    assert len(set(hosts)) == 2, f"graphers not spread over the nodes: {hosts}"
    # by default a job of several nodes commits into the shared store (a synced event outlives any one node)
    assert all(Path(g["staging"]).resolve() == (store / "segments").resolve() for g in run["graphers"]), run
    node_local_empty(cluster)


@pytest.mark.skipif(importlib.util.find_spec("chronompi.record_cli") is None, reason="no chronompi record here")
def test_record_unmodified_solver_across_two_nodes(netns_cluster, tmp_path: Path) -> None:
    cluster = netns_cluster(2)
    store = tmp_path / "store"
    solver = APPS / "unmodified" / "jacobi.py"
    argv = [
        sys.executable,
        "-m",
        "chronompi",
        "record",
        "-n",
        "4",
        f"storage.root={store}",
        "--host",
        "n1:3,n2:3",
        *cluster.mpirun_args(hostfile=False),
        "--",
        "python",
        str(solver),
        "50",
        "10",
    ]
    r = cluster.on("head", argv, timeout=TIMEOUT, env=env(), cwd=tmp_path)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "jacobi: 4 ranks" in r.stdout
    events = read_h5(store)[("jacobi", "log")]
    seen: collections.Counter[tuple[int, int]] = collections.Counter()
    clients = set()
    for _, client, _, payload in events:
        d = json.loads(payload)
        clients.add(client)
        if d["level"] == "INFO":
            words = d["message"].split()  # iteration IT rank R of 4 residual X
            seen[(int(words[1]), int(words[3]))] += 1
    assert len(clients) == 4
    assert seen == collections.Counter({(it, rank): 1 for it in range(10) for rank in range(4)})
    run = chronompi.open_store(store).runs()[0]
    assert run["status"] == "complete" and run["hosts"] == ["n1", "n2"]
    # the clock offset is measured once per node without the visor, by one client, not once per client
    remote = {c["host"] for c in run["roles"]["client"]} - {"n1"}  # the visor is rank 0, on the first host
    assert remote and run["clock_pings"] == 8 * len(remote), (run["clock_pings"], remote)
    assert len({run["clock"][str(c["rank"])]["offset_ns"] for c in run["roles"]["client"] if c["host"] in remote}) == 1
    node_local_empty(cluster)


@pytest.mark.skipif(importlib.util.find_spec("chronompi.record_cli") is None, reason="no chronompi record here")
def test_record_config_reaches_nodes_started_by_ssh(netns_cluster, tmp_path: Path) -> None:
    cluster = netns_cluster(2)
    store = tmp_path / "store"
    argv = [sys.executable, "-m", "chronompi", "record", "-n", "4", f"storage.root={store}", "--host", "n1:3,n2:3"]
    argv += [*cluster.mpirun_args(hostfile=False), "--", "python", str(APPS / "unmodified" / "jacobi.py"), "50", "3"]
    r = cluster.on("head", argv, timeout=TIMEOUT, env=env(CLUSTER_LOGIN_ENV="1"), cwd=tmp_path)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert not (tmp_path / "chronompi-store").exists(), "the ranks wrote to the default store, not storage.root"
    run = chronompi.open_store(store).runs()[0]
    assert run["status"] == "complete" and run["hosts"] == ["n1", "n2"]


@pytest.mark.parametrize(
    "lost, layout, roles, clients",
    [
        ("n1", {}, "visor 0, keeper 1, grapher 2, client 3", 4),  # the visor's and the grapher's node
        ("n2", {}, "keeper 4, client 5-7", 4),  # a keeper's node (a keeper per node by default)
        ("n2", {"per_node": False, "keepers": 1, "graphers": 1}, "client 4-7", 4),  # a node of clients only
        ("n2", {"graphers": 2}, "keeper 4, grapher 5, client 6-7", 3),  # a grapher's node, not the visor's
    ],
    ids=["visor-grapher", "keeper", "clients-only", "grapher"],
)
def test_node_loss_keeps_every_synced_event(
    netns_cluster, tmp_path: Path, lost: str, layout: dict, roles: str, clients: int
) -> None:
    """Every process of one node killed at a random moment while clients log and sync, with the default
    storage settings: the job ends with a non-zero exit and one line naming the node and its ranks, and after
    `chronompi fsck --job-ended` every event covered by a returned sync() is in the store, once, byte for byte.
    (On several nodes staging defaults to the shared store: a sync is confirmed there, not on a node's disk.)"""
    import random
    import subprocess
    import time

    from test_crash import check, check_after_fsck, read_refs
    from test_sync_crash import check_sync_contract

    cluster = netns_cluster(2)
    store, refdir = tmp_path / "store", tmp_path / "ref"
    refdir.mkdir()
    spec = {"cfg": {"service": {"summary": False}, "layout": layout}, "rate": 2000, "sync_every": 100, "seconds": 120}
    argv = chronompi_mpirun(
        cluster, 8, sys.executable, str(APPS / "crashy.py"), str(store), str(refdir), json.dumps(spec)
    )
    proc = cluster.start("head", argv, env=env(), cwd=tmp_path)
    try:
        deadline = time.monotonic() + TIMEOUT / 2
        while sum(p.stat().st_size >= 8 for p in refdir.glob("sync-*.bin")) < clients:  # every client has synced
            assert proc.poll() is None, f"the job ended before the kill:\n{proc.communicate()}"
            assert time.monotonic() < deadline, "the clients did not sync"
            time.sleep(0.05)
        time.sleep(random.uniform(0.2, 2.0))
        t_kill = time.monotonic()
        cluster.kill(lost)
        out, err = proc.communicate(timeout=TIMEOUT / 2)
        ended_s = time.monotonic() - t_kill
    except subprocess.TimeoutExpired:
        cluster.down()
        pytest.fail(f"the job did not end after node {lost} was lost:\n{proc.communicate()}")
    print(f"lost {lost}: the job ended {ended_s:.2f} s later with exit {proc.returncode}")
    assert proc.returncode != 0, out + err
    assert ended_s < 30, f"{ended_s:.1f} s from the loss to the job's end"  # (0.6 s idle; the bar is 10 s)
    said = [ln for ln in err.splitlines() if "chronompi: node" in ln]
    assert len(said) == 1, err
    assert f"node {lost} was lost (ranks there: {roles})" in said[0] and "--job-ended" in said[0], said[0]
    run = chronompi.open_store(store).runs()[0]
    assert run["status"] == "running" and run["nodes"][lost] is not None
    _, before = check(store, refdir, windows_complete=False)  # total order, once, payloads byte for byte
    r = subprocess.run(
        [sys.executable, "-m", "chronompi", "fsck", str(store), "--job-ended"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1: it repaired something (a crashed run)
    after = check_after_fsck(store)
    assert before <= after
    covered, syncs = check_sync_contract(after, refdir)
    assert syncs >= clients and covered > 0
    assert len(after) <= sum(len(x) for x in read_refs(refdir).values())  # nothing that was not logged
    assert chronompi.open_store(store).runs()[0]["status"] == "crashed"


def test_membership_changes_across_nodes(netns_cluster, tmp_path: Path) -> None:
    """Elasticity over TCP: keepers and graphers join from spare ranks on other nodes and leave again while the
    clients log; every event is stored once, in order, byte for byte, through three epochs."""
    cluster = netns_cluster(3, slots=3)  # ranks 0-2 on n1, 3-5 on n2, 6-8 on n3
    store, outdir = tmp_path / "store", tmp_path / "out"
    outdir.mkdir()
    spec = {
        "cfg": {
            "layout": {"per_node": False, "keepers": 1, "graphers": 1, "spares": 2},
            "client": {"batch_ms": 10},
            "keeper": {"window_ms": 20},
            "elastic": {"lead_ms": 100, "auto": False},
            "service": {"summary": False},
        },
        "events": 2000,
        "stories": 2,
        "scale": [[2, 2], [1, 1]],
        "min_seconds": 2.0,
        "rate": 2000,
    }
    argv = chronompi_mpirun(
        cluster, 9, sys.executable, str(APPS / "record.py"), str(store), str(outdir), json.dumps(spec)
    )
    r = cluster.on("head", argv, timeout=TIMEOUT, env=env(), cwd=tmp_path)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    n = check_store(store, outdir)
    assert n >= 4 * 2000 and check_reader(store) == n  # 9 ranks: visor, keeper, grapher, 2 spares, 4 clients
    run = chronompi.open_store(store).runs()[0]
    assert run["status"] == "complete" and run["hosts"] == ["n1", "n2", "n3"]
    assert [(len(e["keepers"]), len(e["graphers"])) for e in run["epochs"]] == [(1, 1), (2, 2), (1, 1)]
    # the members that joined were spares on the other nodes (n1 holds the first keeper and grapher)
    e0, e1 = run["epochs"][0], run["epochs"][1]
    joined = set(e1["keepers"] + e1["graphers"]) - set(e0["keepers"] + e0["graphers"])
    assert len(joined) == 2 and all(r // 3 > 0 for r in joined), run["epochs"]


@pytest.mark.skipif(importlib.util.find_spec("parsl") is None, reason="needs parsl (pip install -e '.[parsl]')")
def test_parsl_pools_on_other_nodes(netns_cluster, tmp_path: Path) -> None:
    """A Parsl workflow whose worker pools run on client ranks of other nodes (chronompi.parsl.serve_pools): the
    driver's interchange is reached over TCP at its node's address; every task's result comes back, and the pools
    on the other nodes recorded their workers' messages."""
    # ranks 0-3 on n1, 4-6 on n2: visor, a keeper per node and a grapher leave 3 clients, the driver and 2 pools
    cluster = netns_cluster(2, slots=4)
    run, store = tmp_path / "run", tmp_path / "store"
    run.mkdir()
    argv = chronompi_mpirun(cluster, 7, sys.executable, str(APPS / "parsl_pools.py"), str(run), str(store), "hostname")
    r = cluster.on("head", argv, timeout=TIMEOUT, env=env(), cwd=tmp_path)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    res = json.loads((run / "result-pools.json").read_text())
    assert res["total"] == sum(i * i for i in range(16)) and res["hub_errors"] == 0
    stats = res["pools"]
    assert len(stats) == 2 and all(s["errors"] == 0 for s in stats.values())
    assert sum(s["counts"]["WORKER_TASK_INFO"] for s in stats.values()) == 2 * 34  # a first and a last per try
    with chronompi.open_store(store) as st:
        assert len(st.replay("parsl", "WORKER_TASK_INFO")) == 2 * 34
    nodes = chronompi.open_store(store).runs()[0]["nodes"]
    assert all("client" in nodes[h] for h in ("n1", "n2")), nodes  # the driver and the pools on both nodes
    assert "n2" in {s["host"] for s in stats.values()}  # a pool on the node the driver is not on
