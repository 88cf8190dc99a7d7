"""The hang watchdog's pure parts (no MPI): bytecode -> blocking MPI call and receiver, the receiver's
evaluation, the frame sampling, the visor's verdict and its one-line message."""

from __future__ import annotations

import dis
import socket
import sys
import textwrap
import threading
import time
import types

import pytest

from chronompi import watchdog as wd


def outer_call(line: str) -> wd.Call | None:
    """call_at for the last CALL (the outermost call) of ``line`` in a function body."""
    src = "def f(comm, MPI, self, x, a, get, c):\n" + textwrap.indent(line, "    ") + "\n"
    ns: dict = {}
    exec(compile(src, "<snippet>", "exec"), ns)
    code = ns["f"].__code__
    offsets = [i.offset for i in dis.get_instructions(code) if i.opname in wd._CALLS]
    assert offsets, f"no call in {line!r}"
    return wd.call_at(code, offsets[-1])


@pytest.mark.parametrize(
    "line, method, receiver, op",
    [
        ("comm.Barrier()", "Barrier", ("comm",), "collective"),
        ("comm.allreduce(x, op=MPI.SUM)", "allreduce", ("comm",), "collective"),
        ("MPI.COMM_WORLD.Barrier()", "Barrier", ("MPI", "COMM_WORLD"), "collective"),
        ("self.comm.bcast(x if x else 1, root=0)", "bcast", ("self", "comm"), "collective"),
        ("comm.recv(source=get(x), tag=a[0] + 2)", "recv", ("comm",), "p2p"),
        ("comm.Allreduce(\n    x,\n    a,\n)", "Allreduce", ("comm",), "collective"),
        ("y = comm.Split(c, 0)", "Split", ("comm",), "collective"),
        ("get().recv(source=0)", "recv", None, "p2p"),
        ("comm.Split(c).Barrier()", "Barrier", None, "collective"),
    ],
)
def test_call_at_reads_method_and_receiver(line: str, method: str, receiver: tuple | None, op: str) -> None:
    call = outer_call(line)
    assert call is not None
    assert (call.method, call.receiver, call.op) == (method, receiver, op)
    assert call.lineno == 2


@pytest.mark.parametrize(
    "line",
    ["print(comm.Barrier)", "comm.Get_rank()", "Barrier()", "x.sleep(1)", "comm.Isend(x, 1)", "get(comm)(x)"],
)
def test_call_at_ignores_other_calls(line: str) -> None:
    assert outer_call(line) is None


def test_call_at_never_raises_on_a_bad_offset() -> None:
    code = outer_call.__code__
    for lasti in (-2, 1, 3, 10**6):
        assert wd.call_at(code, lasti) is None


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the stack walk is checked on this venv's 3.11")
def test_stack_walk_agrees_with_positions_on_straight_line_code() -> None:
    src = "def f(comm, MPI, x, a):\n    comm.allreduce(x, op=MPI.SUM)\n    comm.recv(source=a[0] + 1, tag=len(x))\n"
    ns: dict = {}
    exec(compile(src, "<snippet>", "exec"), ns)
    ins = list(dis.get_instructions(ns["f"]))
    outer = [i for i, x in enumerate(ins) if x.opname == "CALL" and ins[i + 1].opname == "POP_TOP"]
    assert len(outer) == 2
    for at in outer:
        assert wd._method_by_stack(ins, at) == wd._method_by_position(ins, at) is not None


def test_the_text_is_the_source_of_the_call(tmp_path) -> None:
    path = tmp_path / "prog.py"
    path.write_text("def f(comm):\n    y = 1; comm.allreduce(y)  # here\n")
    ns: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    code = ns["f"].__code__
    at = [i.offset for i in dis.get_instructions(code) if i.opname in wd._CALLS][-1]
    assert wd.call_at(code, at).text == "comm.allreduce(y)"


class _Holder:
    def __init__(self) -> None:
        self.comm = "the comm"
        self.touched = False

    @property
    def lazy(self) -> str:
        self.touched = True
        return "computed"


def test_resolve_evaluates_names_without_running_code() -> None:
    h = _Holder()
    mod = types.ModuleType("MPI")
    mod.COMM_WORLD = "world"  # type: ignore[attr-defined]
    assert wd.resolve(("self", "comm"), {"self": h}, {}) == "the comm"
    assert wd.resolve(("MPI", "COMM_WORLD"), {}, {"MPI": mod}) == "world"
    assert wd.resolve(("comm",), {"comm": 1}, {"comm": 2}) == 1  # locals first
    assert wd.resolve(("len",), {}, {}) is len
    assert wd.resolve(("self", "lazy"), {"self": h}, {}) is wd.MISSING
    assert not h.touched, "a property was run"
    assert wd.resolve(("nothing",), {}, {}) is wd.MISSING
    assert wd.resolve(("self", "nope"), {"self": h}, {}) is wd.MISSING


