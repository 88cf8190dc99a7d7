"""``chronompi record -n N [options] [key=value ...] [mpirun options] -- python app.py [args]``.

Runs an unmodified mpi4py program on N compute ranks with chronompi's service ranks added on top: mpirun
starts N + S ranks, S from the layout rule for N clients (:func:`chronompi.layout.service_ranks`), and
every rank runs :mod:`chronompi.record`, which gives the program the N client ranks as its
``MPI.COMM_WORLD``. Config overrides (``storage.root=/scratch/x``) apply after what ``$CHRONOMPI_OVERRIDES``
holds; the launcher folds both into ``--set key=value`` arguments of every rank's command line (an
ssh-started node would not get the variable: PRRTE passes on only ``OMPI_*`` and ``PMIX_*`` variables).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from .errors import ConfigError

USAGE = (
    "chronompi record -n N [--chronicle C] [--story S] [--output] [--no-logging] [--no-freeze] [key=value ...] "
    "[mpirun options] -- python PROGRAM.py [ARGS]   (or -- python -m MODULE [ARGS])"
)
# interpreter options that take a value (python -X dev, -W error): passed on to every rank's python
_PY_VALUE_FLAGS = ("-X", "-W")
_PY_FLAGS = ("-u", "-O", "-OO", "-B", "-E", "-s", "-I", "-b", "-bb", "-q", "-v")


def _config_sections() -> set[str]:
    from .config import Config

    return {f.name for f in fields(Config)}


def split_head(head: Sequence[str]) -> tuple[argparse.Namespace, list[str], list[str]]:
    """Options before ``--``: record's own, config overrides (``section.key=value``) and mpirun's (the rest)."""
    from .record import FLAGS

    p = argparse.ArgumentParser(prog="chronompi record", usage=USAGE, allow_abbrev=False, add_help=False)
    p.add_argument("-n", "--np", type=int, default=None)
    p.add_argument("--chronicle", default=None)
    p.add_argument("--story", default=None)
    for flag in FLAGS:
        p.add_argument(flag, action="store_true")
    ns, rest = p.parse_known_args(list(head))
    sections = _config_sections()
    overrides, mpirun_opts = [], []
    prev_takes_value = False
    for tok in rest:
        m = re.fullmatch(r"([A-Za-z_]+)\.[A-Za-z0-9_.]+=.*", tok)
        if m and m.group(1) in sections and not prev_takes_value:
            overrides.append(tok)
            prev_takes_value = False
            continue
        mpirun_opts.append(tok)
        prev_takes_value = tok.startswith("-") and "=" not in tok
    return ns, overrides, mpirun_opts


def split_program(command: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """``python [flags] app.py args`` -> (interpreter flags, module or None, [script, args] or [args])."""
    cmd = list(command)
    if not cmd:
        raise ConfigError(f"give the program after --, e.g. {USAGE}")
    first = os.path.basename(cmd[0])
    if re.fullmatch(r"python[0-9.]*", first):
        cmd = cmd[1:]
    elif not cmd[0].endswith(".py"):
        raise ConfigError(
            f"chronompi record runs Python programs; {cmd[0]!r} is neither python nor a .py file: "
            "give `-- python PROGRAM.py [ARGS]` or `-- python -m MODULE [ARGS]`"
        )
    flags: list[str] = []
    while cmd and cmd[0].startswith("-"):
        tok = cmd.pop(0)
        if tok == "-m":
            if not cmd:
                raise ConfigError("python -m needs a module name after it")
            return flags, cmd[0], cmd[1:]
        if tok == "-c":
            raise ConfigError("chronompi record runs a script or a module (-m); -c CODE is not supported")
        if tok in _PY_VALUE_FLAGS:
            if not cmd:
                raise ConfigError(f"python {tok} needs a value")
            flags += [tok, cmd.pop(0)]
        elif tok in _PY_FLAGS or re.fullmatch(r"-[XW].+", tok):
            flags.append(tok)
        else:
            raise ConfigError(f"python option {tok!r} is not supported by chronompi record; drop it or use -X/-W/-u")
    if not cmd:
        raise ConfigError(f"give the script to run after python, e.g. {USAGE}")
    if not Path(cmd[0]).is_file():
        raise ConfigError(f"program {cmd[0]!r} not found (from {os.getcwd()}); give the path of the script")
    return flags, None, cmd


def count_nodes(mpirun_opts: Sequence[str], env: Mapping[str, str]) -> int:
    """Nodes the job will span, as far as the command line and the environment tell (1 if they do not)."""
    for i, tok in enumerate(mpirun_opts):
        value = None
        if tok in ("--host", "-H", "--hostfile", "--machinefile", "-hostfile") and i + 1 < len(mpirun_opts):
            value = mpirun_opts[i + 1]
        elif "=" in tok and tok.split("=", 1)[0] in ("--host", "--hostfile"):
            tok, value = tok.split("=", 1)
        if value is None:
            continue
        if tok in ("--host", "-H"):
            return max(1, len({h.split(":")[0] for h in value.split(",") if h}))
        try:
            lines = Path(value).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"{tok} {value}: cannot read it ({exc.strerror})") from None
        return max(1, len({ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}))
    for key in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES", "PBS_NUM_NODES"):
        if env.get(key, "").isdigit():
            return max(1, int(env[key]))
    return 1


def cmd_record(argv: Sequence[str]) -> int:
    from .config import ENV_OVERRIDES, build
    from .launch import exec_mpi, mpi_env, mpirun_argv
    from .layout import service_ranks
    from .record import FLAGS
    from .report import STDOUT_TTY
    from .store.dirs import init_store, remove_unused_store
    from .store.space import advice

    args = list(argv)
    if "--" not in args:
        if "-h" in args or "--help" in args:
            print(__doc__)
            print(f"usage: {USAGE}")
            return 0
        raise ConfigError(f"put the program after --: {USAGE}")
    i = args.index("--")
    ns, overrides, mpirun_opts = split_head(args[:i])
    if ns.np is None or ns.np < 1:
        raise ConfigError(f"-n N (N >= 1 compute ranks for the program) is required: {USAGE}")
    flags, module, program = split_program(args[i + 1 :])
    env = mpi_env()
    text = os.environ.get(ENV_OVERRIDES, "").strip()
    pairs = [*shlex.split(text), *overrides, f"layout.clients={ns.np}"]
    cfg = build(None, pairs)
    made_store = not os.path.lexists(cfg.storage.root)
    try:  # here, once, rather than a traceback on every rank: rank 0 would find the same
        init_store(cfg.storage.root)
    except OSError as exc:
        raise ConfigError(
            f"storage.root: {exc.filename or cfg.storage.root}: cannot create the store: {exc.strerror}; {advice(exc)}"
        ) from None
    nodes = count_nodes(mpirun_opts, os.environ)
    services = service_ranks(ns.np, nodes, cfg.layout)
    # the resolved overrides travel on each rank's command line, not in the environment: a launcher that
    # starts remote nodes over ssh passes only its own variables on (PRRTE: OMPI_*, PMIX_*)
    env.pop(ENV_OVERRIDES, None)
    env.setdefault(STDOUT_TTY, "1" if sys.stdout.isatty() else "0")
    entry = [sys.executable, *flags, "-m", "chronompi.record"]
    if ns.chronicle:
        entry += ["--chronicle", ns.chronicle]
    if ns.story:
        entry += ["--story", ns.story]
    entry += [flag for flag, attr in FLAGS.items() if getattr(ns, attr)]
    for pair in pairs:
        entry += ["--set", pair]
    if module:
        entry += ["-m", module]
    entry += ["--", *program]
    status = exec_mpi(mpirun_argv(ns.np + services, entry, mpirun_opts, env), env, [Path(cfg.storage.root)])
    if status and made_store:
        remove_unused_store(cfg.storage.root)  # the job failed before its run began: no empty store left behind
    return status
