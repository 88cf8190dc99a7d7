"""What ``chronompi mpirun`` and ``chronompi record`` say when a job ends badly: one line.

Open MPI ends the whole job when a rank dies or a node is lost (its daemon there stops answering), within
a second, before chronompi's services can write anything: the run record stays ``running``. Open MPI's own
message names the node (for a lost node it reads like a start-up failure: "A daemon failed to report back
... Remote host: n2"), and the run record, written at start-up, says which ranks ran where. The launcher
puts the two together:

    chronompi: node n2 was lost (ranks there: keeper 4, client 5-7); the job ended with exit 255; run
    8f0c... in STORE is left running: every event covered by a returned sync() is recovered by
    `chronompi fsck STORE --job-ended`

The launcher learns which store and run are the job's from the visor: with ``$CHRONOMPI_LAUNCHER`` set (the
launcher sets it, and passes it to every node), the visor writes one marker line on its stdout when the run
starts (:func:`tell_launcher`), which the launcher takes out of the output (:class:`Markers`). Without it
(another launcher) nothing is printed; the launcher then guesses the store from the command line.

No MPI and nothing heavy here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Open MPI 5 (PRRTE): a node whose daemon died, and a rank that died
_LOST_NODE = (
    re.compile(r"daemon failed to report back.*?Remote host:\s+(\S+)", re.S),  # (also when it died later)
    re.compile(r"lost communication with a remote daemon.*?Remote daemon:.*?on node (\S+)", re.S),
)
_DEAD_RANK = re.compile(r"process rank (\d+) with PID \d+ on node (\S+) exited on\s+signal (\d+)")
DEFAULT_STORE = "chronompi-store"
LAUNCHER = "CHRONOMPI_LAUNCHER"  # set by chronompi mpirun / record: the visor tells it its run (tell_launcher)
MARK = b"\x1e"  # starts a marker (ASCII record separator: never in a program's text output); a newline ends it
_RUN = re.compile(rb"chronompi-run ([0-9a-f]+) (.*)")


def tell_launcher(run: str, store: str | Path) -> None:
    """On the visor, at the run's start: tell ``chronompi mpirun`` which run in which store is the job's."""
    if os.environ.get(LAUNCHER) == "1":
        sys.stdout.write(f"\x1echronompi-run {run} {Path(store).resolve()}\n")
        sys.stdout.flush()


class Markers:
    """Takes the visor's marker lines out of the output on its way through the launcher; every other byte,
    a lone RS in a program's binary output included, passes unchanged."""

    HEAD = MARK + b"chronompi-run "
    LONGEST = 8192  # a "marker" without its newline by then is not one: passed on

    def __init__(self) -> None:
        self.pending = b""  # what may be the start of a marker, held until its newline (or until it is not one)
        self.run: tuple[Path, str] | None = None  # (store, run id) of the last marker

    def strip(self, chunk: bytes) -> bytes:
        data, out, at = self.pending + chunk, [], 0
        self.pending = b""
        while (i := data.find(MARK, at)) >= 0:
            rest = data[i : i + len(self.HEAD)]
            if not self.HEAD.startswith(rest):  # an RS of the program's own
                at = i + 1
                continue
            j = data.find(b"\n", i)
            if len(rest) < len(self.HEAD) or j < 0:  # perhaps a marker: wait for more
                if len(data) - i < self.LONGEST:
                    out.append(data[:i])
                    self.pending = data[i:]
                    return b"".join(out)
                at = i + 1
                continue
            m = _RUN.fullmatch(data[i + 1 : j])
            if m is None:
                at = i + 1
                continue
            self.run = (Path(m.group(2).decode(errors="replace")), m.group(1).decode())
            out.append(data[:i])
            data, at = data[j + 1 :], 0
        out.append(data)
        return b"".join(out)

    def flush(self) -> bytes:
        """The stream ended: what was held back (a marker never finished) is output."""
        held, self.pending = self.pending, b""
        return held


