"""Bad input: clear errors on every rank, nothing already recorded lost, no hangs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import APPS, manifest, mpirun, rank_lines

import chronompi

pytestmark = pytest.mark.mpi

BAD_NAMES = ["../x", "a/b", "", "x" * 65, "bad name", "caf\u00e9", ".hidden", "..", "-dash"]


def test_bad_input_in_a_session(store: Path) -> None:
    r = mpirun(5, "bad_input.py", str(store))
    checked = [line.split(" ", 1)[1] for line in rank_lines(r.stdout, "CHECKED ")]
    expected = [f"{kind}-name {b!r}" for b in BAD_NAMES for kind in ("chronicle", "story")] + [
        "name-not-str",
        "invalid-is-valueerror",
        "payload-too-large",
        "payload-too-large-many",
        "payload-type",
        "log_many-bad-array",
        *(f"log_many-{kind}{what}" for kind in ("str", "bytes", "bytearray", "memoryview") for what in ("", "-advice")),
        "unknown-chronicle-acquire",
        "unknown-chronicle-stories",
        "unknown-chronicle-destroy",
        "chronicle-exists",
        "destroy-in-use",
        "log-after-release",
        "log_many-after-release",
        "release-not-acquired",
        "context-released",
        "destroy",
        "log-after-session",
        "acquire-after-session",
        "show-after-session",
        "nothing-lost",
    ]
    assert sorted(checked) == sorted(expected)


@pytest.mark.parametrize(
    "n, cfg, fragment",
    [
        (3, {}, "needs at least 4 ranks"),  # too few ranks: no client would be left
        (4, {"layout": {"keepers": 2}}, "needs at least 5 ranks"),  # zero clients
        (4, {"layout": {"keepers": 10}}, "needs at least 13 ranks"),  # more keepers than ranks
        (4, {"layout": {"graphers": -1}}, "layout.graphers=-1 must be >= 1, or 0 for the default rule"),
        (6, {"layout": {"clients": 5}}, "layout.clients=5 needs 8 ranks"),  # exactly 5 clients: 3 services more
        (4, {"client": {"batch_bytes": 0}}, "client.batch_bytes=0"),
        (4, {"client": {"policy": "maybe"}}, "client.policy='maybe'"),
        (4, {"workload": {"evnts": 1}}, "unknown config key 'workload.evnts'"),
    ],
)
def test_bad_layout_fails_on_every_rank(n: int, cfg: dict, fragment: str, store: Path) -> None:
    cfg = {"storage": {"root": str(store)}, **cfg}
    t0 = time.monotonic()
    r = mpirun(n, "config_error.py", json.dumps(cfg), timeout=60, check=False)
    assert r.returncode != 0
    lines = rank_lines(r.stdout)
    assert sorted(int(ln.split()[1]) for ln in lines) == list(range(n)), r.stdout + r.stderr
    for ln in lines:
        assert "ConfigError" in ln and fragment in ln, ln
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize(
    "cfg, env, fragment",
    [
        ({"layout": {"graphers": -1}}, {}, "ConfigError: in cfg: layout.graphers=-1 must be >= 1"),
        ({}, {"CHRONOMPI_OVERRIDES": "layout=nope"}, "there is no layout config 'nope'; the layout configs are: auto"),
    ],
)
def test_a_start_up_error_the_program_does_not_catch_is_one_line(
    cfg: dict, env: dict, fragment: str, store: Path
) -> None:
    """Bad input is said once: a session() start-up error that the program leaves uncaught was a traceback from
    every rank; now one line from rank 0, and the job fails."""
    cfg = {"storage": {"root": str(store)}, **cfg}
    r = mpirun(4, "config_error.py", json.dumps(cfg), "uncaught", timeout=60, check=False, env=env)
    assert r.returncode != 0
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("chronompi: ")]
    assert len(said) == 1 and fragment in said[0], r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("not a store")
    r = mpirun(4, "config_error.py", json.dumps({"storage": {"root": str(f)}}), timeout=60, check=False)
    lines = rank_lines(r.stdout)
    assert len(lines) == 4 and all("StoreError" in ln and "not a directory" in ln for ln in lines), r.stdout


def test_foreign_directory_is_not_taken_over(tmp_path: Path) -> None:
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    r = mpirun(4, "config_error.py", json.dumps({"storage": {"root": str(d)}}), timeout=60, check=False)
    assert r.returncode != 0 and "not a chronompi store" in r.stdout
    assert sorted(p.name for p in d.iterdir()) == ["thesis.tex"]


def test_client_failure_alone_keeps_its_events(store: Path) -> None:
    r = mpirun(6, "client_fails.py", str(store), "alone", check=False)
    assert r.returncode != 0, "the failing rank's exception must fail the job"
    assert "science code failed on purpose" in r.stderr
    m = manifest(store)
    assert [f["error"] for f in m["failures"]] == ["RuntimeError: science code failed on purpose"]
    with chronompi.open_store(store) as st:
        for rank in range(3):
            payloads = st.replay("c", f"s{rank}")["payload"].tolist()
            want = [b"%d-%d" % (rank, i) for i in range(100)] + ([b"last"] if rank else [])
            assert payloads == want


def test_client_failure_with_others_stuck_aborts_after_grace(store: Path) -> None:
    t0 = time.monotonic()
    r = mpirun(6, "client_fails.py", str(store), "stuck", timeout=90, check=False)
    assert r.returncode != 0
    assert time.monotonic() - t0 < 60
    assert "aborting the job" in r.stderr
    with chronompi.open_store(store) as st:  # everything logged before the failure was written
        for rank in range(3):
            assert st.replay("c", f"s{rank}")["payload"].tolist() == [b"%d-%d" % (rank, i) for i in range(100)]


def test_env_overrides_reach_every_rank(tmp_path: Path) -> None:
    """$CHRONOMPI_OVERRIDES configures an unmodified application; a bad one is a ConfigError on every rank."""
    store = tmp_path / "from-env"
    r = mpirun(
        5, "config_error.py", "{}", timeout=60, env={"CHRONOMPI_OVERRIDES": f"storage.root={store} layout.graphers=2"}
    )
    assert sorted(rank_lines(r.stdout)) == [f"RANK {i} OK" for i in range(5)], r.stdout + r.stderr
    assert manifest(store)["config"]["layout"]["graphers"] == 2
    r = mpirun(4, "config_error.py", "{}", timeout=60, check=False, env={"CHRONOMPI_OVERRIDES": "layout.kepers=2"})
    lines = rank_lines(r.stdout)
    assert len(lines) == 4 and all("ConfigError" in ln and "CHRONOMPI_OVERRIDES" in ln for ln in lines), r.stdout


@pytest.mark.parametrize(
    "cfg, env, words, absent",
    [
        # a typo in cfg is cfg's, even with the variable set
        (
            {"storage": {"rooot": "x"}},
            "storage.segment_age_s=5",
            ["in cfg: unknown config key 'storage.rooot'"],
            "OVERRIDES",
        ),
        ({"storag": {"root": "x"}}, "storage.segment_age_s=5", ["in cfg: unknown config key 'storag'"], "OVERRIDES"),
        # and a bad entry of the variable is the variable's
        ({}, "storage.segment_bytes=abc", ["CHRONOMPI_OVERRIDES entry", "'abc' is not an integer"], "in cfg"),
        ({}, "workload.events=-5", ["CHRONOMPI_OVERRIDES entry", "workload.events=-5 must be >= 0"], "in cfg"),
    ],
)
def test_config_error_names_its_source_on_every_rank(
    cfg: dict, env: str, words: list[str], absent: str, store: Path
) -> None:
    cfg = {"storage": {"root": str(store)}, **cfg} if "storage" not in cfg else cfg
    t0 = time.monotonic()
    r = mpirun(4, "config_error.py", json.dumps(cfg), timeout=60, check=False, env={"CHRONOMPI_OVERRIDES": env})
    assert r.returncode != 0
    lines = rank_lines(r.stdout)
    assert sorted(int(ln.split()[1]) for ln in lines) == [0, 1, 2, 3], r.stdout + r.stderr
    assert len({ln.split(" ", 2)[2] for ln in lines}) == 1, "every rank raises the same error"
    for w in words:
        assert w in lines[0], lines[0]
    assert absent not in lines[0]
    assert not any(x in r.stdout + r.stderr for x in ("full_key", "object_type", "Traceback")), r.stdout + r.stderr
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize(
    "stories, fragment",
    [
        ([["app", "log"]], None),
        ([["app", "../log"]], "session(stories=...)"),
        ([["app"]], "is not a (chronicle, story) pair"),
        (None, "takes a list of (chronicle, story) pairs, not None"),
    ],
)
def test_stories_held_from_the_start(stories: list, fragment: str | None, store: Path) -> None:
    """``session(stories=...)``: every client holds them (its acquire is answered without a request) and logs;
    a bad name is one ConfigError, the same on every rank, and nothing hangs."""
    cfg = json.dumps({"storage": {"root": str(store)}})
    r = mpirun(4, "config_error.py", cfg, f"stories={json.dumps(stories)}", timeout=60, check=False)
    lines = rank_lines(r.stdout)
    assert sorted(int(ln.split()[1]) for ln in lines) == [0, 1, 2, 3], r.stdout + r.stderr
    if fragment is None:
        assert r.returncode == 0 and all(ln.endswith(" OK") for ln in lines), r.stdout + r.stderr
        import chronompi

        with chronompi.open_store(store) as st:
            assert len(st.replay("app", "log")) == 1  # the one client of 4 ranks logged once
        return
    assert r.returncode != 0 and len({ln.split(" ", 2)[2] for ln in lines}) == 1, r.stdout + r.stderr
    assert "ConfigError" in lines[0] and fragment in lines[0], lines[0]


def test_config_dict_passed_as_the_communicator() -> None:
    """``session({...})``: the dict lands in ``comm``; a TypeError says where the config goes (was an
    AttributeError from inside mpi4py's Dup)."""
    code = (
        "import chronompi\n"
        "try:\n"
        "    with chronompi.session({'storage': {'root': 'x'}}):\n"
        "        pass\n"
        "except TypeError as e:\n"
        "    print('TypeError:', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert "TypeError: session(comm=...) takes an MPI communicator, not dict" in r.stdout, r.stdout + r.stderr
    assert "session(cfg=...)" in r.stdout


def _one_line_and_nothing_left(r: subprocess.CompletedProcess, fragment: str, cwd: Path, store: Path) -> None:
    # (a loaded machine: Open MPI's launcher may fail to start once, and chronompi mpirun says it tries again)
    said = [ln for ln in r.stderr.splitlines() if ln.strip() and "the launcher did not start" not in ln]
    assert r.returncode != 0, r.stdout + r.stderr
    assert len(said) == 1 and said[0].startswith("chronompi") and fragment in said[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "-----" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert not store.exists(), sorted(p.name for p in store.rglob("*"))
    assert [p.name for p in cwd.iterdir()] == [], "nothing is left behind"


@pytest.mark.mpi
@pytest.mark.parametrize(
    "n, program, cfg, fragment",
    [
        (2, "run", {}, "needs at least 4 ranks"),  # chronompi mpirun -n 2 chronompi run
        (2, "session", {}, "ConfigError: a session with 1 keeper(s) and 1 grapher(s) needs at least 4 ranks"),
        (4, "session", {"storage": {"staging": "AFILE"}}, "not a directory"),  # a file where staging goes
        (4, "run", {"storage": {"staging": "AFILE"}}, "not a directory"),
        (2, "record", {"storage": {"staging": "AFILE"}}, "not a directory"),  # (n: the program's ranks)
    ],
)
def test_a_start_up_error_under_chronompi_mpirun_is_one_line_and_leaves_nothing(
    n: int, program: str, cfg: dict, fragment: str, tmp_path: Path
) -> None:
    """Too few ranks was said once per rank, then mpirun's 7-line box, and an empty chronompi-store/ stayed; the
    same box and store came with a staging path that is a file. Now one line, printed once, and nothing made."""
    from chronompi.launch import retrying_argv

    cwd, afile = tmp_path / "cwd", tmp_path / "afile"
    cwd.mkdir()
    afile.write_text("not a directory")
    cfg = json.loads(json.dumps(cfg).replace("AFILE", str(afile)))
    pairs = [f"storage.staging={afile}"] if cfg else []
    if program == "run":
        argv = retrying_argv(n, [sys.executable, "-m", "chronompi", "run", *pairs])
    elif program == "record":  # (it makes the store before it launches the job)
        prog = tmp_path / "prog.py"
        prog.write_text("print('the program ran')\n")
        argv = [sys.executable, "-m", "chronompi", "record", f"-n{n}", *pairs, "--", "python", str(prog)]
    else:
        argv = retrying_argv(n, [sys.executable, str(APPS / "config_error.py"), json.dumps(cfg), "uncaught"])
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    _one_line_and_nothing_left(r, fragment, cwd, cwd / "chronompi-store")
    assert afile.read_text() == "not a directory"


def test_remove_unused_store_takes_only_what_init_store_made(tmp_path: Path) -> None:
    from chronompi.store.dirs import init_store, remove_unused_store

    init_store(tmp_path / "new")
    remove_unused_store(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    for extra in ("runs/r1.json", "segments/s.h5", "notes.txt"):  # anything else: the store stays, all of it
        store = init_store(tmp_path / extra.replace("/", "-"))
        (store / extra).write_text("kept")
        remove_unused_store(store)
        assert (store / extra).read_text() == "kept" and (store / "chronompi.json").is_file()
        assert (store / "runs").is_dir() and (store / "segments").is_dir()
