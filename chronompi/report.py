"""Human-readable run summaries: one line (the default for programs) or rich tables (``chronompi run``).

Wall time and rate, defined once for the whole package (the summary table, the one line, the run record that
``chronompi stats`` reads, and ``chronompi run``'s progress line):

- **wall time**: seconds from the start of the session (rank 0, the visor, entering ``session()``) to the end of
  the run (every client closed, every event stored, every file closed), on the visor's clock. Launching the job,
  importing Python modules and whatever a program does before ``session()`` is not in it.
- **rate**: events stored / wall time.

Next to them the summary gives ``process_s``, the seconds since rank 0's process started (Linux), so that the
time before the session (launch, imports, the program's own start) is visible, not hidden.

The progress line of ``chronompi run`` shows the same two quantities while the run goes on (events logged so far /
seconds since the session started, read on the client's clock corrected to the visor's); its last line comes when
the last client has finished logging, so the summary's wall time is that plus the time the service ranks took to
store what was still in flight, and its rate is the same or a little lower.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


STDOUT_TTY = "CHRONOMPI_STDOUT_TTY"  # set by `chronompi mpirun`: 1 if its own stdout is a terminal, else 0


def stdout_is_terminal() -> bool:
    """Whether what this rank prints ends up on a terminal.

    Under mpirun a rank cannot tell: Open MPI hands its ranks a pseudo-terminal even when mpirun's output goes
    to a file. ``chronompi mpirun`` therefore says what its own stdout is in ``$CHRONOMPI_STDOUT_TTY``; without
    it, the rank's own stdout decides (``TERM=dumb`` counts as no terminal)."""
    said = os.environ.get(STDOUT_TTY)
    if said in ("0", "1"):
        return said == "1"
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def process_age_s() -> float | None:
    """Seconds since this process started (from ``/proc``); None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime (after "pid (comm)")
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def _since_process(summary: dict[str, Any]) -> str:
    p = summary.get("process_s")
    return "" if p is None else f"; {p:.1f} s since rank 0's process started"


def summary_line(summary: dict[str, Any]) -> str:
    """The run in one line (``service.summary: line``): events stored, store, run, wall time, rate, and anything
    that went wrong (drops, losses, failures)."""
    store = summary["store"]
    text = (
        f"chronompi: {summary['events_stored']:,} events in {store} (run {summary['run']}, "
        f"{summary['wall_s']:.2f} s, {summary['rate_events_s']:,.0f} events/s{_since_process(summary)})"
    )
    trouble = []
    if summary.get("events_logged", 0) != summary["events_stored"]:
        trouble.append(f"{summary['events_logged']:,} logged")
    if summary.get("dropped"):
        trouble.append(f"{summary['dropped']:,} dropped (client.policy=drop)")
    if summary.get("events_lost"):
        trouble.append(f"{summary['events_lost']:,} lost")
    for f in summary.get("failures", []):
        trouble.append(f"rank {f['rank']} on {f['host']} failed: {f['error']}")
    return text + "".join(f"; {t}" for t in trouble) + f"; chronompi stats {store} for details"


def print_summary_line(summary: dict[str, Any]) -> None:
    """Print :func:`summary_line` on stderr, where it does not mix with what the program writes on stdout."""
    print(summary_line(summary), file=sys.stderr, flush=True)


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print the visor's run summary: totals, then one row per service rank and client totals.

    No colours or other escape codes unless stdout is a terminal (:func:`stdout_is_terminal`)."""
    from rich.console import Console  # (here: a program's one line, the default, needs no rich)
    from rich.table import Table

    con = console or Console(width=110, force_terminal=stdout_is_terminal())
    t = Table(title=f"chronompi run {summary['run']}", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("store", str(summary["store"]))
    t.add_row("ranks / hosts", f"{summary['ranks']} / {', '.join(summary['hosts'])}")
    t.add_row("events logged", f"{summary['events_logged']:,}")
    t.add_row("events stored", f"{summary['events_stored']:,}")
    t.add_row("payload bytes stored", _fmt_bytes(summary["bytes_stored"]))
    t.add_row("dropped (policy=drop)", f"{summary['dropped']:,}")
    t.add_row("wall time", f"{summary['wall_s']:.2f} s (session start to last file closed{_since_process(summary)})")
    t.add_row("rate", f"{summary['rate_events_s']:,.0f} events/s (events stored / wall time)")
    for f in summary["failures"]:
        t.add_row("[red]failure[/red]", f"rank {f['rank']} on {f['host']}: {f['error']}")
    con.print(t)
    epochs = summary.get("epochs") or []
    if len(epochs) > 1:  # the membership changed during the run
        ep = Table(title="membership epochs")
        for col in ("epoch", "from", "keepers", "graphers", "events", "events/s", "change", "reason"):
            ep.add_column(col)
        for e in epochs:
            start = e.get("start")
            ep.add_row(
                str(e["epoch"]),
                "start"
                if start is None
                else time.strftime("%H:%M:%S", time.gmtime(start / 1e9)) + f".{start // 10**6 % 1000:03d}",
                str(len(e["keepers"])),
                str(len(e["graphers"])),
                f"{e.get('events', 0):,}",
                "-" if e.get("events_per_s") is None else f"{e['events_per_s']:,.0f}",
                "-" if e.get("change_s") is None else f"{e['change_s']:.2f} s",
                str(e.get("reason", "")),
            )
        con.print(ep)
    roles = summary.get("roles", {})
    r = Table(title="per role")
    for col in ("role", "rank", "events", "bytes", "detail"):
        r.add_column(col)
    for role in ("keeper", "grapher"):
        for s in roles.get(role, []):
            if role == "keeper":
                detail = (
                    f"batches {s['batches']:,}, chunks {s['chunks']:,}, late {s['late']:,}, "
                    f"open windows max {s['open_windows_max']}"
                )
            else:
                detail = (
                    f"windows {s['windows']:,}, late runs {s['late_runs']}, write {s['write_s']:.2f} s, "
                    f"segments {len(s['segments'])}"
                )
            r.add_row(role, str(s["rank"]), f"{s['events']:,}", _fmt_bytes(s["bytes"]), detail)
    clients = roles.get("client", [])
    if clients:
        r.add_row(
            "clients",
            f"{len(clients)} ranks",
            f"{sum(c['events'] for c in clients):,}",
            _fmt_bytes(sum(c["bytes"] for c in clients)),
            f"batches {sum(c['batches'] for c in clients):,}, "
            f"backpressure waits {sum(c['waits'] for c in clients):,} "
            f"({sum(c['wait_s'] for c in clients):.2f} s), "
            f"max |clock offset| {max(abs(c['offset_ns']) for c in clients) / 1e3:.1f} us",
        )
    con.print(r)
