"""Scale on paper (issue 17): the visor's load, an epoch change, clock sync and the store's write rate at
2 to 10,000 nodes, from the unit costs of perf/bench_unit_costs.py and the default layout rule.

    python perf/model_scale.py [--costs perf/results/unit-costs.jsonl] [--out perf/results/scale-model.json]

No MPI: it reads ``perf/results/unit-costs.jsonl``, ``chronompi/layout.py``'s rule and ``chronompi/config.py``'s
defaults, prints the figures and writes them as JSON, checks the 2- and 4-node predictions against
``record-nodes.jsonl``, ``sync-nodes.jsonl`` and ``elastic.jsonl`` (measured / model), and prints the markdown
table that ``docs/architecture.md`` ("Scale on paper") holds (``tests/test_pure_scale_model.py`` keeps the two
equal). Every figure is a lower bound on time and load: see ASSUMPTIONS.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
from pathlib import Path
from typing import Any

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent
sys.path.insert(0, str(ROOT))  # this checkout's chronompi

from chronompi.config import Config, LayoutConfig  # noqa: E402
from chronompi.layout import plan, service_ranks  # noqa: E402

RESULTS = PERF / "results"
NODES = (2, 4, 100, 1000, 10000)
PER_NODE = 64  # ranks per node, every one of them in the job
PAYLOAD = 1024  # bytes per event for the write rate
RATE = 1000.0  # events/s each client logs, for the write rate needed
CORES_HERE = 2  # the machine of the 2-4 node measurements (all "nodes" share its 2 cores)

ASSUMPTIONS = [
    f"{PER_NODE} ranks per node, all in the job; the default layout (layout.py's rule) and config.py's defaults; "
    "no spares, so elastic.auto is off (the LOAD reports are shown apart, for a job with spares)",
    "costs measured on one 2-core machine (perf/results/unit-costs.jsonl); a service has one core to itself",
    "network: the MPI round trip over TCP on the loopback; a real interconnect is faster, a real job's "
    "congestion (every node's keepers to every grapher) is not modelled",
    "the file system: each grapher writes at the rate measured into a local file here; shared-file-system "
    "contention, metadata load and bandwidth limits are ignored, so write rates are upper bounds",
    f"write rate needed: every client logs {RATE:g} events/s of {PAYLOAD} B",
    "an epoch change adds one keeper (no member leaves, so no DROP round)",
]


def load_costs(path: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["cost"]: float(r["value"]) for r in rows}


def heartbeat_s() -> float:
    """visor.HEARTBEAT_S, read from the source (importing chronompi.visor would start MPI)."""
    tree = ast.parse((ROOT / "chronompi" / "visor.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "HEARTBEAT_S":
            return float(ast.literal_eval(node.value))
    raise LookupError("HEARTBEAT_S not found in chronompi/visor.py")


def model(nodes: int, c: dict[str, float], cfg: Config, beat_s: float) -> dict[str, Any]:
    size = nodes * PER_NODE
    p = plan(size, nodes, LayoutConfig())
    keepers, graphers = p.n_keepers, p.graphers
    clients = size - p.services
    remote = clients * (nodes - 1) // nodes  # clients off the visor's node measure their clock
    windows_per_s = 1000.0 / cfg.keeper.window_ms

    # the visor, steady state: an idle step that walks every rank, clock re-estimates, the run record
    step_s = (c["visor_step_fixed_us"] * 1e3 + c["visor_step_per_rank_ns"] * size) / 1e9
    poll_cpu = step_s / (step_s + cfg.service.backoff_max_ms / 1e3)  # steps back to back, a sleep between
    pings_per_s = remote * cfg.client.clock_pings / cfg.client.clock_resync_s
    ping_cpu = pings_per_s * c["visor_clock_ping_us"] / 1e6
    record_cpu = size * c["run_record_write_per_rank_us"] / 1e6 / beat_s
    load_msgs = (clients + keepers + graphers) / cfg.elastic.period_s  # with spares: LOAD reports
    visor_cpu = poll_cpu + ping_cpu + record_cpu

    # an epoch change (one keeper more): EPOCH to every member and client, their acknowledgements
    tell = keepers + graphers + clients
    epoch_bytes = tell * clients * c["epoch_msg_bytes_per_client"]
    epoch_visor_s = (
        tell * clients * c["epoch_announce_ns_per_msg_client"] + epoch_bytes * c["ctrl_msg_ns_per_byte"]
    ) / 1e9
    lead_s = cfg.elastic.lead_ms / 1e3 + cfg.keeper.window_ms / 2e3  # to the next window boundary, on average
    batch_s = cfg.client.batch_ms / 1e3
    epoch_s = max(lead_s, epoch_visor_s + batch_s / 2) + batch_s  # acks come from the tickers; then the move

    # start-up clock sync, once per node: the node's lowest client pings the visor, the visor answers in turn
    sync_pings = (nodes - 1) * cfg.client.clock_pings
    sync_visor_s = sync_pings * c["visor_clock_ping_us"] / 1e6
    sync_s = max(cfg.client.clock_pings * c["tcp_rtt_us"] / 1e6, sync_visor_s)
    sync_s += (PER_NODE - 1) * c["ctrl_msg_us"] / 1e6  # the hand-out to the node's other clients
    per_rank_sync_s = remote * cfg.client.clock_pings * c["visor_clock_ping_us"] / 1e6  # before: every client

    # the store: what the graphers can write against what the clients log
    per_event_ns = c["grapher_ns_per_event"] + c["hdf5_append_ns_per_event"]
    per_event_ns += PAYLOAD * (c["grapher_ns_per_byte"] + c["hdf5_append_ns_per_byte"])
    notice_cpu = keepers * windows_per_s * c["notice_msg_us"] / 1e6  # WATERMARK notices into each grapher
    can = graphers * max(0.0, 1.0 - notice_cpu) * 1e9 / per_event_ns  # events/s
    need = clients * RATE
    return {
        "nodes": nodes,
        "ranks": size,
        "clients": clients,
        "keepers": keepers,
        "graphers": graphers,
        "visor_step_ms": round(step_s * 1e3, 3),
        "visor_msgs_per_s": round(2 * pings_per_s, 1),
        "visor_cpu_fraction": round(min(1.0, visor_cpu), 3),
        "visor_cpu_parts": {"poll": round(poll_cpu, 4), "clock": round(ping_cpu, 4), "record": round(record_cpu, 4)},
        "visor_load_msgs_per_s_with_spares": round(load_msgs, 1),
        "visor_load_cpu_with_spares": round(load_msgs * c["ctrl_msg_us"] / 1e6, 3),
        "epoch_msgs_sent": tell + 1,
        "epoch_msgs_received": tell,
        "epoch_mib_sent": round(epoch_bytes / 2**20, 2),
        "epoch_visor_s": round(epoch_visor_s, 3),
        "epoch_s": round(epoch_s, 3),
        "clock_sync_pings": sync_pings,
        "clock_sync_s": round(sync_s, 4),
        "clock_sync_per_rank_s": round(per_rank_sync_s, 3),
        "grapher_notice_cpu": round(notice_cpu, 3),
        "store_need_mb_per_s": round(need * PAYLOAD / 1e6, 1),
        "store_can_mb_per_s": round(can * PAYLOAD / 1e6, 1),
        "store_can_events_per_s_per_client": round(can / clients, 1),
    }


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def check(c: dict[str, float], cfg: Config) -> list[dict[str, Any]]:
    """Model against the multi-node bed: start-up overhead of `chronompi record`, sync latency, an epoch."""
    out = []
    rec = [json.loads(x) for x in (RESULTS / "record-nodes.jsonl").read_text().splitlines() if x.strip()]
    for nodes, ranks in sorted({(r["nodes"], r["ranks"]) for r in rec}):
        rows = [r for r in rec if (r["nodes"], r["ranks"]) == (nodes, ranks)]
        measured = _median([r for r in rows if r["system"] == "record"], "start_s")
        measured -= _median([r for r in rows if r["system"] == "plain"], "start_s")
        extra = service_ranks(ranks, nodes, LayoutConfig())  # processes record adds, each a whole rank
        cpu = extra * (c["rank_start_cpu_s"] + c["chronompi_import_cpu_s"]) + ranks * c["chronompi_import_cpu_s"]
        predicted = cpu / CORES_HERE + cfg.client.clock_pings * (nodes - 1) * c["tcp_rtt_us"] / 1e6
        out.append(_row(f"record start-up overhead, {nodes} nodes x {ranks} clients", "s", measured, predicted))
    syn = [json.loads(x) for x in (RESULTS / "sync-nodes.jsonl").read_text().splitlines() if x.strip()]
    wake = cfg.service.backoff_max_ms / 2  # a service's sleep, half of the longest on average
    rtt = c["tcp_rtt_us"] / 1e3
    for until, predicted in (("received", rtt + wake), ("committed", 2 * rtt + 2 * wake + c["sync_append_fsync_ms"])):
        rows = [r for r in syn if r["phase"] == "idle" and r["until"] == until]
        label = f"sync(until={until!r}) p50, {rows[0]['nodes']} nodes, idle"
        out.append(_row(label, "ms", _median(rows, "ms_p50"), predicted))
    ela = [json.loads(x) for x in (RESULTS / "elastic.jsonl").read_text().splitlines() if x.strip()]
    epochs = [r for r in ela if r.get("kind") == "epoch"]
    ranks = epochs[0]["keepers"] + 8  # (the bench: 10 ranks, 1 node)
    lead = cfg.elastic.lead_ms + cfg.keeper.window_ms / 2
    predicted = max(lead, cfg.client.batch_ms / 2) + cfg.client.batch_ms
    out.append(
        _row(f"epoch change, 1 node x {ranks} ranks (elastic.jsonl)", "ms", _median(epochs, "complete_ms"), predicted)
    )
    return out


def _row(what: str, unit: str, measured: float, predicted: float) -> dict[str, Any]:
    return {
        "what": what,
        "unit": unit,
        "measured": round(measured, 3),
        "model": round(predicted, 3),
        "measured_over_model": round(measured / predicted, 2),
    }


def _n(x: float) -> str:
    """A figure for the table: 3 significant digits, thousands separated."""
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def table(doc: dict[str, Any]) -> str:
    """The markdown table of docs/architecture.md's "Scale on paper" (kept equal by a test)."""
    rows = doc["scales"]
    head = "| | " + " | ".join(f"{r['nodes']:,} nodes" for r in rows) + " |"
    lines = [head, "| --- |" + " --- |" * len(rows)]
    spec: list[tuple[str, Any]] = [
        (
            "ranks (clients / keepers / graphers)",
            lambda r: f"{r['ranks']:,} ({r['clients']:,} / {r['keepers']:,} / {r['graphers']:,})",
        ),
        ("visor: one idle step, ms", "visor_step_ms"),
        ("visor: messages/s (clock re-estimates)", "visor_msgs_per_s"),
        ("visor: CPU fraction (1 = a core)", "visor_cpu_fraction"),
        ("visor with spares: LOAD messages/s", "visor_load_msgs_per_s_with_spares"),
        (
            "epoch change: messages sent / received",
            lambda r: f"{r['epoch_msgs_sent']:,} / {r['epoch_msgs_received']:,}",
        ),
        ("epoch change: MiB the visor sends", "epoch_mib_sent"),
        ("epoch change: visor busy, s", "epoch_visor_s"),
        ("epoch change: complete, s", "epoch_s"),
        ("start-up clock sync (per node), s", "clock_sync_s"),
        ("the same once per rank, visor s", "clock_sync_per_rank_s"),
        ("grapher CPU on WATERMARK notices", "grapher_notice_cpu"),
        ("store: MB/s needed", "store_need_mb_per_s"),
        ("store: MB/s the graphers can write", "store_can_mb_per_s"),
        ("store: events/s per client it allows", "store_can_events_per_s_per_client"),
    ]
    for label, how in spec:  # a key of the row (a figure) or a function of the row
        cells = (_n(r[how]) if isinstance(how, str) else how(r) for r in rows)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build(costs: Path) -> dict[str, Any]:
    c = load_costs(costs)
    cfg = Config()
    beat = heartbeat_s()
    return {
        "per_node": PER_NODE,
        "payload_bytes": PAYLOAD,
        "events_per_s_per_client": RATE,
        "assumptions": ASSUMPTIONS,
        "costs": str(costs.relative_to(ROOT)) if costs.is_relative_to(ROOT) else str(costs),
        "scales": [model(n, c, cfg, beat) for n in NODES],
        "checks": check(c, cfg),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--costs", type=Path, default=RESULTS / "unit-costs.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale-model.json")
    args = ap.parse_args()
    doc = build(args.costs.resolve())
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(doc))
    for ch in doc["checks"]:
        print(
            f"{ch['what']}: measured {ch['measured']} {ch['unit']}, model {ch['model']}, "
            f"ratio {ch['measured_over_model']}"
        )
    print("assumptions:\n- " + "\n- ".join(ASSUMPTIONS))


if __name__ == "__main__":
    main()
