"""The checks of rows that cannot be data, and the hashes (chronompi.store.integrity), without files."""

from __future__ import annotations

import numpy as np

from chronompi.codec import EVENT
from chronompi.protocol import client_id
from chronompi.store.format import WINDOW
from chronompi.store.integrity import data_sum, implausible, row_sum, run_clients, run_problem

RUN = 0x1234
RECORD = {
    "run": f"{RUN:016x}",
    "status": "complete",
    "roles": {"client": [{"rank": 3, "stories": {"c/s": 4}}, {"rank": 4, "stories": {}}]},
}


def events(clients: list[int], seqs: list[int], times: list[int] | None = None) -> np.ndarray:
    ev = np.zeros(len(clients), EVENT)
    ev["time"] = times if times is not None else [10 + i for i in range(len(clients))]
    ev["client"], ev["seq"] = clients, seqs
    ev["length"] = 2
    ev["offset"] = np.arange(len(clients)) * 2
    return ev


def test_rows_that_can_be_data_pass() -> None:
    who = run_clients(RECORD, "c/s")
    c3 = client_id(RUN, 3)
    ev = events([c3, c3, c3, c3], [0, 1, 2, 3])
    assert implausible(ev, 0, 8, 10, 13, who) is None


def test_rows_that_cannot_be_data_are_named() -> None:
    who = run_clients(RECORD, "c/s")
    c3, c4 = client_id(RUN, 3), client_id(RUN, 4)
    assert "time <= 0" in str(implausible(events([c3, c3], [0, 1], [0, 0]), 0, 4, 0, 0, who))
    assert "time span" in str(implausible(events([c3, c3], [0, 1]), 0, 4, 10, 10, who))
    assert "outside the heap" in str(implausible(events([c3, c3], [0, 1]), 0, 3, 10, 11, who))
    assert "not in the run record" in str(implausible(events([c3, 77], [0, 0]), 0, 4, 10, 11, who))
    assert "seq beyond" in str(implausible(events([c3, c3], [3, 4]), 0, 4, 10, 11, who))
    # a client the record knows but did not count for this story: only its id is checked
    assert implausible(events([c4], [9]), 0, 2, 10, 10, who) is None
    # per run (starts): the second run's times fall outside its own span
    ev = events([c3] * 4, [0, 1, 2, 3], [10, 11, 12, 30])
    assert implausible(ev, 0, 8, np.array([10, 12]), np.array([11, 13]), who, np.array([0, 2])) is not None


def test_a_record_without_clients_checks_no_clients() -> None:
    who = run_clients({"run": f"{RUN:016x}", "status": "running"}, "c/s")
    assert who.known is None
    assert implausible(events([5, 6], [100, 200]), 0, 4, 10, 11, who) is None


def test_hashes_find_any_changed_byte() -> None:
    ev = events([1, 2, 3], [0, 0, 0])
    heap = np.frombuffer(b"aabbcc", np.uint8)
    row = np.zeros(1, WINDOW)
    row["n_rows"], row["heap_bytes"], row["checksum"] = 3, 6, data_sum(ev, [heap[:2], heap[2:]])
    row["row_checksum"] = row_sum(row)
    assert run_problem(row, ev, heap) is None
    bad = heap.copy()
    bad[4] ^= 1
    assert run_problem(row, ev, bad) == "data checksum mismatch"
    ev2 = ev.copy()
    ev2["seq"][1] = 1
    assert run_problem(row, ev2, heap) == "data checksum mismatch"
    row2 = row.copy()
    row2["t_max"] = 5
    assert run_problem(row2, ev, heap) == "index row checksum mismatch"
