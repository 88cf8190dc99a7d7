"""chronompi: a distributed event-log store that runs inside an MPI job.

usage: chronompi [-h | -V] COMMAND [ARGS...]   (chronompi COMMAND --help for its options)

options
  -h, --help                             this help
  -V, --version                          print chronompi's version and exit

recording
  record -n N [OPTIONS] [key=value ...] -- python PROGRAM.py [ARGS]
                                         run an unmodified mpi4py program on N ranks, with chronompi's
                                         service ranks added; its MPI.COMM_WORLD is the N ranks, its
                                         logging records are recorded (record --help)
  run [hydra overrides] [--verify]       the workload simulator, under mpirun:
                                         chronompi mpirun -n 8 chronompi run  (run --help: config and defaults)
  mpirun -n N [OPTIONS --] COMMAND...    mpirun with the environment this machine needs

store tools (STORE is a store directory, e.g. ./chronompi-store)
  ls STORE                               chronicles, stories, event counts, time spans; runs
  replay STORE CHRONICLE STORY           events of a story in total order
         [--start T] [--end T] [--limit N] [--format text|jsonl|csv|log]
  stats STORE                            per story: events, bytes, span, rate, segments, late runs; per run
  export parsl STORE DB [--follow]       rebuild Parsl's monitoring database (SQLite, or --format parquet)
                                         from the store; --follow: live while the job runs
  export STORE [--format jsonl|csv|parquet] [--output FILE] [--chronicle C] [--story S]
  fsck STORE [--dry-run]                 check the store and repair what a crash left behind

Times (T) are ns since the epoch or ISO-8601 (2026-11-25T06:41:07.123456789Z; no zone means UTC).
ls and stats print tables on a terminal and tab-separated text otherwise (or with --plain).
Exit status: 0 ok, 1 fsck found problems it did not repair, 2 bad input or an unreadable store.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import ChronoError, ConfigError, DamagedSegment, StoreError
from .store_cli import SKIPPING, cmd_export, cmd_fsck, cmd_ls, cmd_replay, cmd_stats, one_line


def conf_dir(config_dir: str | None = None) -> Path:
    """``config_dir``, else ``$CHRONOMPI_CONF``, else ``./conf`` when it holds a ``config.yaml``,
    else the groups shipped inside the package (``chronompi/conf``)."""
    cdir = config_dir or os.environ.get("CHRONOMPI_CONF")
    if cdir is None and (Path.cwd() / "conf" / "config.yaml").is_file():
        cdir = str(Path.cwd() / "conf")
    if cdir is None:
        cdir = str(Path(__file__).parent / "conf")
    return Path(cdir).resolve()


def compose(overrides: Sequence[str] = (), config_dir: str | None = None) -> Any:
    """Compose the config with Hydra's compose API (no output directories, no chdir), from :func:`conf_dir`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .config import FROM_CLI, as_config, check_workload, register_configs

    register_configs()
    cdir = conf_dir(config_dir)
    try:
        with initialize_config_dir(config_dir=str(cdir), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise _override_error(exc, overrides) from None
    out = as_config(cfg, source=FROM_CLI)
    check_workload(out)
    return out


def _override_error(exc: BaseException, overrides: Sequence[str]) -> ChronoError:
    """Hydra's error about a command-line override, in one line and our words."""
    from hydra.errors import MissingConfigException, OverrideParseException

    from .config import FROM_CLI, explain
    from .errors import ConfigError

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.partition("/")
        options = [o for o in exc.options or () if not o.endswith("_schema")]
        return ConfigError(f"{FROM_CLI}: {group}={name}: no such {group}; the choices are {', '.join(options)}")
    if isinstance(exc, ValueError) and "group override" in str(exc):  # e.g. storage=3
        return ConfigError(
            f"{FROM_CLI}: {' '.join(overrides)}: a config group (layout=, storage=, ...) takes the name of one of "
            "its choices; set a single key as group.key=VALUE"
        )
    err = explain(exc, FROM_CLI)
    if isinstance(exc, OverrideParseException):
        return ConfigError(f"{err}; write key=value, e.g. workload.events=1000")
    return err


RUN_USAGE = """usage: chronompi mpirun -n N chronompi run [OVERRIDES...] [--verify]
       chronompi run --help [OVERRIDES...]       this text, with the config the overrides give
       chronompi run --cfg job [OVERRIDES...]    only that config (YAML), without running anything

The workload simulator: rank 0 is the visor, then the keepers and graphers of the layout; every
other rank is a client that logs workload.events events. OVERRIDES are Hydra's: group=option
selects a group's option, key=value sets one key, +experiment=NAME adds an experiment.
--verify reads the store back afterwards and checks every event of the run.
"""


def _yaml_of(cfg: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg)).rstrip("\n")


