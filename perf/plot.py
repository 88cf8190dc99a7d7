"""Turn perf results (JSON lines) into ``summary.md``, the peer table and PNG plots.

``python perf/plot.py [RESULTS.jsonl ...] [--outdir DIR]``: with no file, the newest ``perf/out/*.jsonl``
(else the newest ``perf/results/*.jsonl``). Writes ``DIR/summary.md`` (default ``perf/out``, ignored by
git) and, when matplotlib is installed (``pip install 'chronompi[plot]'``), ``DIR/peers.png``,
``DIR/ingest.png``, ``DIR/client_cost.png``, ``DIR/durable.png`` and ``DIR/scaling.png``. The committed
figures in ``perf/results`` change only when asked: ``--outdir perf/results`` (or ``run.py publish=true``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from peer_table import how, peer_rows, peer_table, peers_png
from report import fmt, save, size, table, title

__all__ = ["fmt", "load", "main", "markdown", "newest", "peer_rows", "peer_table", "plots", "size", "table"]

PERF = Path(__file__).resolve().parent
RESULTS = PERF / "results"  # committed: summary.md, PNGs and results files published on purpose
OUT = PERF / "out"  # where runs write by default (ignored by git)

# (name, definition, payload, mode, reference: a baseline or peer name, needed ratio)
TARGETS = [
    ("log_many vs raw storage", "end to end, log_many, 64 B: events/s >= 0.5 x raw storage baseline", 64, "log_many",
     "storage", 0.5),
    ("log vs Python logging", "end to end, log, 64 B: events/s >= 3 x Python logging baseline", 64, "log",
     "logging", 3.0),
    ("log vs per-event RPC", "end to end, log, 64 B: events/s >= 20 x per-event RPC baseline", 64, "log", "rpc", 20.0),
    ("64 B log_many vs ADIOS2", "issue 11: median events/s, same run, >= 1.2 x ADIOS2 BP5 per-rank files", 64,
     "log_many", "adios2", 1.2),
    ("1 KiB log_many vs ADIOS2", "issue 11: median events/s, same run, >= 1.0 x ADIOS2", 1024, "log_many",
     "adios2", 1.0),
    ("64 B log vs ADIOS2", "issue 11: median events/s, same run, >= 0.8 x ADIOS2", 64, "log", "adios2", 0.8),
    # issue 19: the same targets as a user logs (every event made in the timed loop, on both sides)
    ("64 B log_many, as a user logs", "issue 19: lists made in the loop, >= 1.2 x ADIOS2 fed the same way", 64,
     "log_many_made", "adios2 made", 1.2),
    ("1 KiB log_many, as a user logs", "issue 19: lists made in the loop, >= 1.0 x ADIOS2 fed the same way", 1024,
     "log_many_made", "adios2 made", 1.0),
    ("64 B log, as a user logs", "issue 19: each event made in the loop, >= 0.8 x ADIOS2 fed the same way", 64,
     "log_made", "adios2 made", 0.8),
]  # fmt: skip


def load(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for p in paths:
        for line in p.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    return rows


def newest() -> list[Path]:
    for d in (OUT, RESULTS):
        files = sorted(d.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        files = [f for f in files if any('"kind": "suite"' in line for line in f.open())] or files
        if files:
            return files[-1:]
    raise SystemExit(f"no results in {OUT} or {RESULTS}; run python perf/run.py first")


def targets(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Evaluate the issues' targets on the rows of one results file."""
    chron = {(r["payload"], r["mode"]): r for r in rows if r.get("kind") == "chronompi"}
    out: list[list[Any]] = []
    for name, what, payload, mode, key, need in TARGETS:
        got = (chron.get((payload, mode)) or {}).get("vs", {}).get(key)
        out.append(
            [
                name,
                what,
                f"{got:.2f}x" if got else "–",
                f">= {need}x",
                _met(got is not None and got >= need, got is None),
            ]
        )
    call = next((r for r in rows if r.get("kind") == "log_call" and r.get("payload") == 64), None)
    med = call.get("log_ns_p50") if call else None
    for need in (1000, 400):
        out.append(
            [
                "story.log cost",
                "median ns per story.log call (64 B)" + (", issue 11" if need == 400 else ""),
                f"{med:.0f} ns" if med else "–",
                f"<= {need} ns",
                _met(med is not None and med <= need, med is None),
            ]
        )
    dur = next((r for r in rows if r.get("bench") == "durable" and r.get("kind") == "durable"), None)
    p99 = dur.get("durable_ms_p99") if dur else None
    out.append(
        [
            "time to durable",
            "p99 at half the peak rate, default config",
            f"{p99:.0f} ms" if p99 is not None and not math.isnan(p99) else "–",
            "< 1000 ms",
            _met(p99 is not None and p99 < 1000, p99 is None or math.isnan(p99)),
        ]
    )
    return out


