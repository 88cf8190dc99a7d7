"""The ``chronompi`` command.

chronompi run [hydra overrides]          the workload simulator (under mpirun)
chronompi mpirun -n N COMMAND...         mpirun with the environment this machine needs
chronompi ls STORE                       chronicles, stories, event counts
chronompi replay STORE CHRONICLE STORY   print events of a time range
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ChronoError


def compose(overrides: Sequence[str] = (), config_dir: str | None = None) -> Any:
    """Compose the config with Hydra's compose API (no output directories, no chdir).

    Uses ``config_dir``, else ``$CHRONOMPI_CONF``, else ``./conf`` when it holds a
    ``config.yaml``, else the groups shipped inside the package (``chronompi/conf``).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .config import as_config, register_configs

    register_configs()
    cdir = config_dir or os.environ.get("CHRONOMPI_CONF")
    if cdir is None and (Path.cwd() / "conf" / "config.yaml").is_file():
        cdir = str(Path.cwd() / "conf")
    if cdir is None:
        cdir = str(Path(__file__).parent / "conf")
    try:
        with initialize_config_dir(config_dir=str(Path(cdir).resolve()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        from .errors import ConfigError

        raise ConfigError(f"bad configuration override in {list(overrides)}: {exc}") from None
    return as_config(cfg)


def cmd_run(argv: Sequence[str]) -> int:
    """The workload: rank 0 composes the config, every rank gets it by broadcast."""
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
    with session(comm, cfg) as client:
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
    from .launch import mpi_env, mpirun_argv

    p = argparse.ArgumentParser(prog="chronompi mpirun", description="mpirun with the environment chronompi needs")
    p.add_argument("-n", "--np", type=int, required=True, help="number of ranks")
    p.add_argument("command", nargs=argparse.REMAINDER, help="[mpirun options --] program and its arguments")
    a = p.parse_args(argv)
    rest = list(a.command)
    extra: list[str] = []
    if "--" in rest:
        i = rest.index("--")
        extra, rest = rest[:i], rest[i + 1 :]
    if not rest:
        p.error("give the program to run, e.g. chronompi mpirun -n 8 chronompi run")
    env = mpi_env()
    argv_full = mpirun_argv(a.np, rest, extra, env)
    os.execvpe(argv_full[0], argv_full, env)
    return 0  # not reached


def cmd_ls(argv: Sequence[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from .store import open_store

    p = argparse.ArgumentParser(prog="chronompi ls")
    p.add_argument("store")
    a = p.parse_args(argv)
    with open_store(a.store) as st:
        t = Table(title=str(a.store))
        for col in ("chronicle", "story", "events"):
            t.add_column(col)
        for c in st.chronicles():
            for s in st.stories(c):
                t.add_row(c, s, f"{st.count(c, s):,}")
        Console().print(t)
    return 0


def cmd_replay(argv: Sequence[str]) -> int:
    from .store import open_store

    p = argparse.ArgumentParser(prog="chronompi replay")
    p.add_argument("store")
    p.add_argument("chronicle")
    p.add_argument("story")
    p.add_argument("--start", type=int, default=None, help="ns since the epoch (inclusive)")
    p.add_argument("--end", type=int, default=None, help="ns since the epoch (exclusive)")
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    with open_store(a.store) as st:
        ev = st.replay(a.chronicle, a.story, a.start, a.end)
    out = sys.stdout
    for row in ev[: a.limit]:
        out.write(f"{row['time']}\t{row['client']:016x}\t{row['seq']}\t{row['payload']!r}\n")
    return 0


COMMANDS = {"run": cmd_run, "mpirun": cmd_mpirun, "ls": cmd_ls, "replay": cmd_replay}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[args[0]](args[1:])
    except ChronoError as exc:
        print(f"chronompi {args[0]}: {exc}", file=sys.stderr)
        return 2
