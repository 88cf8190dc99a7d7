"""A cluster in a box for tests: K nodes made of Linux namespaces (.ci/netns-cluster.sh), Open MPI across them.

Each node has its own network namespace on a private subnet (joined by a bridge in a namespace of its own),
hostname and node-local TMPDIR (a tmpfs); the file system, and so a test's store, is shared. mpirun runs on the
cluster's head node and starts PRRTE's daemons on the nodes through the script's ssh stand-in.

``netns_cluster`` (a fixture in conftest.py) gives a factory: ``cluster = netns_cluster(2)``. The fixture takes
every cluster it made down when the test ends, pass or fail, and checks that none of its namespaces is left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from chronompi.launch import _die_with_parent

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "netns-cluster.sh"
REQUIRE = "CHRONOMPI_REQUIRE_NETNS"  # =1: a machine where namespaces cannot be made fails instead of skipping


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if sys.platform != "linux":
        return f"network namespaces need Linux, not {sys.platform}"
    if shutil.which("bash") is None:
        return "no bash"
    r = subprocess.run([str(SCRIPT), "check"], capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else r.stderr.strip().removeprefix("netns-cluster.sh: ")


def namespaces(prefix: str) -> list[str]:
    """The network namespaces whose names start with ``prefix-``."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix + "-")]


class Cluster:
    """K nodes n1..nK and a head node, up until :meth:`down`."""

    def __init__(self, k: int, state: Path, slots: int = 4) -> None:
        self.k, self.dir, self.slots = k, state, slots
        env = dict(os.environ, CLUSTER_SLOTS=str(slots))
        t0 = time.monotonic()
        r = subprocess.run(
            [str(SCRIPT), "up", str(k), str(state), "--owner", str(os.getpid())],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.up_s = time.monotonic() - t0
        self.prefix = (state / "prefix").read_text().strip() if (state / "prefix").exists() else ""
        if r.returncode != 0:
            self.down()
            raise RuntimeError(f"netns-cluster.sh up {k} failed:\n{r.stdout}{r.stderr}")
        self.nodes = [f"n{i}" for i in range(1, k + 1)]
        self.local = Path((state / "local").read_text().strip())  # every node's TMPDIR (its own tmpfs there)
        self.subnet = (state / "env").read_text().split("btl_tcp_if_include=")[1].split()[0]

    def mpirun_args(self, hostfile: bool = True) -> list[str]:
        """mpirun's options for this cluster: hostfile, ssh stand-in, TCP on the subnet only, no binding."""
        args = (self.dir / "mpirun-args").read_text().split("\n")
        args = [a for a in args if a]
        if not hostfile:
            i = args.index("--hostfile")
            del args[i : i + 2]
        return args

    def on(
        self,
        node: str,
        argv: Sequence[str],
        timeout: float,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``node`` (``head`` for mpirun), in a process group of its own, killed on timeout.

        A timeout kills the group and then every process of the cluster (the nodes' daemons and ranks are
        not in that group), and fails the test with what the command printed.
        """
        p = self.start(node, argv, env, cwd)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            self.down()
            out, err = p.communicate()
            pytest.fail(f"on {node}: {' '.join(argv)} hung for {timeout} s:\n{out}\n{err}")
        return subprocess.CompletedProcess(list(argv), p.returncode, out, err)

    def start(
        self, node: str, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[str]:
        """Start ``argv`` on ``node`` in a process group of its own (it dies with this process), text pipes."""
        return subprocess.Popen(
            [str(SCRIPT), "on", str(self.dir), node, *argv],
            cwd=cwd,
            env=dict(os.environ) if env is None else env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def kill(self, node: str) -> None:
        """Lose ``node``: kill -9 every process in it (its MPI daemon, its ranks), as a node that crashes."""
        subprocess.run([str(SCRIPT), "kill", str(self.dir), node], check=True, capture_output=True, timeout=60)

    def shell(self, node: str, command: str, timeout: float = 60) -> str:
        """``ssh node command`` through the cluster's ssh stand-in; its stdout (it must exit 0)."""
        r = subprocess.run(
            [str(self.dir / "nodeshell"), node, command], capture_output=True, text=True, timeout=timeout
        )
        assert r.returncode == 0, f"{node}: {command}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        return r.stdout

    def down(self) -> None:
        """Kill every process of the cluster and delete its namespaces (idempotent)."""
        subprocess.run([str(SCRIPT), "down", str(self.dir)], capture_output=True, text=True, timeout=120)


def not_prrte() -> str | None:
    """Why the MPI here cannot run on the cluster (its options are PRRTE's: Open MPI 5); None when it can."""
    from chronompi.launch import find_mpirun, mpi_env

    env = mpi_env()
    r = subprocess.run([find_mpirun(env), "--version"], capture_output=True, text=True, env=env, timeout=60)
    m = re.search(r"Open MPI\)? (\d+)\.", r.stdout + r.stderr)
    if m is None or int(m.group(1)) < 5:
        first = (r.stdout + r.stderr).strip().splitlines()[:1]
        return f"the cluster's launch options are Open MPI 5's (PRRTE); this mpirun says {first}"
    return None


def cluster_factory(tmp_path: Path):
    """For the fixture: a maker of clusters and a finalizer that takes them down and checks that nothing is left."""
    other_mpi = not_prrte()
    if other_mpi:
        pytest.skip(other_mpi)
    why = unavailable()
    if why:
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but network namespaces cannot be made here: {why}")
        pytest.skip(f"no cluster in a box here: {why}")
    made: list[Cluster] = []

    def make(k: int, slots: int = 4) -> Cluster:
        c = Cluster(k, tmp_path / f"cluster{len(made)}", slots=slots)
        made.append(c)
        return c

    def finish() -> None:
        left = []
        for c in made:
            c.down()
            left += namespaces(c.prefix)
        assert not left, f"namespaces left after the test: {left}"

    return make, finish