def _by_role(r: dict[str, Any]) -> str:
    """CPU seconds per million events of each role, all ranks of the role together."""
    by = r.get("cpu_s_per_million_by_role")
    if not by:
        return "–"
    return " / ".join(fmt(by.get(k)) for k in ("client", "keeper", "grapher", "visor"))


def _met(ok: bool, missing: bool) -> str:
    return "not measured" if missing else ("**met**" if ok else "**missed**")


def markdown(rows: list[dict[str, Any]], sources: list[Path]) -> str:
    machine = next((r["machine"] for r in rows if "machine" in r), {})
    parts = ["# chronompi perf summary", "", f"Results: {', '.join(p.name for p in sources)}", ""]
    if machine:
        parts += ["## Machine", "", table(["key", "value"], [[k, str(v)] for k, v in machine.items()]), ""]
    parts += ["## Targets", "", table(["target", "definition", "measured", "needed", "status"], targets(rows)), ""]
    if peer_rows(rows):
        parts += [f"## Peers ({how(rows)}, same events; from a barrier to every file closed)", "", peer_table(rows), ""]
        parts += [
            "chronompi: from a barrier of all ranks before `chronompi.session()` until it has returned on every "
            "rank; peers: from a barrier to every file closed. Ratios: median / median; x ADIOS2 "
            "and x h5py against the peer fed arrays; x ADIOS2 same input: `log` against ADIOS2 fed one event at a "
            "time, `log_many` against ADIOS2 fed arrays.",
            "",
        ]
    chron = [r for r in rows if r.get("kind") == "chronompi"]
    base = [r for r in rows if r.get("kind") == "baseline"]
    if chron:
        parts += ["## Ingest, end to end (clients -> closed HDF5 windows)", ""]
        parts += [
            table(
                [
                    "payload",
                    "mode",
                    "events",
                    "s",
                    "events/s",
                    "MB/s",
                    "client events/s",
                    "CPU s / M events",
                    "of which client / keeper / grapher / visor",
                    "durable p50 ms",
                    "durable p99 ms",
                    "x transport",
                    "x storage",
                    "x logging",
                    "x rpc",
                ],
                [
                    [
                        size(r["payload"]),
                        r["mode"],
                        r["events"],
                        r["seconds"],
                        r["events_per_s"],
                        r["mb_per_s"],
                        r.get("client_events_per_s"),
                        r.get("cpu_s_per_million"),
                        _by_role(r),
                        r.get("durable_ms_p50"),
                        r.get("durable_ms_p99"),
                        *[r.get("vs", {}).get(k) for k in ("transport", "storage", "logging", "rpc")],
                    ]
                    for r in sorted(chron, key=lambda r: (r["payload"], r["mode"]))
                ],
            ),
            "",
        ]
        parts += ["Durable columns here are at saturation (unpaced runs: they include queueing).", ""]
    if base:
        parts += ["## Baselines (one job on the layout of the chronompi rows)", ""]
        parts += [
            table(
                ["payload", "baseline", "events", "s", "events/s", "MB/s", "CPU s / M events"],
                [
                    [
                        size(r["payload"]),
                        r["baseline"],
                        r["events"],
                        r["seconds"],
                        r["events_per_s"],
                        r["mb_per_s"],
                        r.get("cpu_s_per_million"),
                    ]
                    for r in sorted(base, key=lambda r: (r["payload"], r["baseline"]))
                ],
            ),
            "",
        ]
    calls = [r for r in rows if r.get("kind") == "log_call"]
    if calls:
        parts += ["## Client cost of story.log (ns per call, timer overhead subtracted)", ""]
        parts += [
            table(
                ["payload", "clients", "calls", "p50", "p99", "p99.9", "max", "timer", "block mean"],
                [
                    [
                        size(r["payload"]),
                        r["clients"],
                        r["calls"],
                        r["log_ns_p50"],
                        r["log_ns_p99"],
                        r["log_ns_p999"],
                        r["log_ns_max"],
                        r["timer_ns"],
                        r["block_ns_per_call"],
                    ]
                    for r in calls
                ],
            ),
            "",
        ]
    sci = [r for r in rows if r.get("kind") == "science_loop"]
    if sci:
        parts += ["## What a science loop loses (one story.log per step)", ""]
        parts += [
            table(
                [
                    "payload",
                    "step (target us)",
                    "CPU ns/step",
                    "CPU ns/step + log",
                    "CPU lost ns/step",
                    "CPU lost %",
                    "wall lost ns/step",
                    "wall lost %",
                ],
                [
                    [
                        size(r["payload"]),
                        r["step_us"],
                        r.get("cpu_step_ns"),
                        r.get("cpu_step_with_log_ns"),
                        r.get("cpu_lost_ns_per_step"),
                        r.get("cpu_lost_pct"),
                        r["lost_ns_per_step"],
                        r["lost_pct"],
                    ]
                    for r in sci
                ],
            ),
            "",
        ]
    dur = [r for r in rows if r.get("kind") in ("durable", "peak") and r.get("bench") in ("durable", "scaling")]
    if dur:
        parts += ["## Time to durable (log return -> window run committed in HDF5)", ""]
        parts += [
            table(
                [
                    "bench",
                    "run",
                    "clients",
                    "K",
                    "G",
                    "target events/s",
                    "achieved events/s",
                    "samples",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "method",
                ],
                [
                    [
                        r["bench"],
                        r["kind"],
                        r["clients"],
                        r["keepers"],
                        r["graphers"],
                        r.get("target_rate"),
                        r.get("client_events_per_s"),
                        r.get("samples"),
                        r.get("durable_ms_p50"),
                        r.get("durable_ms_p99"),
                        r.get("durable_ms_max"),
                        str(r.get("durable_method")),
                    ]
                    for r in dur
                ],
            ),
            "",
        ]
    sc = [r for r in rows if r.get("bench") == "scaling" and r.get("kind") in ("weak", "strong")]
    if sc:
        parts += ["## Scaling (rows of one machine only; oversubscribed when ranks > cores)", ""]
        parts += [
            table(
                [
                    "kind",
                    "clients",
                    "keepers",
                    "graphers",
                    "ranks",
                    "events",
                    "s",
                    "events/s",
                    "CPU s / M events",
                    "durable p50 ms",
                    "durable p99 ms",
                ],
                [
                    [
                        r["kind"],
                        r["clients"],
                        r["keepers"],
                        r["graphers"],
                        r["machine"]["ranks"],
                        r["events"],
                        r["seconds"],
                        r["events_per_s"],
                        r.get("cpu_s_per_million"),
                        r.get("durable_ms_p50"),
                        r.get("durable_ms_p99"),
                    ]
                    for r in sorted(sc, key=lambda r: (r["kind"], r["clients"] + r["keepers"] + r["graphers"]))
                ],
            ),
            "",
        ]
    suite = next((r for r in rows if r.get("kind") == "suite"), None)
    if suite:
        bad = [j for j in suite["jobs"] if j["returncode"] != 0 or j["timed_out"]]
        parts += [
            f"Suite wall time {suite['wall_s']} s, {len(suite['jobs'])} jobs"
            + (f", **{len(bad)} failed**: {', '.join(j['bench'] for j in bad)}" if bad else "")
            + ".",
            "",
        ]
    return "\n".join(parts)