def run_help(overrides: Sequence[str] = ()) -> str:
    """``chronompi run --help``: Hydra's help layout (groups, then the composed config with its defaults)."""
    cdir = conf_dir()
    groups = []
    for d in sorted(p for p in cdir.iterdir() if p.is_dir()):
        options = ", ".join(sorted(f.stem for f in d.glob("*.yaml")))
        groups.append(f"{'+' if d.name == 'experiment' else ''}{d.name}: {options}")
    return (
        f"{RUN_USAGE}\n== Configuration groups ==\nCompose your configuration from those groups (group=option)\n"
        f"(from {cdir})\n\n" + "\n".join(groups) + "\n\n== Config ==\n"
        "Override anything in the config (foo.bar=value); the keys and their defaults"
        + (f" with {' '.join(overrides)}" if overrides else "")
        + ":\n\n"
        + _yaml_of(compose(overrides))
        + "\n"
    )


def _alone_hint(cfg: Any) -> str:
    """What to type when ``chronompi run`` was started without mpirun (a single rank)."""
    from .layout import service_ranks

    clients = max(1, cfg.layout.clients)
    need = clients + service_ranks(clients, 1, cfg.layout)
    return (
        f"started as a single process, but the run needs at least {need} ranks; launch it under mpirun, "
        f"e.g. chronompi mpirun -n {max(need, 8)} chronompi run"
    )


def cmd_run(argv: Sequence[str]) -> int:
    """The workload: rank 0 composes the config, every rank gets it by broadcast."""
    args = list(argv)
    if "-h" in args or "--help" in args:
        print(run_help([a for a in args if a not in ("-h", "--help", "--verify")]))
        return 0
    if args[:2] == ["--cfg", "job"]:
        print(_yaml_of(compose([a for a in args[2:] if a != "--verify"])))
        return 0
    from mpi4py import MPI

    from .session import last_summary, session
    from .workload import run_workload, verify

    comm = MPI.COMM_WORLD
    verify_after = "--verify" in argv
    overrides = [a for a in argv if a != "--verify"]
    packet: Any = None
    if comm.Get_rank() == 0:
        try:
            packet = ("ok", compose(overrides))
        except ChronoError as exc:
            packet = ("err", str(exc))
    status, value = comm.bcast(packet, root=0)
    if status == "err":
        if comm.Get_rank() == 0:
            print(f"chronompi run: {value}", file=sys.stderr)
        return 2
    cfg = value
    if comm.Get_size() == 1:  # plain `chronompi run`: say how to start it, not only that ranks are missing
        print(f"chronompi run: {_alone_hint(cfg)}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(session(comm, cfg))
        except (ConfigError, StoreError) as exc:  # start-up: the same error on every rank (session()), said once
            if comm.Get_rank() == 0:
                print(f"chronompi run: {exc}", file=sys.stderr)
            return 2
        if client is not None:
            run_workload(client, cfg.workload)
    if comm.Get_rank() == 0:
        summary = last_summary()
        print(f"store: {summary.get('store')}  run: {summary.get('run')}")
        if verify_after:
            manifest = json.loads((Path(cfg.storage.root) / "runs" / f"r{summary['run']}.json").read_text())
            result = verify(cfg.storage.root, manifest, cfg.workload)
            ok = not result["problems"]
            print(f"verify: {'OK' if ok else 'FAILED'}: {result['checked']:,} events checked of {result['expected']:,}")
            for p in result["problems"]:
                print(f"  {p}")
            return 0 if ok else 1
    return 0


def cmd_mpirun(argv: Sequence[str]) -> int:
    from .ending import store_guesses
    from .launch import exec_mpi, mpi_env, mpirun_argv
    from .report import STDOUT_TTY

    p = argparse.ArgumentParser(
        prog="chronompi mpirun",
        description="mpirun with the environment chronompi needs. Options other than -n go to mpirun; put them "
        "before --, e.g. chronompi mpirun -n 16 --host a,b -- python my_code.py",
    )
    p.add_argument("-n", "--np", type=int, required=True, help="number of ranks")
    p.add_argument("command", nargs=argparse.REMAINDER, help="[mpirun options --] program and its arguments")
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:  # mpirun's own options (any, with their values) stand between -n N and the first --
        i = argv.index("--")
        head = argparse.ArgumentParser(prog="chronompi mpirun", add_help=False, allow_abbrev=False)
        head.add_argument("-n", "--np", type=int, required=True)
        if "-h" in argv[:i] or "--help" in argv[:i]:
            p.parse_args(["--help"])
        known, extra = head.parse_known_args(argv[:i])
        np_, rest = known.np, argv[i + 1 :]
    else:
        a = p.parse_args(argv)
        np_, rest = a.np, list(a.command)
    if not rest:
        p.error("give the program to run, e.g. chronompi mpirun -n 8 chronompi run")
    env = mpi_env()
    env.setdefault(STDOUT_TTY, "1" if sys.stdout.isatty() else "0")  # ranks cannot tell (see report.py)
    if sys.stdout.isatty():
        env.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))  # the ranks' pty says 80
    argv_full = mpirun_argv(np_, rest, extra, env)
    return exec_mpi(argv_full, env, store_guesses(rest, env))


