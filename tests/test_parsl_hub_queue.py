"""HubQueue: the Parsl hub's queue takes its own process's puts in-process, other processes' through the pipe."""

from __future__ import annotations

import multiprocessing
import queue
import threading

import pytest

pytest.importorskip("parsl")

from chronompi.parsl.hub import HubQueue  # noqa: E402


def put_from_child(q: HubQueue, tag: str) -> None:
    q.put(("child", tag))


def test_own_process_puts_skip_the_pipe() -> None:
    q = HubQueue()
    unpicklable = lambda: None  # noqa: E731 - a pipe would have to pickle it and could not
    q.put(unpicklable)
    t = threading.Thread(target=q.put, args=(("thread", 1),))  # the DFK's radio and receiver threads
    t.start()
    t.join()
    local = q.local()
    assert local.get_nowait() is unpicklable
    assert local.get_nowait() == ("thread", 1)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)  # nothing went through the pipe
    q.close()
    q.join_thread()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_other_processes_put_through_the_pipe(method: str) -> None:
    q = HubQueue()
    p = multiprocessing.get_context(method).Process(target=put_from_child, args=(q, method))
    p.start()
    assert q.get(timeout=30) == ("child", method)
    p.join(30)
    assert p.exitcode == 0
    assert q.local().empty()
    q.close()
    q.join_thread()
