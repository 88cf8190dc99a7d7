"""What ``chronompi mpirun`` passes on of mpirun's stderr (launch.ExplainedExitFilter): no MPI here."""

from __future__ import annotations

from chronompi.launch import ExplainedExitFilter

RULE = b"-" * 74 + b"\n"
NOTICE = (
    RULE + b"prterun detected that one or more processes exited with non-zero status,\n"
    b"thus causing the job to be terminated. The first process to do so was:\n\n"
    b"   Process name: [prterun-vm-9046@1,0]\n   Exit code:    1\n" + RULE
)
SAID = b"chronompi: ConfigError: a session with 1 keeper(s) and 1 grapher(s) needs at least 4 ranks ...\n"
UNREACH = b"[vm:24148] PMIX ERROR: PMIX_ERR_UNREACH in file pmix_server.c at line 3146\n"
EPOLL = b"[warn] Epoll MOD(4) on fd 21 failed. Old events were 6; read change was 2 (del); write change was 0\n"
ABORT = RULE + b"MPI_ABORT was invoked on rank 3 in communicator MPI_COMM_WORLD\nwith errorcode 1.\n" + RULE


def passed_on(stream: bytes, chunk: int) -> bytes:
    out: list[bytes] = []
    f = ExplainedExitFilter(out.append)
    for i in range(0, len(stream), chunk):
        f.feed(stream[i : i + chunk])
    f.close()
    return b"".join(out)


def test_the_notice_after_chronompi_said_why_is_left_out_however_the_stream_is_cut() -> None:
    """Too few ranks: the one line, then Open MPI's 7-line box; only the line stays."""
    for chunk in (1, 2, 3, 7, 64, 1 << 16):
        assert passed_on(SAID + NOTICE, chunk) == SAID, chunk
        assert passed_on(b"chronompi run: bad\n" + NOTICE + b"after\n", chunk) == b"chronompi run: bad\nafter\n"
        assert passed_on(SAID + UNREACH + NOTICE + UNREACH, chunk) == SAID
        assert passed_on(SAID + EPOLL + NOTICE, chunk) == SAID  # (seen in CI under load)


def test_the_launchers_teardown_complaint_is_kept_when_nothing_explained_it() -> None:
    for chunk in (1, 1 << 16):
        assert passed_on(UNREACH + b"x\n", chunk) == UNREACH + b"x\n"
        assert passed_on(EPOLL, chunk) == EPOLL  # unexplained: passed on


def test_everything_else_is_passed_on_as_it_came() -> None:
    for chunk in (1, 5, 1 << 16):
        assert passed_on(NOTICE, chunk) == NOTICE  # nothing explained it: the launcher's word is all there is
        assert passed_on(b"Traceback ...\n" + NOTICE, chunk) == b"Traceback ...\n" + NOTICE
        assert passed_on(SAID + ABORT, chunk) == SAID + ABORT  # another box
        summary = b"chronompi: 4,000 events in /s (run ab, 0.52 s, 7,692 events/s); chronompi stats /s for details\n"
        assert passed_on(summary + NOTICE, chunk) == summary + NOTICE  # the program failed after its session
        assert passed_on(RULE + b"x\n" * 20, chunk) == RULE + b"x\n" * 20  # a rule, then no box
        assert passed_on(b"--x\n-- a\npartial", chunk) == b"--x\n-- a\npartial"


def test_an_unfinished_line_is_passed_on_at_once() -> None:
    out: list[bytes] = []
    f = ExplainedExitFilter(out.append)
    f.feed(b"password: ")
    assert b"".join(out) == b"password: "
    f.feed(b"----- not a rule yet\n")  # (the rest of that line, not the start of a box)
    assert b"".join(out) == b"password: ----- not a rule yet\n"
    f.feed(b"-----")
    assert b"".join(out) == b"password: ----- not a rule yet\n"  # may begin a box: held until its line ends
    f.close()
    assert b"".join(out).endswith(b"-----")


def test_a_launch_that_did_not_start_leaves_no_box() -> None:
    """Open MPI's launcher could not start its PMIx listener (a loaded machine): exec_mpi launches again and
    says so in a line of its own; the box goes, whatever came around it stays."""
    listener = RULE + b"The PMIx server's listener thread failed to start. We cannot\ncontinue.\n" + RULE
    for chunk in (1, 5, 64, 1 << 16):
        assert passed_on(b"before\n" + listener + ABORT, chunk) == b"before\n" + ABORT, chunk