def store_guesses(command: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> list[Path]:
    """The stores a job started by ``command`` may write: ``storage.root=`` on its command line or in
    ``$CHRONOMPI_OVERRIDES``, else the default ``chronompi-store`` (relative to ``cwd``)."""
    words = list(command) + shlex.split(env.get("CHRONOMPI_OVERRIDES", ""), posix=True)
    roots = [w.split("=", 1)[1] for w in words if w.startswith(("storage.root=", "++storage.root=", "+storage.root="))]
    base = cwd or Path.cwd()
    return [base / r for r in (roots or [DEFAULT_STORE])]


def running_run(
    stores: Sequence[Path], since_ns: int, named: tuple[Path, str] | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The job's run record if it is still ``running``, and its store: the run the visor ``named``, else the
    newest running one that started after ``since_ns`` in one of ``stores``."""
    found: list[tuple[int, Path, dict[str, Any]]] = []
    if named is not None:
        stores = [named[0]]
    for store in stores:
        for p in (store / "runs").glob(f"r{named[1]}.json" if named else "r*.json"):
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(rec, dict) and rec.get("status") == "running" and int(rec.get("start") or 0) >= since_ns:
                found.append((int(rec["start"]), store, rec))
    if not found:
        return None
    _, store, rec = max(found, key=lambda x: x[0])
    return store, rec


def stopped_by(named: tuple[Path, str] | None) -> int | None:
    """The signal that stopped the run the visor ``named`` (its record says ``stopped``: stop.py), or None.
    The job's exit status is then the signal's, whatever the launcher made of the visor's abort (MPICH's
    hydra may report the SIGKILL it sent the aborting rank itself)."""
    import signal

    if named is None:
        return None
    try:
        rec = json.loads((named[0] / "runs" / f"r{named[1]}.json").read_text())
        return int(signal.Signals[rec["reason"]["signal"]]) if rec.get("status") == "stopped" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _on(rec: dict[str, Any] | None, host: str) -> str:
    """`` (ranks there: keeper 4, client 5-7)`` from the run record's placement, or ``""``."""
    roles = ((rec or {}).get("nodes") or {}).get(host)
    if not roles:
        return ""
    return " (ranks there: " + ", ".join(f"{role} {ranks}" for role, ranks in roles.items()) + ")"


def _role_of(rec: dict[str, Any] | None, host: str, rank: int) -> str:
    for role, ranks in (((rec or {}).get("nodes") or {}).get(host) or {}).items():
        for part in ranks.split(","):
            a, _, b = part.partition("-")
            if int(a) <= rank <= int(b or a):
                return f" ({role})"
    return ""


def lost_node(output: str) -> str | None:
    """The node Open MPI says it lost, from what mpirun printed."""
    for pattern in _LOST_NODE:
        m = pattern.search(output)
        if m:
            return m.group(1).strip(".,;")
    return None


def crash_line(
    returncode: int, output: str, stores: Sequence[Path], since_ns: int, named: tuple[Path, str] | None = None
) -> str | None:
    """The line for a job that ended with ``returncode`` (non-zero, or zero after losing a node) after
    printing ``output`` (the end of what mpirun printed), or None when there is nothing to add (the run
    ended properly, or nothing is known)."""
    found = running_run(stores, since_ns, named)
    store, rec = found if found else (None, None)
    what = None
    host = lost_node(output)
    if host is not None:
        what = f"node {host} was lost{_on(rec, host)}"
    else:
        m = _DEAD_RANK.search(output)
        if m:
            rank, host, sig = int(m.group(1)), m.group(2), int(m.group(3))
            what = f"rank {rank}{_role_of(rec, host, rank)} on {host} died of signal {sig}"
    if rec is None:
        if what is None:
            return None  # not a chronompi run, or it ended and wrote its record
        return (
            f"chronompi: {what}; the job ended with exit {returncode}; if it was recording, "
            "`chronompi fsck STORE --job-ended` recovers every event covered by a returned sync()"
        )
    where = shlex.quote(str(store))
    return (
        f"chronompi: {what or 'the job failed'}; the job ended with exit {returncode}; run {rec.get('run')} in "
        f"{store} is left running: `chronompi fsck {where} --job-ended` recovers every event covered by a "
        "returned sync()"
    )
