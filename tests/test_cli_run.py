"""``chronompi run --help`` / ``--cfg job``, ``chronompi run`` without mpirun, ``chronompi --help`` (no MPI job)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chronompi.cli import main

CONF = Path(__file__).resolve().parents[1] / "chronompi" / "conf"


def options(group: str) -> str:
    return ", ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_run_help_lists_groups_keys_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "run", "--help")
    assert rc == 0 and err == ""
    assert "usage: chronompi mpirun -n N chronompi run" in out
    assert "== Configuration groups ==" in out and "== Config ==" in out  # Hydra's help layout
    for group in ("layout", "storage", "workload"):
        assert f"\n{group}: {options(group)}\n" in out
    assert f"\n+experiment: {options('experiment')}\n" in out and "million" in options("experiment")
    # every key of every section with its default, as YAML
    for section, key, default in [
        ("layout", "keepers", "0"),
        ("layout", "per_node", "null"),
        ("elastic", "auto", "null"),
        ("client", "batch_ms", "50.0"),
        ("keeper", "window_ms", "100.0"),
        ("storage", "root", "chronompi-store"),
        ("storage", "fsync", "sync"),
        ("workload", "events", "20000"),
    ]:
        block = out.split(f"\n{section}:\n", 1)[1]
        assert re.search(rf"^  {key}: {re.escape(default)}$", block, re.M), (section, key)


def test_run_help_and_cfg_job_show_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "run", "--help", "layout=wide", "workload.events=7")
    assert rc == 0 and "with layout=wide workload.events=7" in out
    assert "\n  keepers: 2\n" in out and "\n  events: 7\n" in out
    rc, out, _ = cli(capsys, "run", "--cfg", "job", "+experiment=million")
    assert rc == 0 and out.startswith("layout:\n") and "\n  events: 200000\n" in out and "==" not in out
    rc, out, err = cli(capsys, "run", "--help", "layout=nope")
    assert rc == 2 and out == "" and "layout=nope: no such layout" in err


def test_run_without_mpirun_says_chronompi_mpirun(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "chronompi"
    if not exe.exists():
        pytest.skip("the chronompi console script is not installed (pip install -e .)")
    r = subprocess.run(
        [str(exe), "run", "workload.events=10"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr
    assert "chronompi mpirun -n 8 chronompi run" in r.stderr and "at least 4 ranks" in r.stderr
    assert not (tmp_path / "chronompi-store").exists()  # refused before anything was created


def test_top_level_help_has_no_markup(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "--help")
    assert rc == 0 and out.startswith("chronompi: ")
    for markup in ("``", ":class:", ":func:", ":meth:", "\n.. "):  # RST literals, roles, directives
        assert markup not in out
