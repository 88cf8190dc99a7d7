"""No silent hang: a client stuck in an MPI call on a communicator that includes the service ranks
(``comm = MPI.COMM_WORLD`` kept from before the session) ends the job in time, with one line naming
the call and the remedy, after everything the clients logged is in the store. A legit long wait on
``client.comm`` is never flagged.

Real mpirun jobs of tests/apps/wrong_comm.py; ``service.hang_check_s`` is lowered to 3 s through
$CHRONOMPI_OVERRIDES (the program does not set it), the jobs' timeouts are generous (loaded machine).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from conftest import APPS, manifest, mpirun

import chronompi

sys.path.insert(0, str(APPS))
from wrong_comm import N_EVENTS, payload  # noqa: E402

pytestmark = pytest.mark.mpi

HANG_S = 3
ENV = {"CHRONOMPI_OVERRIDES": f"service.hang_check_s={HANG_S}"}
LINE = "includes chronompi's service ranks"


def call_line(text: str) -> int:
    """The line of ``text`` in wrong_comm.py (the message must name it)."""
    lines = (APPS / "wrong_comm.py").read_text().splitlines()
    return next(i for i, ln in enumerate(lines, 1) if ln.strip() == text)


def stored(store: Path, clients: int) -> dict[int, list[bytes]]:
    out = {}
    with chronompi.open_store(store) as st:
        assert sorted(st.stories("c")) == sorted(f"s{r}" for r in range(clients))
        for r in range(clients):
            ev = st.replay("c", f"s{r}")
            assert len(set(ev["client"].tolist())) == 1
            assert ev["seq"].tolist() == list(range(len(ev))), "a client's events are missing or doubled"
            out[r] = ev["payload"].tolist()
    return out


@pytest.mark.parametrize(
    "mode, n, call",
    [("world", 5, "comm.Barrier()"), ("recv", 6, "comm.recv(source=0, tag=7)")],
)
def test_wrong_communicator_ends_the_job_with_one_message(store: Path, mode: str, n: int, call: str) -> None:
    r = mpirun(n, "wrong_comm.py", str(store), mode, timeout=180, check=False, env=ENV)
    ended = time.time()
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    starts = [float(m) for m in re.findall(r"HANG-START \d+ ([\d.]+)", r.stdout)]
    assert len(starts) == n - 3, out
    assert ended - max(starts) < 60, f"the hang lasted {ended - max(starts):.1f} s"
    assert r.stderr.count(LINE) == 1, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if LINE in ln)
    where = f"wrong_comm.py:{call_line(call)}"
    for want in (call, where, "0 (visor), 1 (keeper), 2 (grapher)", "client.comm", "chronompi record"):
        assert want in line, line
    # every event logged before the hang, exactly once, byte for byte
    got = stored(store, n - 3)
    for rank in range(n - 3):
        assert got[rank] == [payload(rank, i) for i in range(N_EVENTS)]
    m = manifest(store)
    assert m["status"] == "aborted"
    assert m["reason"]["hang"]["where"].endswith(where) and m["reason"]["hang"]["call"] == call


def test_slow_client_on_client_comm_is_not_a_hang(store: Path) -> None:
    """Client 0 sleeps 2 x hang_check_s while the others wait for it in client.comm.Barrier()."""
    n = 6
    r = mpirun(n, "wrong_comm.py", str(store), "slow", str(2 * HANG_S), timeout=180, env=ENV)
    assert r.returncode == 0
    assert LINE not in r.stderr and "blocked for" not in r.stderr, r.stderr
    got = stored(store, n - 3)
    for rank in range(n - 3):
        assert got[rank] == [payload(rank, i) for i in range(N_EVENTS)] + [b"after"]
    assert manifest(store)["status"] == "complete"
