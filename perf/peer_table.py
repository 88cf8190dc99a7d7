"""The peer table: chronompi's ``log`` / ``log_many`` against ADIOS2, h5py and the user-facing baselines.

Rows come from one ingest run of ``bench_ingest.py`` (each timed run a job of its own, or all in one job:
the rows' ``jobs``): per payload, every system's median, min and max events/s over the rounds, ratios of
medians, CPU per million events and the load average at the start and end of the row. ``peer_table`` is
the markdown ``run.py`` prints and ``summary.md`` holds; ``peers_png`` draws ``peers.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report import fmt, save, size, table, title

# rows of the peer table, in this order: chronompi's systems, the peers, then the user-facing baselines
SYSTEMS = [
    "chronompi log",
    "chronompi log_many",
    "chronompi log_made",
    "chronompi log_many_made",
    *(f"{p}{s}" for p in ("adios2", "adios2_mpi", "h5py") for s in ("", " events", " made")),
    "logging",
    "rpc",
]
# the peer row of the same input shape as a chronompi call (log: one event at a time; log_many: arrays)
SAME_SHAPE = {
    "chronompi log": "adios2 events",
    "chronompi log_many": "adios2",
    "chronompi log_made": "adios2 made",  # (as a user measures: every event made in the loop on both sides)
    "chronompi log_many_made": "adios2 made",
}
LABELS = {
    "adios2": "ADIOS2 BP5, one file per rank",
    "adios2_mpi": "ADIOS2 BP5, one file, MPI aggregation",
    "h5py": "h5py, one file per rank",
    "logging": "Python logging, FileHandler per rank + merge sort (1 run)",
    "rpc": "one blocking request per event (ChronoLog's shape; 1 run)",
}


def how(rows: list[dict[str, Any]]) -> str:
    """How the ingest rows were measured: each run in its own job (``run.py``'s default) or all in one job."""
    jobs = {r.get("jobs") for r in rows if r.get("bench") == "ingest" and r.get("kind") in ("chronompi", "peer")}
    return "each run its own job" if "one per run" in jobs else "same MPI job"


def peer_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The peer table's rows: per payload, chronompi, the peers (or why skipped) and the logging/RPC baselines.

    Ratios divide medians of the same run of the harness (rounds of jobs alternating, or one job).
    """
    out = []
    ingest = [r for r in rows if r.get("bench") == "ingest"]
    for payload in sorted({r["payload"] for r in ingest if r.get("kind") in ("chronompi", "peer")}):
        mine = [r for r in ingest if r.get("payload") == payload]
        by = {r.get("system") or r.get("baseline"): r for r in mine if r.get("kind") in ("chronompi", "peer")}
        by.update({r["baseline"]: r for r in mine if r.get("kind") == "baseline" and r["baseline"] in SYSTEMS})
        ref = {k: r["events_per_s"] for k, r in by.items() if r.get("events_per_s") and not r.get("skipped")}
        for name in SYSTEMS:
            r = by.get(name)
            if r is None:
                continue
            rate = r.get("events_per_s")
            clients = r.get("clients") or 1
            out.append(
                {
                    "payload": payload,
                    "system": name,
                    "label": r.get("label") or LABELS.get(name, name),
                    "skipped": r.get("skipped"),
                    "events_per_client": (r["events"] // clients) if r.get("events") else None,
                    "clients": r.get("clients"),
                    "rounds": r.get("rounds", 1),
                    "median": rate,
                    "min": r.get("events_per_s_min", rate),
                    "max": r.get("events_per_s_max", rate),
                    "x_adios2": rate / ref["adios2"] if rate and "adios2" in ref else None,
                    "x_h5py": rate / ref["h5py"] if rate and "h5py" in ref else None,
                    "x_same": rate / ref[SAME_SHAPE[name]] if rate and SAME_SHAPE.get(name) in ref else None,
                    "cpu_s_per_million": r.get("cpu_s_per_million"),
                    "loadavg": [r.get("loadavg_start"), r.get("loadavg_end")],
                }
            )
    return out


def peer_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: median/min/max events/s of every system per payload, with ratios to ADIOS2 and h5py."""

    def la(pair: list[Any]) -> str:
        a, b = pair
        return f"{a[0]:.1f} -> {b[0]:.1f}" if a and b else "–"

    body = []
    for p in peer_rows(rows):
        if p["skipped"]:
            body.append([size(p["payload"]), p["label"], "skipped: " + p["skipped"], *["–"] * 9])
            continue
        body.append(
            [
                size(p["payload"]),
                p["label"],
                f"{p['clients']} x {fmt(p['events_per_client'])}",
                p["rounds"],
                _rate(p["median"]),
                _rate(p["min"]),
                _rate(p["max"]),
                f"{p['x_adios2']:.2f}x" if p["x_adios2"] else "–",
                f"{p['x_h5py']:.2f}x" if p["x_h5py"] else "–",
                f"{p['x_same']:.2f}x" if p["x_same"] else "–",
                p["cpu_s_per_million"],
                la(p["loadavg"]),
            ]
        )
    head = ["payload", "system", "events", "rounds", "events/s median", "min", "max", "x ADIOS2", "x h5py"]
    return table([*head, "x ADIOS2 same input", "CPU s / M events", "load avg (1 min) start -> end"], body)


def _rate(x: float | None) -> str:
    if not x:
        return "–"
    return f"{x / 1e6:.2f} M/s" if x >= 1e6 else f"{x / 1e3:.0f} k/s"


def peers_png(plt: Any, rows: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: median events/s per system and payload, whiskers from the worst to the best round."""
    prs = [p for p in peer_rows(rows) if not p["skipped"]]
    payloads = sorted({p["payload"] for p in prs})
    names = [n for n in SYSTEMS if any(p["system"] == n for p in prs)]
    fig, ax = plt.subplots(figsize=(10, 6.2))
    w = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, med, lo, hi, notes = [], [], [], [], []
        for j, payload in enumerate(payloads):
            p = next((p for p in prs if p["system"] == name and p["payload"] == payload), None)
            if p is None:
                continue
            xs.append(j + i * w)
            med.append(p["median"])
            lo.append(p["median"] - p["min"])
            hi.append(p["max"] - p["median"])
            notes.append(f"{p['x_adios2']:.2f}x" if p["x_adios2"] else "")
        label = next(p["label"] for p in prs if p["system"] == name)
        bars = ax.bar(xs, med, w, yerr=[lo, hi], capsize=2, label=label)
        for b, note in zip(bars, notes, strict=True):
            ax.annotate(note, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=6)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(payloads))], [size(p) for p in payloads])
    ax.set_yscale("log")
    ax.set_ylabel("events/s (median over rounds; whiskers min..max)")
    ax.set_xlabel(f"payload (labels: ratio to ADIOS2 fed arrays; {how(rows)})")
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    loads = [pair[0] for p in prs for pair in p["loadavg"] if pair]  # 1-minute load, start and end of rows
    load = f", load avg {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    ax.set_title(title(f"chronompi and its peers, {how(rows)}, same events", rows) + load, fontsize=9)
    return save(fig, path)