def _wait_for(poll, cond, limit: float = 20.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        got = poll()
        if cond(got):
            return got
        time.sleep(0.02)
    raise AssertionError("the watchdog never answered")


def test_watchdog_reports_a_stuck_call_once_and_withdraws_it() -> None:
    """A thread blocked in ``get().recv(1)`` (a socket: no MPI here): reported once as unresolved after
    hang_s, then True when it returns. A thread merely sleeping is never reported."""
    a, b = socket.socketpair()
    started = threading.Event()

    def get() -> socket.socket:
        return a

    def stuck() -> None:
        started.set()
        get().recv(1)

    t = threading.Thread(target=stuck, daemon=True)
    t.start()
    started.wait()
    dog = wd.Watchdog(t.ident, 0.3, None, [])
    t0 = time.monotonic()
    report = _wait_for(dog.poll, lambda r: r is not None)
    assert time.monotonic() - t0 >= 0.3
    assert report["kind"] == wd.UNRESOLVED and report["call"] == "get().recv(1)"
    assert report["where"] == f"{__file__}:{stuck.__code__.co_firstlineno + 2}"
    for _ in range(5):  # once per episode
        assert dog.poll() is None
    b.send(b"x")
    t.join(10)
    assert _wait_for(dog.poll, lambda r: r is not None) is True
    a.close()
    b.close()

    sleeper = threading.Thread(target=time.sleep, args=(1.0,), daemon=True)
    sleeper.start()
    dog = wd.Watchdog(sleeper.ident, 0.1, None, [])
    while sleeper.is_alive():
        assert dog.poll() is None
        time.sleep(0.02)


def _r(kind: str, where: str = "app.py:3", op: str = "collective") -> dict:
    return {"kind": kind, "where": where, "call": "comm.Barrier()", "op": op, "stuck_s": 3.0, "ranks": [[0, 0]]}


def test_judge_collective_with_service_ranks_ends_at_once() -> None:
    j = wd.HangJudge()
    assert j.report(4, _r(wd.CLIENTS_ONLY)) is None
    assert j.verdict({3, 4, 5}) is None
    j.report(5, _r(wd.SERVICE_COLLECTIVE))
    assert j.verdict({3, 4, 5})["rank"] == 5
    j.moved(5)
    assert j.verdict({3, 4, 5}) is None


def test_judge_point_to_point_ends_only_when_every_client_is_blocked() -> None:
    j = wd.HangJudge()
    j.report(3, _r(wd.SERVICE_P2P, op="p2p"))
    assert j.verdict({3, 4}) is None  # client 4 may still send
    j.report(4, _r(wd.CLIENTS_ONLY))
    assert j.verdict({3, 4})["rank"] == 3
    assert j.verdict({3}) is not None  # a client that finished (DONE) is not waited for
    j.moved(3)
    assert j.verdict({3, 4}) is None
    j.report(3, _r(wd.CLIENTS_ONLY))
    assert j.verdict({3, 4}) is None, "clients blocked on their own communicator only: not ours to judge"


def test_judge_warns_once_per_call_site_and_never_aborts_unresolved() -> None:
    j = wd.HangJudge()
    first = j.report(3, _r(wd.UNRESOLVED))
    assert first and "app.py:3" in first and "comm.Barrier()" in first and "client.comm" in first
    assert j.report(4, _r(wd.UNRESOLVED)) is None
    assert j.report(5, _r(wd.UNRESOLVED, where="app.py:9")) is not None
    assert j.verdict({3, 4, 5}) is None


def test_message_is_one_line_naming_call_place_cause_and_remedy() -> None:
    info = {**_r(wd.SERVICE_COLLECTIVE), "rank": 4, "ranks": [[0, 0], [1, 1], [2, 2]]}
    text = wd.hang_message(info, ["visor", "keeper", "grapher", "client", "client"])
    assert "\n" not in text
    for want in ("comm.Barrier()", "app.py:3", "service ranks", "0 (visor), 1 (keeper), 2 (grapher)"):
        assert want in text
    assert "client.comm" in text and "chronompi record" in text