# -- store tools ----------------------------------------------------------------------------------------------------
def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and not isinstance(exc, ChronoError):
        text = str(exc.args[0]) if exc.args else "key not found"
    elif isinstance(exc, DamagedSegment) and str(exc).startswith(SKIPPING):
        text = (
            f"unreadable segment {str(exc)[len(SKIPPING) :]} "
            "(chronompi fsck STORE moves it aside; --skip-damaged reads the rest)"
        )
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, (OSError, KeyError)) and not isinstance(exc, ChronoError):
        text = f"{text} ({type(exc).__name__})"
    return one_line(text)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that flushing it at exit cannot fail again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _store_command(cmd: str, fn: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """Run a store tool: every error becomes one line on stderr and an exit status, never a traceback."""
    try:
        return fn(argv)
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        _quiet_stdout()
        return 141  # what a shell reports for a process ended by SIGPIPE
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except (ChronoError, KeyError, ValueError, OSError, UserWarning) as exc:
        print(f"chronompi {cmd}: {_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a damaged file can raise anything from h5py or numpy
        if os.environ.get("CHRONOMPI_DEBUG"):
            raise
        why = f"unexpected {type(exc).__name__}: {_message(exc)}"
        print(f"chronompi {cmd}: {why} (CHRONOMPI_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


def cmd_record(argv: Sequence[str]) -> int:
    from .record_cli import cmd_record as run

    return run(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "record": cmd_record,
    "run": cmd_run,
    "mpirun": cmd_mpirun,
    "ls": cmd_ls,
    "replay": cmd_replay,
    "stats": cmd_stats,
    "export": cmd_export,
    "fsck": cmd_fsck,
}
STORE_COMMANDS = ("ls", "replay", "stats", "export", "fsck")


def _print(text: str, file: IO[str]) -> None:
    file.write(text if text.endswith("\n") else text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        _print(__doc__ or "", sys.stderr)
        return 2
    cmd = args[0]
    if cmd in ("-h", "--help", "help"):
        _print(__doc__ or "", sys.stdout)
        return 0
    if cmd in ("-V", "--version"):
        from ._version import __version__

        print(f"chronompi {__version__}")
        return 0
    if cmd not in COMMANDS:
        print(
            f"chronompi: unknown command {cmd!r}; the commands are {', '.join(COMMANDS)} (see chronompi --help)",
            file=sys.stderr,
        )
        return 2
    if cmd in STORE_COMMANDS:
        return _store_command(cmd, COMMANDS[cmd], args[1:])
    try:
        return COMMANDS[cmd](args[1:])
    except ChronoError as exc:
        print(f"chronompi {cmd}: {exc}", file=sys.stderr)
        return 2
