"""chronompi record's command line, without MPI: what goes to mpirun, to the config and to python."""

from __future__ import annotations

from pathlib import Path

import pytest

from chronompi.embed import program_name
from chronompi.errors import ConfigError
from chronompi.record import parse
from chronompi.record_cli import count_nodes, split_head, split_program


def test_head_splits_record_options_overrides_and_mpirun_options() -> None:
    ns, overrides, mpirun = split_head(
        [
            "-n",
            "8",
            "--output",
            "storage.root=/x",
            "--host",
            "a,b",
            "-x",
            "FOO=bar",
            "layout.keepers=2",
            "--chronicle",
            "c",
        ]
    )
    assert ns.np == 8 and ns.output and ns.chronicle == "c"
    assert overrides == ["storage.root=/x", "layout.keepers=2"]
    assert mpirun == ["--host", "a,b", "-x", "FOO=bar"]  # FOO=bar is -x's value, not a config key


def test_head_leaves_unknown_sections_to_mpirun() -> None:
    _, overrides, mpirun = split_head(["-n", "2", "btl.tcp=1"])
    assert overrides == [] and mpirun == ["btl.tcp=1"]


def test_program_forms(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("")
    assert split_program(["python", str(app), "1", "--x"]) == ([], None, [str(app), "1", "--x"])
    assert split_program(["python3.11", "-u", "-X", "dev", str(app)]) == (["-u", "-X", "dev"], None, [str(app)])
    assert split_program(["/usr/bin/python", "-m", "pkg.mod", "a"]) == ([], "pkg.mod", ["a"])
    assert split_program([str(app)]) == ([], None, [str(app)])


@pytest.mark.parametrize(
    "cmd,says",
    [
        ([], "give the program"),
        (["bash", "x.sh"], "runs Python programs"),
        (["python", "-c", "1"], "-c CODE"),
        (["python", "-m"], "module name"),
        (["python", "--weird", "a.py"], "not supported"),
        (["python", "missing.py"], "not found"),
        (["python"], "give the script"),
    ],
)
def test_program_errors_say_what_to_do(cmd: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        split_program(cmd)


def test_nodes_from_hosts_hostfile_and_scheduler(tmp_path: Path) -> None:
    assert count_nodes([], {}) == 1
    assert count_nodes(["--host", "a:4,b:4,a"], {}) == 2
    assert count_nodes(["--host=a,b,c"], {}) == 3
    hf = tmp_path / "hosts"
    hf.write_text("# nodes\nn1 slots=4\nn2 slots=4\n\nn1\n")
    assert count_nodes(["--hostfile", str(hf)], {}) == 2
    assert count_nodes([], {"SLURM_JOB_NUM_NODES": "16"}) == 16
    with pytest.raises(ConfigError, match="cannot read"):
        count_nodes(["--hostfile", str(tmp_path / "none")], {})


def test_program_name_is_a_valid_chronicle() -> None:
    assert program_name("/a/b/my_solver.py") == "my_solver"
    assert program_name("x", module="pkg.sub") == "pkg.sub"
    assert program_name("/a/-weird name!.py") == "weird_name_"
    assert program_name("") == "program"
    assert len(program_name("x" * 100 + ".py")) == 64


def test_the_per_rank_entry_parses_what_record_builds(capsys: pytest.CaptureFixture[str]) -> None:
    """python -m chronompi.record's own parser (every rank runs it; no argparse): the options record_cli.py
    passes, a program's options after -- left alone, -m MODULE [--] ARGS, and one usage line for a bad one."""
    ns = parse(["--chronicle", "c", "--set", "a.b=1", "--set=x.y=2", "--output", "--no-freeze", "--", "app.py", "-x"])
    assert (ns.chronicle, ns.story, ns.set, ns.output, ns.no_logging, ns.no_freeze) == (
        "c",
        "log",
        ["a.b=1", "x.y=2"],
        True,
        False,
        True,
    )
    assert (ns.module, ns.program) == (None, ["app.py", "-x"])
    assert parse(["--", "app.py", "--chronicle", "z"]).program == ["app.py", "--chronicle", "z"]
    assert parse(["--story=s", "--no-logging", "-m", "pkg.mod", "--", "a", "-m", "b"]).__dict__ == {
        "chronicle": None,
        "story": "s",
        "output": False,
        "no_logging": True,
        "no_freeze": False,
        "set": [],
        "module": "pkg.mod",
        "program": ["a", "-m", "b"],
    }
    for bad, says in (
        (["--bogus", "--", "p.py"], "unknown option '--bogus'"),
        (["--chronicle"], "--chronicle needs a value"),
        ([], "give the program"),
    ):
        with pytest.raises(SystemExit) as exc:
            parse(bad)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 2, err
