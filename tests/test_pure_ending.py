"""What the launcher says when a job ends badly (chronompi/ending.py): Open MPI's messages, the run record's
placement, the visor's marker taken out of the output."""

from __future__ import annotations

import json
from pathlib import Path

from chronompi.ending import Markers, crash_line, lost_node, store_guesses
from chronompi.layout import placement, rank_ranges

# what Open MPI 5 (PRRTE) printed here when the nodes were lost (tests/test_multinode.py) and a rank was killed
DAEMON_LOST = """------------------------------------------------------------
A daemon failed to report back after being spawned. ...
  Local host:    head
  Remote host:   n2
  Daemon exit status: 255
"""
HNP_LOST = """PRTE has lost communication with a remote daemon.

  HNP daemon   : [prterun-head-13167@0,0] on node head
  Remote daemon: [prterun-head-13167@0,1] on node n1

This is usually due to either a failure of the TCP network
"""
RANK_KILLED = """prterun noticed that process rank 1 with PID 4242 on node vm exited on
signal 9 (Killed).
"""


def record(store: Path, run: str, status: str, start: int, nodes: dict) -> None:
    (store / "runs").mkdir(parents=True, exist_ok=True)
    (store / "runs" / f"r{run}.json").write_text(
        json.dumps({"run": run, "status": status, "start": start, "nodes": nodes})
    )


def test_rank_ranges_and_placement() -> None:
    assert rank_ranges([7, 3, 5, 6]) == "3,5-7" and rank_ranges([]) == "" and rank_ranges([0]) == "0"
    roles = ["visor", "keeper", "grapher", "client", "keeper", "client", "client", "client"]
    assert placement(["n1"] * 4 + ["n2"] * 4, roles) == {
        "n1": {"visor": "0", "keeper": "1", "grapher": "2", "client": "3"},
        "n2": {"keeper": "4", "client": "5-7"},
    }


def test_lost_node_from_open_mpi_messages() -> None:
    assert lost_node(DAEMON_LOST) == "n2"
    assert lost_node(HNP_LOST) == "n1"  # the remote daemon's node, not the launcher's ("head")
    assert lost_node(RANK_KILLED) is None and lost_node("") is None
    assert lost_node("a program's own line: Remote host: web1\n") is None  # only Open MPI's notice counts


def test_crash_line_names_the_node_its_ranks_and_the_recovery(tmp_path: Path) -> None:
    store = tmp_path / "st"
    record(store, "00aa", "running", 10, {"n1": {"visor": "0", "client": "1"}, "n2": {"keeper": "2", "client": "3-5"}})
    record(store, "00bb", "complete", 20, {})
    line = crash_line(255, DAEMON_LOST, [store], since_ns=5)
    assert line is not None and line.startswith("chronompi: node n2 was lost (ranks there: keeper 2, client 3-5);")
    assert "exit 255" in line and "run 00aa" in line and f"chronompi fsck {store} --job-ended" in line
    # the run the visor named wins over the guess; a rank that died is named with its role
    line = crash_line(
        137, RANK_KILLED.replace("node vm", "node n2").replace("rank 1 ", "rank 2 "), [], 0, (store, "00aa")
    )
    assert line is not None and "rank 2 (keeper) on n2 died of signal 9" in line and "run 00aa" in line
    # a run that started before this job is not its run; with nothing known, nothing is said
    assert crash_line(1, "some error", [store], since_ns=11) is None
    assert crash_line(1, "some error", [tmp_path / "nowhere"], since_ns=0) is None
    # a lost node without a run record: the line still names it
    line = crash_line(255, HNP_LOST, [tmp_path / "nowhere"], since_ns=0)
    assert line is not None and line.startswith("chronompi: node n1 was lost;") and "--job-ended" in line


def test_markers_are_taken_out_of_the_output_wherever_the_chunks_split() -> None:
    text = b"a\n\x1echronompi-run 00ff /st/x\nprogress 1\nb\x1echronompi-run 0a0b /s 2\nc\n"
    for cut in range(len(text) + 1):
        m = Markers()
        out = m.strip(text[:cut]) + m.strip(text[cut:])
        assert out == b"a\nprogress 1\nbc\n", cut
        assert m.run == (Path("/s 2"), "0a0b")


def test_a_programs_own_rs_bytes_pass_unchanged() -> None:
    """Binary output with RS bytes (0x1e) that start no marker: every byte passes, whatever the chunks."""
    text = b"\x00\x1e\x1ebin\x1echronompi\n\x1echronompi-run zz /x\n\x1e"
    for cut in range(len(text) + 1):
        m = Markers()
        out = m.strip(text[:cut]) + m.strip(text[cut:]) + m.flush()
        assert out == text and m.run is None, cut


def test_store_guesses(tmp_path: Path) -> None:
    assert store_guesses(["chronompi", "run", "storage.root=/x/st"], {}, tmp_path) == [Path("/x/st")]
    assert store_guesses(["python", "app.py"], {"CHRONOMPI_OVERRIDES": "storage.root=rel"}, tmp_path) == [
        tmp_path / "rel"
    ]
    assert store_guesses(["python", "app.py"], {}, tmp_path) == [tmp_path / "chronompi-store"]