def plots(rows: list[dict[str, Any]], outdir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG plots (pip install 'chronompi[plot]')")
        return []
    made = []
    if any(not p["skipped"] for p in peer_rows(rows)):
        made.append(peers_png(plt, rows, outdir / "peers.png"))
    chron = [r for r in rows if r.get("kind") == "chronompi"]
    base = [r for r in rows if r.get("kind") == "baseline"]
    if chron:
        payloads = sorted({r["payload"] for r in chron})
        series: dict[str, list[float]] = {}
        for r in chron:
            series.setdefault(f"chronompi {r['mode']}", [math.nan] * len(payloads))[payloads.index(r["payload"])] = r[
                "events_per_s"
            ]
        for r in base:
            if r["payload"] in payloads:
                series.setdefault(f"baseline {r['baseline']}", [math.nan] * len(payloads))[
                    payloads.index(r["payload"])
                ] = r["events_per_s"]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        w = 0.8 / max(1, len(series))
        for i, (name, vals) in enumerate(series.items()):
            ax.bar([x + i * w for x in range(len(payloads))], vals, w, label=name)
        ax.set_xticks([x + 0.4 - w / 2 for x in range(len(payloads))], [size(p) for p in payloads])
        ax.set_yscale("log")
        ax.set_ylabel("events/s (end to end)")
        ax.set_xlabel("payload")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(title("Ingest throughput", rows))
        made.append(save(fig, outdir / "ingest.png"))
    calls = [r for r in rows if r.get("kind") == "log_call"]
    if calls:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [size(r["payload"]) for r in calls]
        for i, (k, lab) in enumerate((("log_ns_p50", "p50"), ("log_ns_p99", "p99"), ("block_ns_per_call", "mean"))):
            ax.bar([x + i * 0.27 for x in range(len(calls))], [r[k] for r in calls], 0.27, label=lab)
        ax.set_xticks([x + 0.27 for x in range(len(calls))], labels)
        ax.axhline(1000, color="k", ls="--", lw=0.8, label="1 us target")
        ax.set_ylabel("ns per story.log call")
        ax.legend()
        ax.set_title(title("story.log cost", rows))
        made.append(save(fig, outdir / "client_cost.png"))
    dur = [r for r in rows if r.get("kind") == "durable" and r.get("durable_ms_p50") is not None]
    if dur:
        fig, ax = plt.subplots(figsize=(7, 4))
        names = [f"{r['bench']}\n{r['clients']}c {r['keepers']}k {r['graphers']}g" for r in dur]
        for i, k in enumerate(("durable_ms_p50", "durable_ms_p99", "durable_ms_max")):
            ax.bar([x + i * 0.27 for x in range(len(dur))], [r[k] for r in dur], 0.27, label=k.split("_")[-1])
        ax.set_xticks([x + 0.27 for x in range(len(dur))], names, fontsize=7)
        ax.axhline(1000, color="k", ls="--", lw=0.8, label="1 s target (p99)")
        ax.set_ylabel("ms from log() to committed window")
        ax.legend()
        ax.set_title(title("Time to durable, paced runs", rows))
        made.append(save(fig, outdir / "durable.png"))
    sc = [r for r in rows if r.get("bench") == "scaling" and r.get("kind") in ("weak", "strong")]
    if sc:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for kind in ("weak", "strong"):
            for kg in sorted({(r["keepers"], r["graphers"]) for r in sc}):
                pts = sorted(
                    (r["clients"], r["events_per_s"], r.get("durable_ms_p99"))
                    for r in sc
                    if r["kind"] == kind and (r["keepers"], r["graphers"]) == kg
                )
                if not pts:
                    continue
                lab = f"{kind} {kg[0]}k {kg[1]}g"
                a1.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=lab)
                a2.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=lab)
        a1.set_xlabel("clients")
        a1.set_ylabel("events/s end to end")
        a1.set_ylim(bottom=0)
        a2.set_xlabel("clients")
        a2.set_ylabel("time to durable p99 (ms, at saturation)")
        a2.set_ylim(bottom=0)
        a1.legend(fontsize=7)
        a1.set_title(title("Scaling", rows), fontsize=9)
        made.append(save(fig, outdir / "scaling.png"))
    return made


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "results", nargs="*", type=Path, help="JSON-lines files (default: the newest in perf/out, else perf/results)"
    )
    ap.add_argument("--outdir", type=Path, default=OUT, help="default perf/out; perf/results to publish")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    sources = list(args.results) or newest()
    rows = load(sources)
    outdir = args.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    md = outdir / "summary.md"
    made = [] if args.no_plots else plots(rows, outdir)
    text = markdown(rows, sources)
    if made:
        text += "\nPlots: " + ", ".join(f"![{p.stem}]({p.name})" for p in made) + "\n"
    md.write_text(text)
    print(text)
    return md


if __name__ == "__main__":
    main()
