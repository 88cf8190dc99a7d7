"""``import chronompi`` does not initialise MPI: only ``session()``/``Client`` and the MPI commands load mpi4py.MPI.

Structural tests (what is in ``sys.modules`` of a fresh interpreter), not timings: the measured start-up
times of the offline commands are in README.md ("Reading: the player").
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def fresh(code: str, cwd: Path | None = None, timeout: float = 60) -> str:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_import_and_open_store_do_not_load_mpi(tmp_path: Path) -> None:
    out = fresh(
        f"""
        import sys, json
        import chronompi
        from chronompi.store.format import init_store
        init_store({str(tmp_path / "s")!r})
        with chronompi.open_store({str(tmp_path / "s")!r}) as st:
            st.chronicles()
        chronompi.Config, chronompi.LogHandler, chronompi.Story, chronompi.ConfigError
        import chronompi.cli, chronompi.store_cli, chronompi.export, chronompi.parsl
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("mpi4py"))))
        """
    )
    assert "mpi4py.MPI" not in json.loads(out)


@pytest.mark.parametrize("argv", [["--version"], ["ls", "STORE"], ["stats", "STORE"], ["fsck", "STORE", "--dry-run"]])
def test_offline_commands_do_not_load_mpi(tmp_path: Path, argv: list[str]) -> None:
    from chronompi.store.format import init_store

    init_store(tmp_path / "s")
    argv = [str(tmp_path / "s") if a == "STORE" else a for a in argv]
    out = fresh(
        f"""
        import sys
        from chronompi.cli import main
        rc = main({argv!r})
        print("MPI", "mpi4py.MPI" in sys.modules, rc)
        """
    )
    assert out.splitlines()[-1] == "MPI False 0"


def test_lazy_names_are_the_real_objects() -> None:
    out = fresh(
        """
        import sys
        import chronompi
        from chronompi.session import last_summary  # the submodule must not shadow the function
        import chronompi.client, chronompi.session
        assert "mpi4py.MPI" in sys.modules
        assert callable(chronompi.session) and chronompi.session is sys.modules["chronompi.session"].session
        assert chronompi.Client is chronompi.client.Client
        assert {"Client", "session"} <= set(dir(chronompi))
        print("ok")
        """
    )
    assert out.strip() == "ok"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import chronompi

        chronompi.nope  # noqa: B018


def test_a_program_that_imports_chronompi_can_launch_mpirun(tmp_path: Path) -> None:
    """Before: ``import chronompi`` ran MPI_Init (a singleton); under Debian's Open MPI 4.1 the OMPI_* variables
    it put in the environment made every mpirun started from that process fail at once."""
    code = tmp_path / "hello.py"
    code.write_text("from mpi4py import MPI\nprint(MPI.COMM_WORLD.Get_size())\n")
    out = fresh(
        f"""
        import os, sys
        import chronompi
        chronompi.open_store
        leaked = sorted(k for k in os.environ if k.startswith(("OMPI_COMM", "PMIX_RANK", "PMI_RANK")))
        from chronompi.launch import run_mpi
        r = run_mpi(2, [sys.executable, {str(code)!r}], timeout=120, capture_output=True)
        print(leaked, r.returncode, r.stdout.split())
        """,
        timeout=150,
    )
    assert out.strip() == "[] 0 ['2', '2']"
