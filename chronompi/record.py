"""``python -m chronompi.record [options] -- PROGRAM [ARGS]``: run an unmodified program in a session.

What ``chronompi record`` starts on every rank (:mod:`chronompi.record_cli` builds the mpirun line). Every
rank enters the session (:func:`chronompi.embed.start`); service ranks serve and exit; on client ranks
``mpi4py.MPI.COMM_WORLD`` is the clients' communicator, the program's ``logging`` records (and with
``--output`` its stdout/stderr lines) are recorded, and the program runs as ``__main__`` (a script path, or
``-m module`` as ``python -m`` runs it) with ``sys.argv`` set as if it had been started alone. The session
ends when the program returns, calls ``sys.exit``, or raises; the rank then exits with the program's status.

What cannot be redirected: a communicator object the program gets from outside Python (a C, C++ or Fortran
extension calling ``MPI_COMM_WORLD`` itself) still names the whole job, service ranks included; such code
must be given ``MPI.COMM_WORLD`` from Python (mpi4py passes its handle) or run under ``session()``.
"""

from __future__ import annotations

import builtins
import gc
import os
import runpy
import sys
import traceback
import types
from collections.abc import Sequence
from typing import NoReturn

from . import embed
from .errors import ChronoError

USAGE = (
    "python -m chronompi.record [--chronicle C] [--story S] [--output] [--no-logging] [--no-freeze] "
    "[--set KEY=VALUE]... (-- script.py [args] | -m module [args])"
)
_VALUES = {"--chronicle": "chronicle", "--story": "story", "--set": "set"}
# record's switches, option -> attribute: `chronompi record` takes them and passes on those given (record_cli.py)
FLAGS = {"--output": "output", "--no-logging": "no_logging", "--no-freeze": "no_freeze"}


def parse(argv: Sequence[str]) -> types.SimpleNamespace:
    """The per-rank command line ``chronompi record`` builds (record_cli.py). Parsed by hand, not with
    argparse: every rank of a job runs this, and argparse with gettext is ~2.5 ms of imports each."""
    ns = types.SimpleNamespace(
        chronicle=None, story=embed.DEFAULT_STORY, output=False, no_logging=False, no_freeze=False, set=[]
    )
    ns.module, ns.program = None, []
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            ns.program = args[i + 1 :]
            break
        if a in ("-h", "--help"):
            print(f"usage: {USAGE}")
            raise SystemExit(0)
        name, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
        if name in _VALUES or name == "-m":
            if not eq:
                if i + 1 >= len(args):
                    _usage_error(f"{a} needs a value")
                i += 1
                value = args[i]
            if name == "-m":
                ns.module, rest = value, args[i + 1 :]
                ns.program = rest[1:] if rest[:1] == ["--"] else rest
                break
            if name == "--set":
                ns.set.append(value)
            else:
                setattr(ns, _VALUES[name], value)
        elif a in FLAGS:
            setattr(ns, FLAGS[a], True)
        else:
            _usage_error(f"unknown option {a!r}")
        i += 1
    if ns.module is None and not ns.program:
        _usage_error("give the program: -- script.py [args] or -m module [args]")
    return ns


def _usage_error(what: str) -> NoReturn:
    sys.stderr.write(f"usage: {USAGE}\npython -m chronompi.record: error: {what}\n")
    raise SystemExit(2)


def _run_program(ns: types.SimpleNamespace) -> int:
    """Run the program as __main__; its exit status (0, or what it passed to sys.exit, or 1 if it raised)."""
    if ns.module is not None:
        sys.argv = [ns.module, *ns.program]
        runpy.run_module(ns.module, run_name="__main__", alter_sys=True)
    else:
        script = ns.program[0]
        sys.argv = list(ns.program)
        sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python script.py` sets it
        if script.endswith(".py"):
            _run_as_main(script)
        else:  # a zip application or a compiled file: runpy knows how to open it
            runpy.run_path(script, run_name="__main__")
    return 0


def _run_as_main(script: str) -> None:
    """Run a script as ``python script.py`` does: as the module ``__main__``, which stays in ``sys.modules``
    after it returns, so that Python's shutdown clears its globals as it clears any module's (an open file
    there is closed and flushed even when the program's atexit functions keep its namespace alive; runpy's
    ``run_path`` puts its own ``__main__`` back and leaves that namespace to the garbage collector)."""
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=script, __cached__=None, __builtins__=builtins, __spec__=None)
    from importlib.machinery import SourceFileLoader

    main.__loader__ = SourceFileLoader("__main__", script)
    with open(script, "rb") as f:
        code = compile(f.read(), script, "exec", dont_inherit=True)
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _freeze_what_is_there() -> None:
    """Move every object alive now, before the program runs (the modules imported so far: numpy, mpi4py,
    chronompi's, the standard library's), into the garbage collector's permanent generation.

    Python's shutdown walks every tracked object with its cycle collector; with numpy and mpi4py loaded
    that is 10-15 ms of CPU per process, and every rank of a job does it at the same time, so on an
    oversubscribed node it was most of a job's end (perf/bench_record.py: at 64 ranks on 2 cores the job
    now ends sooner than the plain program; docs/architecture.md "Unmodified programs"). It also makes
    the program's own full collections cheaper, which is what ``gc.freeze()`` is for. The program's
    objects are collected as before: only garbage cycles made of objects that existed before it started
    are never collected (they stay alive until the process ends); atexit functions, ``logging``'s flush
    and the flush of the standard streams run as before. ``--no-freeze`` leaves it out.

    Nothing is collected first: a collection here took 8.6 ms of CPU per process (64 of them at once
    delay the program's start by a quarter of a second on 2 cores), and the garbage of the imports,
    frozen with the rest, is a few kilobytes that the shutdown would have freed."""
    gc.freeze()


def _status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")  # sys.exit("message"): Python prints it and exits 1
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse(sys.argv[1:] if argv is None else argv)
    program = ns.module or (ns.program[0] if ns.program else "")
    chronicle = ns.chronicle or embed.program_name(program, ns.module)
    try:
        cfg = None
        if ns.set:  # chronompi record folded $CHRONOMPI_OVERRIDES into these: not applied a second time
            from .config import ENV_OVERRIDES, build

            os.environ.pop(ENV_OVERRIDES, None)
            cfg = build(None, ns.set, env="chronompi record")
        client = embed.start(
            cfg,
            chronicle=chronicle,
            story_name=ns.story,
            capture_logging=not ns.no_logging,
            capture_output=ns.output,
        )
    except ChronoError as exc:  # the same error on every rank (session start-up): one line, from rank 0
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == 0:
            sys.stderr.write(f"chronompi record: {exc}\n")
        return 2
    if client is None:
        if not ns.no_freeze:  # a service rank: the session is over and only chronompi's code ran here
            gc.collect()
            gc.freeze()
        return 0
    if not ns.no_freeze:
        _freeze_what_is_there()
    failure: BaseException | None = None
    try:
        status = _run_program(ns)
    except SystemExit as exc:
        status = _status(exc)
        if status:
            failure = exc
    except BaseException as exc:  # the program raised: as python prints it, after the session has its part
        failure = exc
        status = 1
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, "<frozen runpy>"):
            tb = tb.tb_next  # the program's frames only, as python itself would print them
        traceback.print_exception(type(exc), exc, tb)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    embed.finalize(failure)
    return status


if __name__ == "__main__":
    sys.exit(main())
