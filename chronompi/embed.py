"""The one-line start and the module-level API: ``chronompi.init()``, ``chronompi.story()``, ``finalize()``.

``init()`` is :func:`chronompi.session` entered for the rest of the program (dask-mpi's ``initialize()``):
service ranks serve the whole session inside the call and then exit the process; client ranks get their
:class:`~chronompi.Client` back, ``mpi4py.MPI.COMM_WORLD`` now names the clients' communicator (so the
program's own collectives never reach a service rank), its ``logging`` records are recorded, and the
session drains at interpreter exit (``atexit``) or at an explicit :func:`finalize`. ``chronompi record``
(:mod:`chronompi.record`) runs an unmodified program the same way, around it.

``chronompi.story(chronicle, name)`` works from any thread of a client rank once a session was started by
``init()`` or ``record``: it creates the chronicle if needed and acquires the story once per process.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ChronicleExists, SessionClosed, UnknownChronicle
from .names import MAX_NAME_LEN, check_name

if TYPE_CHECKING:
    from .client import Client
    from .story import Story

log = logging.getLogger(__name__)

DEFAULT_STORY = "log"


def program_name(argv0: str | None = None, module: str | None = None) -> str:
    """A chronicle name for the running program: its module name or script stem, made a valid name."""
    raw = module or Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")).stem
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", raw).replace("..", "_").lstrip(".-")[:MAX_NAME_LEN]
    return name or "program"


class _Embedded:
    """This process's session started by ``init()`` or ``record``, with what was put in place for it."""

    def __init__(self, cm: Any, client: Client, chronicle: str) -> None:
        self.cm = cm
        self.client = client
        self.chronicle = chronicle
        self.world: Any = None  # the real MPI.COMM_WORLD while it is rebound
        self.mpi_calls: dict[str, Any] = {}  # MPI.Init/Init_thread/Finalize while they are no-ops
        self.captures: list[Any] = []
        self.stories: dict[tuple[str, str], Story] = {}
        self.lock = threading.Lock()


_state: _Embedded | None = None
_state_lock = threading.Lock()


def current_client() -> Client | None:
    """The client of the session ``init()`` or ``record`` started in this process (None elsewhere)."""
    return _state.client if _state is not None else None


def story(chronicle: str | None = None, name: str = DEFAULT_STORY) -> Story:
    """The story ``chronicle/name`` of this process's session, acquired once and shared by every thread.

    ``chronicle`` defaults to the program's chronicle (its name; ``record --chronicle`` or
    ``init(chronicle=...)`` change it). Creates the chronicle when it does not exist. Raises
    :class:`SessionClosed` when no session was started by ``chronompi.init()`` or ``chronompi record``
    in this process, or it has ended (with ``session()``, use ``client.acquire_story``)."""
    st = _state
    if st is None:
        raise SessionClosed(
            "chronompi.story() needs a session started by chronompi.init() or chronompi record in this "
            "process (none is running here); with chronompi.session() use client.acquire_story()"
        )
    chron = check_name(chronicle if chronicle is not None else st.chronicle, "chronicle")
    check_name(name, "story")
    with st.lock:
        held = st.stories.get((chron, name))
        if held is None:
            try:  # one request to the visor when the chronicle exists (every client but the first, at start-up)
                held = st.client.acquire_story(chron, name)
            except UnknownChronicle:
                _ensure_chronicle(st.client, chron)
                held = st.client.acquire_story(chron, name)
            st.stories[(chron, name)] = held
        return held


def _no_op(*args: Any, **kwargs: Any) -> Any:
    return None


def _ensure_chronicle(client: Client, name: str) -> None:
    try:
        client.create_chronicle(name)
    except ChronicleExists:
        pass


