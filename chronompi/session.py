"""``session()``: the one collective entry point.

Start-up (the only collective phase): duplicate the communicator, broadcast
rank 0's resolved config and run id, find the nodes, assign roles (the same
pure function on every rank, so a bad layout fails everywhere before any
point-to-point message), split by role. Then service ranks serve until the
in-band shutdown is over, and client ranks get a :class:`Client`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import traceback
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

from . import stop
from .config import Config, LayoutConfig, as_config
from .errors import ChronoError, ConfigError, StoreError
from .layout import CLIENT, GRAPHER, ROLES, SPARE, VISOR, assign_roles, autoscaler_on, plan
from .logutil import setup_logging
from .progress import WAIT_POLL_MAX_S
from .protocol import Context, hostname
from .store.dirs import init_store, remove_unused_store, resolve_staging

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger(__name__)


_last: dict[str, Any] = {}


def last_summary() -> dict[str, Any]:
    """Summary of the last session this rank took part in (the visor's is the full one)."""
    return dict(_last)


def _remember(summary: dict[str, Any] | None) -> None:
    _last.clear()
    _last.update(summary or {})


def with_env_overrides(cfg: Any) -> Any:
    """``cfg`` with ``$CHRONOMPI_OVERRIDES`` applied: ``key=value`` pairs, e.g.
    ``storage.root=/scratch/run1 layout.per_node=true``, so job scripts can configure
    applications they do not change. Rank 0 reads it (the config is broadcast).

    ``cfg`` is checked as ``cfg`` and each pair as an entry of the variable, so an error
    names its real source. Without the variable ``cfg`` is returned as it is."""
    from .config import ENV_OVERRIDES, build

    text = os.environ.get(ENV_OVERRIDES, "").strip()
    if not text:
        return cfg
    import shlex  # (here: every client rank passes by, and most have no overrides)

    try:
        pairs = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(
            f"cannot split {ENV_OVERRIDES}={text!r} into key=value pairs ({exc}); quote values as in a shell"
        ) from None
    return build(cfg, pairs, env=ENV_OVERRIDES)


def _run_id() -> int:
    return int.from_bytes(os.urandom(8), "little") >> 1  # 63 random bits (without importing secrets)


def _startup(comm: Any, cfg: Any, entered: float, root: int = 0, stories: Sequence[tuple[str, str]] = ()) -> Context:
    rank = comm.Get_rank()
    # the nodes first: rank 0 checks the layout against them before it makes the store (too few ranks left an
    # empty store behind)
    # one collective for both: every rank's host name and its node's lowest rank (rank 0 of the node's
    # communicator, as key=rank orders it: found locally, without a reduction)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    group, node_group = comm.Get_group(), node.Get_group()
    leader = MPI.Group.Translate_ranks(node_group, [0], group)[0]
    node_group.Free()
    group.Free()
    node.Free()
    pairs = comm.allgather((hostname(), leader))
    hosts, leaders = [h for h, _ in pairs], [x for _, x in pairs]
    node_index = {x: i for i, x in enumerate(sorted(set(leaders)))}
    node_of = [node_index[x] for x in leaders]
    made_store = False
    checked: tuple[tuple[str, str], ...] = ()  # the stories held from the start: rank root's, checked
    if rank == root:
        try:
            resolved0 = as_config(with_env_overrides(cfg))
            plan(comm.Get_size(), len(node_index), resolved0.layout)  # raises what assign_roles would, below
            made_store = not os.path.lexists(resolved0.storage.root)
            checked = _held_stories(stories)  # a bad name: this rank's error, the same on every rank
            init_store(resolved0.storage.root)  # once, here, so every rank sees the same outcome
            packet: tuple[Config | None, int, tuple[str, str] | None] = (resolved0, _run_id(), None)
        except ChronoError as exc:
            packet = (None, 0, (type(exc).__name__, str(exc)))
        except OSError as exc:  # the store cannot be created (read-only, a file on its path, ...): nobody waits
            from .store.space import advice

            what = f"rank 0 on {hostname()}: storage.root: {exc.filename}: cannot create the store: {exc.strerror}"
            packet = (None, 0, ("ConfigError", f"{what}; {advice(exc)}"))
    else:
        packet = (None, 0, None)
    # the session's wall time starts where the config is given (rank 0, or a program run alone) entered session();
    # the stories held from the start are those that rank named
    (resolved, run_id, error), started, held = comm.bcast((packet, entered, checked), root=root)
    if error is not None:
        raise (StoreError if error[0] == "StoreError" else ConfigError)(error[1])
    assert resolved is not None
    roles = assign_roles(comm.Get_size(), resolved.layout, node_of)  # identical on every rank
    # what the defaults resolved to (the rule's counts, the autoscaler), for every role and the run record
    p = plan(comm.Get_size(), len(node_index), resolved.layout)
    layout = LayoutConfig(p.keepers, p.graphers, p.per_node, p.spares, p.clients)
    elastic = dataclasses.replace(resolved.elastic, auto=autoscaler_on(resolved.elastic.auto, roles))
    storage = dataclasses.replace(resolved.storage, staging=resolve_staging(resolved.storage.staging, len(node_index)))
    resolved = dataclasses.replace(resolved, layout=layout, elastic=elastic, storage=storage)  # (user's cfg: untouched)
    # the role's own modules (numpy, h5py) load now on the ranks a program waits for at its start: the
    # clients and the visor (it answers their first requests). Keepers, graphers and spares load theirs after
    # the split, beside the program's start, and meanwhile sleep in _arrive below, leaving the CPU to the
    # ranks still importing (measured: perf/bench_record.py, docs/architecture.md "Start-up")
    if roles.role[rank] == CLIENT:
        from . import client  # noqa: F401
    else:
        _no_blas_threads()
    if roles.role[rank] == VISOR:
        from . import visor  # noqa: F401
    # every grapher checks the directories it will write, on its own node; all ranks see every answer
    # spares may become graphers: their directories are checked too
    mine: list[str] = []
    writes = roles.role[rank] in (GRAPHER, SPARE)
    if writes:
        from .store.dirs import check_dirs

        mine = check_dirs(resolved.storage, run_id)
    problems: list[str] = []
    if any(_arrive(comm, len(mine))):  # the texts only when a grapher has any: one collective less
        problems = [f"rank {r} on {hosts[r]} (grapher): {p}" for r, ps in enumerate(comm.allgather(mine)) for p in ps]
    if problems:  # (every grapher has checked: what the checks and rank 0 made can go)
        if writes:
            from .store.dirs import discard_staging

            discard_staging(resolved.storage, run_id)
        if made_store:
            remove_unused_store(resolved.storage.root)
        raise ConfigError("a grapher cannot write its files: " + " | ".join(problems))
    ctx = Context(comm=comm, rank=rank, role=roles.role[rank], roles=roles, cfg=resolved, run_id=run_id, hosts=hosts)
    ctx.started = started
    ctx.stories = held
    return ctx


def _held_stories(stories: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``session(stories=...)`` checked: (chronicle, story) pairs of valid names, else a ConfigError."""
    from .names import check_name

    if isinstance(stories, (str, bytes)) or not isinstance(stories, (tuple, list)):
        raise ConfigError(f"session(stories=...) takes a list of (chronicle, story) pairs, not {stories!r}")
    held = []
    for pair in stories:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ConfigError(f"session(stories=...): {pair!r} is not a (chronicle, story) pair")
        try:
            held.append((check_name(pair[0], "chronicle"), check_name(pair[1], "story")))
        except ChronoError as exc:
            raise ConfigError(f"session(stories=...): {exc}") from None
    return tuple(held)


def _no_blas_threads() -> None:
    """A service rank never does linear algebra: numpy's OpenBLAS, loaded with its worker threads (one per
    core) that spin as they start, would only take CPU from the program's ranks. One thread, if numpy is not
    loaded yet (a program that imported it before the session keeps what it has): measured here, importing
    numpy took 0.23 s of CPU with its threads and 0.11 s without."""
    if "numpy" not in sys.modules:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"


def _arrive(comm: Any, value: int = 0) -> array:
    """Wait for every rank to reach the session without spinning, and gather one integer from each: MPI's
    blocking collectives poll, and on an oversubscribed node (more ranks than cores) the ranks that
    arrived first took the CPU from those still importing. A nonblocking allgather tested with growing
    sleeps gives it back."""
    mine, every = array("q", [value]), array("q", bytes(8 * comm.Get_size()))
    req = comm.Iallgather([mine, MPI.INT64_T], [every, MPI.INT64_T])
    nap = 1e-4
    while not req.Test():
        time.sleep(nap)
        nap = min(nap * 1.5, WAIT_POLL_MAX_S)
    return every


def _say_once(exc: ChronoError, first: bool) -> None:
    """A start-up error is the same on every rank: if the program does not catch it, one line from the first
    rank says it, instead of a traceback from every rank (sys.excepthook; any other exception as before)."""
    exc._chronompi_say = first  # type: ignore[attr-defined]
    if getattr(sys.excepthook, "_chronompi", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        say = getattr(value, "_chronompi_say", None)
        if say is None:
            previous(kind, value, tb)
        elif say:
            sys.stderr.write(f"chronompi: {kind.__name__}: {value}\n")
            sys.stderr.flush()

    hook._chronompi = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _abort(comm: Any, ctx: Context | None, what: str) -> None:
    rank = comm.Get_rank()
    host = ctx.host if ctx else hostname()
    sys.stderr.write(f"chronompi: rank {rank} on {host} ({ctx.role if ctx else 'start-up'}) failed: {what}\n")
    sys.stderr.write(traceback.format_exc())
    sys.stderr.flush()
    comm.Abort(1)


@contextmanager
def session(comm: Any = None, cfg: Any = None, *, stories: Sequence[tuple[str, str]] = ()) -> Iterator[Client | None]:
    """Run a chronompi session over ``comm`` (``MPI.COMM_WORLD`` by default).

    Collective: every rank of ``comm`` must enter it. On client ranks it yields
    a :class:`Client` (whose ``comm`` is the clients' own communicator, for the
    science code); on service ranks it serves the whole session inside the
    call and yields ``None``, like mpi4py's ``MPICommExecutor``::

        with chronompi.session() as client:
            if client is not None:
                story = ...

    When the ``with`` block ends on every client, all events are in the store
    and every file is closed before the call returns on any rank.

    ``stories``: (chronicle, story) pairs that every client holds from the start, chronicles created as
    needed, as if each had called ``client.acquire_story`` (rank 0's list counts): no request to the visor
    per client and story (``chronompi record`` and ``init()`` hold the story of the logging records so).
    """
    entered = time.time()
    if comm is not None and not isinstance(comm, MPI.Comm):
        hint = " (the configuration is the second argument: session(cfg=...))" if cfg is None else ""
        raise TypeError(f"session(comm=...) takes an MPI communicator, not {type(comm).__name__}{hint}")
    base = comm if comm is not None else MPI.COMM_WORLD
    if base.Get_size() == 1:  # a program started alone (no mpirun): its service ranks are spawned
        from .spawn import embedded

        with embedded(cfg) as (merged, resolved, root):
            with session_over(merged, resolved, root, entered, stories) as client:
                yield client
        return
    # a job started by mpirun (or srun, or sbatch): SIGTERM, SIGINT and SIGUSR2 drain it (stop.py); a
    # program started alone keeps its own handling (Ctrl-C in a notebook stays a KeyboardInterrupt)
    restore = stop.install()
    try:
        with session_over(base, cfg, 0, entered, stories) as client:
            yield client
    finally:
        restore()


@contextmanager
def session_over(
    base: Any, cfg: Any, root: int, entered: float | None = None, stories: Sequence[tuple[str, str]] = ()
) -> Iterator[Client | None]:
    """:func:`session` over ``base`` (of 2 ranks or more); ``cfg`` counts as given on rank ``root``, and
    the session's wall time starts at ``entered`` there (report.py)."""
    entered = time.time() if entered is None else entered
    _arrive(base)
    world = base.Dup()  # never talk on the user's communicator
    try:
        ctx = _startup(world, cfg, entered, root, stories)
    except (ConfigError, StoreError) as exc:
        world.Free()
        _say_once(exc, base.Get_rank() == root)
        raise
    setup_logging(ctx.cfg.service.log_level, ctx.rank, ctx.role)
    role_comm = world.Split(ROLES.index(ctx.role), ctx.rank)
    try:
        if ctx.role == CLIENT:
            from .client import Client

            client = Client(ctx, role_comm)
            try:
                client._start()
            except BaseException:
                _abort(world, ctx, "client start-up")
            try:
                yield client
            except BaseException as exc:
                try:
                    client._close(failure=exc)
                except BaseException:
                    _abort(world, ctx, "client shutdown after an error")
                raise
            else:
                try:
                    client._close()
                except BaseException:
                    _abort(world, ctx, "client shutdown")
                _remember(client.summary)
        else:
            summary: dict[str, Any] | None = None
            try:
                if ctx.role == VISOR:
                    from .visor import Visor

                    visor = Visor(ctx)
                    visor.run()
                    summary = visor.summary
                else:  # keeper, grapher or spare: members come and go (member.py)
                    from .member import serve_member

                    summary = serve_member(ctx)
            except BaseException:
                _abort(world, ctx, f"{ctx.role} service")
            _remember(summary)
            yield None
    finally:
        role_comm.Free()
        world.Free()