def start(
    cfg: Any = None,
    comm: Any = None,
    *,
    chronicle: str | None = None,
    story_name: str = DEFAULT_STORY,
    capture_logging: bool = True,
    capture_output: bool = False,
    rebind: bool = True,
) -> Client | None:
    """Enter a session for the rest of this process; None on service ranks (after the session ended)."""
    global _state
    from mpi4py import MPI

    from .session import session

    chronicle = check_name(chronicle or program_name(), "chronicle")
    check_name(story_name, "story")
    held = [(chronicle, story_name)] if capture_logging else []
    held += [(chronicle, "stdout"), (chronicle, "stderr")] if capture_output else []
    with _state_lock:
        if _state is not None:
            return _state.client
        cm = session(comm, cfg, stories=held)  # every client holds them from the start: no request each
        client = cm.__enter__()  # service ranks: the whole session is served inside this call
        if client is None:
            cm.__exit__(None, None, None)
            return None
        st = _Embedded(cm, client, chronicle)
        _state = st
    try:
        if rebind and (comm is None or comm is MPI.COMM_WORLD):
            st.world = MPI.COMM_WORLD
            MPI.COMM_WORLD = client.comm  # type: ignore[misc]  # the program's "world" is the clients' communicator
            # MPI is initialised already and must outlive the program (the session ends after it): a
            # program's own MPI.Init() / MPI.Finalize() calls become no-ops; mpi4py finalises at exit
            for name in ("Init", "Init_thread", "Finalize"):
                st.mpi_calls[name] = getattr(MPI, name)
                setattr(MPI, name, _no_op)
        if capture_logging or capture_output:
            from .capture import LogCapture, OutputCapture

            if capture_logging:
                st.captures.append(LogCapture(story(st.chronicle, story_name)))
            if capture_output:
                st.captures.append(OutputCapture(story(st.chronicle, "stdout"), story(st.chronicle, "stderr")))
            for c in st.captures:
                c.install()
    except BaseException as exc:
        finalize(exc)
        raise
    return client


def init(
    cfg: Any = None,
    comm: Any = None,
    *,
    chronicle: str | None = None,
    capture_logging: bool = True,
    capture_output: bool = False,
) -> Client:
    """Start chronompi in one line at the top of a program: ``client = chronompi.init()``.

    Collective over ``comm`` (``MPI.COMM_WORLD`` by default), like :func:`chronompi.session`. On service
    ranks it serves the session and then **exits the process** (status 0) once every client has finished,
    so the code after it runs on client ranks only. On client ranks it returns the :class:`Client` and:

    - rebinds ``mpi4py.MPI.COMM_WORLD`` to the clients' communicator (``client.comm``), so the program's
      collectives and ranks are among the clients; a communicator object taken before ``init()`` still
      names the whole job;
    - with ``capture_logging`` records the program's ``logging`` records into the story ``log`` of the
      chronicle ``chronicle`` (default: the program's name), see :mod:`chronompi.capture`; with
      ``capture_output`` also its stdout and stderr lines (stories ``stdout`` and ``stderr``);
    - ends the session at interpreter exit (or at :func:`finalize`): every event is then in the store.

    Calling it again returns the same client.
    """
    client = start(cfg, comm, chronicle=chronicle, capture_logging=capture_logging, capture_output=capture_output)
    if client is None:
        sys.stdout.flush()
        raise SystemExit(0)  # a service rank: its part is over; the program's code is the clients'
    atexit.register(_at_exit)
    return client


def _at_exit() -> None:
    if _state is None:
        return
    exc = getattr(sys, "last_value", None)  # an uncaught exception ended the program (set before atexit runs)
    try:
        finalize(exc if isinstance(exc, BaseException) else None)
    except BaseException as e:  # noqa: BLE001 - atexit: report, the process is ending anyway
        sys.stderr.write(f"chronompi: ending the session at exit failed: {e}\n")


def finalize(failure: BaseException | None = None) -> None:
    """End the session ``init()`` started: every event logged is in the store when this returns.

    Collective over the clients (each client ends its part; the store is complete once all have).
    Safe to call twice; called at interpreter exit when the program does not. ``failure``: the exception
    that ended the program, if any (it is reported to the visor, as when a ``session()`` block raises)."""
    global _state
    with _state_lock:
        st, _state = _state, None
    if st is None:
        return
    for c in reversed(st.captures):
        c.uninstall()
    if st.world is not None:
        from mpi4py import MPI

        MPI.COMM_WORLD = st.world  # type: ignore[misc]
        for name, call in st.mpi_calls.items():
            setattr(MPI, name, call)
    if failure is None:
        st.cm.__exit__(None, None, None)
    else:
        try:
            st.cm.__exit__(type(failure), failure, failure.__traceback__)
        except BaseException as exc:  # the session re-raises the program's exception: it is the caller's
            if exc is not failure:
                raise
