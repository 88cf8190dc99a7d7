"""The store tools of the ``chronompi`` command: ls, replay, stats, export, fsck (no MPI).

Stores are built by writing segments directly with the grapher's SegmentWriter
plus run records, then the CLI runs in-process (``main([...])``) and, a few
times, as the installed console script.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import chronompi.export
from chronompi.cli import main
from chronompi.codec import EVENT
from chronompi.config import StorageConfig
from chronompi.store.format import init_store, write_run
from chronompi.store.writer import Run, SegmentWriter

T0 = 1_795_000_000_123_456_789  # 2026-11-18, with a fraction that needs all nine digits
MS = 1_000_000
A = 0x00000000000000A2  # leading zeros in hex
B = 0xDEADBEEF00000001
C = 0xFFFFFFFFFFFFFFFF  # the largest id: must not turn negative anywhere
RUN_AA, RUN_BB = 0xAA, 0xBB

Event = tuple[int, int, int, bytes]  # time, client, seq, payload


def iso(t: int) -> str:
    """Independent of chronompi: numpy's ISO-8601 with nanoseconds, plus Z."""
    return str(np.datetime_as_string(np.datetime64(t, "ns"), unit="ns")) + "Z"


def make_run(window: int, events: list[Event], late: bool = False) -> Run:
    """A sorted Run of EVENT rows whose payloads sit in its own heap in event order."""
    events = sorted(events, key=lambda e: (e[0], e[1], e[2]))
    ev = np.zeros(len(events), EVENT)
    heap = bytearray()
    for i, (t, c, s, p) in enumerate(events):
        ev[i] = (t, c, s, len(heap), len(p))
        heap += p
    return Run(window, ev, np.frombuffer(bytes(heap), np.uint8).copy(), late)


@dataclass
class Built:
    root: Path
    stories: dict[tuple[str, str], list[Event]] = field(default_factory=dict)

    def expected(self, chronicle: str, story: str) -> list[Event]:
        return sorted(self.stories[(chronicle, story)], key=lambda e: (e[0], e[1], e[2]))


def build_store(root: Path) -> Built:
    """heat/residual: text, two windows from grapher 0 (clients A and B tie on time) plus a late run
    of client C from grapher 1; heat/bin: binary and odd payloads six events within one microsecond;
    other/log: a second run (crashed)."""
    init_store(root)
    cfg = StorageConfig(root=str(root), staging="none")
    built = Built(root)

    residual_w = {0: [], 1: []}  # type: dict[int, list[Event]]
    for i in range(20):
        t = T0 + i * 10 * MS
        residual_w[i // 10].append((t, A, i, f"A step {i} residual {1.0 / (i + 1):.3e}".encode()))
        residual_w[i // 10].append((t, B, i, f"B step {i} résidu ✓".encode()))
    late = [(T0 + 5 * MS + 1 + i * 10 * MS, C, i, f"C late {i}".encode()) for i in range(3)]
    bin_payloads = [b"\x00\xff\xfe", b"", b"tab\there", "h\u00e9llo \u2713".encode(), b"\x80abc", b"line1\nline2"]
    binary = [(T0 + i * 100, A, i, p) for i, p in enumerate(bin_payloads)]
    log = [(T0 + 10**9 + i * MS, B, i, f"log line {i}".encode()) for i in range(5)]

    g0 = SegmentWriter(root, RUN_AA, 0, cfg)
    g0.append("heat", "residual", [make_run(0, residual_w[0]), make_run(1, residual_w[1])])
    g0.append("heat", "bin", [make_run(0, binary)])
    g0.close()
    g1 = SegmentWriter(root, RUN_AA, 1, cfg)
    g1.append("heat", "residual", [make_run(0, late, late=True)])
    g1.close()
    g2 = SegmentWriter(root, RUN_BB, 0, cfg)
    g2.append("other", "log", [make_run(10, log)])
    g2.close()

    built.stories[("heat", "residual")] = residual_w[0] + residual_w[1] + late
    built.stories[("heat", "bin")] = binary
    built.stories[("other", "log")] = log
    aa_events = sum(len(v) for k, v in built.stories.items() if k[0] == "heat")
    write_run(
        root,
        {
            "run": f"{RUN_AA:016x}",
            "status": "complete",
            "start": T0 - 2 * 10**9,
            "end": T0 + 3 * 10**9,
            "ranks": 6,
            "hosts": ["nodeA", "nodeB"],
            "version": "0.1.0",
            "graphers": [],
            "config": {},
            "events_stored": aa_events,
            "bytes_stored": 0,
            "dropped": 0,
        },
    )
    write_run(
        root,
        {"run": f"{RUN_BB:016x}", "status": "crashed", "start": T0 + 10**9, "end": None, "ranks": 4, "hosts": ["n1"]},
    )
    return built


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_store(tmp_path_factory.mktemp("cli") / "store")


@pytest.fixture
def copy(built: Built, tmp_path: Path) -> Built:
    """A private copy of the store, for tests that damage it."""
    root = tmp_path / "store"
    shutil.copytree(built.root, root)
    return Built(root, built.stories)


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def sections(text: str) -> list[list[list[str]]]:
    """Plain output: tables separated by blank lines, each a header row plus rows, tab-separated."""
    return [[line.split("\t") for line in block.splitlines()] for block in text.strip("\n").split("\n\n")]


def payload_of(rec: dict[str, str]) -> bytes:
    if rec["payload_encoding"] == "base64":
        return base64.b64decode(rec["payload"])
    assert rec["payload_encoding"] == "utf-8"
    return rec["payload"].encode("utf-8")


def text_payload(p: bytes) -> str:
    try:
        s = p.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(p)} B> {p[:32].hex()}" + ("\u2026" if len(p) > 32 else "")
    return s.replace("\t", "\\t").replace("\n", "\\n")


# -- help and dispatch --------------------------------------------------------------------------------------------
def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "--help")
    assert rc == 0
    for cmd in ("run", "mpirun", "ls", "replay", "stats", "export", "fsck"):
        assert f"\n  {cmd} " in out
    rc, out, err = cli(capsys)
    assert rc == 2 and "ls STORE" in err
    rc, out, err = cli(capsys, "replay", "--help")
    assert rc == 0 and "--start" in out and "--format" in out


def test_help_lists_the_options_that_work(capsys: pytest.CaptureFixture[str]) -> None:
    """--version worked but --help did not say so: every option --help lists works, and both are listed."""
    rc, out, _ = cli(capsys, "--help")
    options = re.findall(r"^  (-\w), (--[\w-]+) ", out, re.MULTILINE)
    assert ("-h", "--help") in options and ("-V", "--version") in options, out
    for short, long in options:
        for flag in (short, long):
            rc, text, err = cli(capsys, flag)
            assert rc == 0 and not err, (flag, err)
    assert cli(capsys, "--version")[1].strip() == f"chronompi {chronompi.__version__}"


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "frobnicate", "x")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "unknown command 'frobnicate'" in err


# -- ls -----------------------------------------------------------------------------------------------------------
def test_ls_plain(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "ls", built.root)
    assert rc == 0 and err == ""
    stories, runs = sections(out)
    assert stories[0] == ["chronicle", "story", "events", "first", "last"]
    want = []
    for c, s in sorted(built.stories):
        ev = built.expected(c, s)
        want.append([c, s, str(len(ev)), iso(ev[0][0]), iso(ev[-1][0])])
    assert stories[1:] == want
    assert runs[0] == ["run", "status", "start", "end", "ranks", "hosts"]
    assert runs[1] == [f"{RUN_AA:016x}", "complete", iso(T0 - 2 * 10**9), iso(T0 + 3 * 10**9), "6", "nodeA,nodeB"]
    assert runs[2] == [f"{RUN_BB:016x}", "crashed", iso(T0 + 10**9), "-", "4", "n1"]


def test_ls_rich_on_a_terminal(
    built: Built, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("CHRONOMPI_STDOUT_TTY", raising=False)
    monkeypatch.setenv("TERM", "dumb")  # a terminal that cannot draw (a batch job's): the plain rows
    rc, out, _ = cli(capsys, "ls", built.root)
    assert rc == 0 and out.startswith("chronicle\tstory\t"), out
    monkeypatch.setenv("TERM", "xterm")
    rc, out, _ = cli(capsys, "ls", built.root)
    assert rc == 0
    assert "\t" not in out and "─" in out  # a rich table, not TSV
    assert "residual" in out and "43" in out and iso(T0) in out and "nodeA,nodeB" in out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    rc, out, _ = cli(capsys, "ls", built.root, "--plain")
    assert rc == 0 and out.startswith("chronicle\tstory\t")


# -- replay -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("story", ["residual", "bin"])
def test_replay_text(built: Built, capsys: pytest.CaptureFixture[str], story: str) -> None:
    rc, out, err = cli(capsys, "replay", built.root, "heat", story)
    assert rc == 0 and err == ""
    want = [f"{iso(t)}\t{c:016x}\t{s}\t{text_payload(p)}" for t, c, s, p in built.expected("heat", story)]
    assert out.splitlines() == want


def test_replay_text_payload_forms(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "replay", built.root, "heat", "bin")
    payloads = [line.split("\t", 3)[3] for line in out.splitlines()]
    # readable: text as itself (control characters escaped, one event a line), binary as size + hex; no b'...'
    assert payloads == ["<3 B> 00fffe", "", r"tab\there", "h\u00e9llo \u2713", "<4 B> 80616263", r"line1\nline2"]


def test_replay_text_long_binary_and_control_characters() -> None:
    from chronompi.export import payload_text

    assert payload_text(bytes(range(200, 256))) == "<56 B> " + bytes(range(200, 232)).hex() + "\u2026"
    assert payload_text(b"\x1b[31mred\r") == r"\x1b[31mred\r"  # no terminal escape reaches the screen


def test_replay_jsonl(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    for story in ("residual", "bin"):
        rc, out, _ = cli(capsys, "replay", built.root, "heat", story, "--format", "jsonl")
        assert rc == 0
        recs = [json.loads(line) for line in out.splitlines()]
        got = [(r["time"], int(r["client"], 16), r["seq"], payload_of(r)) for r in recs]
        assert got == built.expected("heat", story)
        for r in recs:
            assert r["chronicle"] == "heat" and r["story"] == story
            assert r["time_iso"] == iso(r["time"]) and len(r["client"]) == 16
        if story == "bin":
            assert [r["payload_encoding"] for r in recs] == ["base64", "utf-8", "utf-8", "utf-8", "base64", "utf-8"]
            assert recs[3]["payload"] == "h\u00e9llo \u2713"


def test_replay_csv(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "replay", built.root, "heat", "bin", "--format", "csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["chronicle", "story", "time", "time_iso", "client", "seq", "payload_encoding", "payload"]
    got = [(int(r["time"]), int(r["client"], 16), int(r["seq"]), payload_of(r)) for r in rows]
    assert got == built.expected("heat", "bin")  # newlines and tabs survive the quoting


def test_replay_order_across_segments_and_batches(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    want = built.expected("heat", "residual")
    assert [e[1] for e in want[:3]] == [A, B, C]  # a time tie (client order), then the late run interleaved
    for batch in ("1", "7", "65536"):
        rc, out, _ = cli(capsys, "replay", built.root, "heat", "residual", "--format", "jsonl", "--batch-events", batch)
        assert rc == 0
        got = [(r["time"], int(r["client"], 16), r["seq"]) for r in map(json.loads, out.splitlines())]
        assert got == [e[:3] for e in want]


@pytest.mark.parametrize(
    "fmt_start, fmt_end",
    [
        (lambda t: str(t), lambda t: str(t)),  # ns
        (iso, iso),  # ISO with Z and nine fraction digits
        (lambda t: iso(t)[:-1], lambda t: iso(t)[:-1] + "+00:00"),  # no zone (UTC), explicit offset
        (lambda t: iso(t).replace("T", " "), lambda t: str(t)),  # mixed
    ],
    ids=["ns", "iso-z", "iso-naive-offset", "iso-space-ns"],
)
def test_replay_range(built: Built, capsys: pytest.CaptureFixture[str], fmt_start, fmt_end) -> None:  # noqa: ANN001
    ev = built.expected("heat", "bin")  # six events 100 ns apart: only exact ns parsing selects the right ones
    t0, t1 = ev[2][0], ev[5][0]
    rc, out, err = cli(
        capsys, "replay", built.root, "heat", "bin", "--start", fmt_start(t0), "--end", fmt_end(t1), "--format", "jsonl"
    )
    assert rc == 0, err
    got = [(r["time"], r["seq"], payload_of(r)) for r in map(json.loads, out.splitlines())]
    assert got == [(t, s, p) for t, _, s, p in ev if t0 <= t < t1]
    assert [g[1] for g in got] == [2, 3, 4]


def test_replay_open_ended_and_empty_ranges(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    want = built.expected("heat", "residual")
    mid = want[len(want) // 2][0]
    rc, out, _ = cli(capsys, "replay", built.root, "heat", "residual", "--start", iso(mid), "--format", "jsonl")
    assert [json.loads(x)["time"] for x in out.splitlines()] == [e[0] for e in want if e[0] >= mid]
    rc, out, _ = cli(capsys, "replay", built.root, "heat", "residual", "--end", str(mid), "--format", "jsonl")
    assert [json.loads(x)["time"] for x in out.splitlines()] == [e[0] for e in want if e[0] < mid]
    rc, out, err = cli(capsys, "replay", built.root, "heat", "residual", "--start", str(mid), "--end", str(mid))
    # an empty answer is not an error, but it is said (on stderr, once), with the story's span to choose from:
    # a range copied from an example (fixed dates) returned nothing in silence
    first, last = min(e[0] for e in want), max(e[0] for e in want)
    assert rc == 0 and out == ""
    span = f"it spans {iso(first)} to {iso(last)}"
    assert err.splitlines() == [f"chronompi replay: no events of heat/residual in [{iso(mid)}, {iso(mid)}); {span}"]
    rc, out, err = cli(capsys, "replay", built.root, "heat", "residual", "--end", str(first))
    assert rc == 0 and out == "" and f"in [..., {iso(first)})" in err
    rc, out, err = cli(capsys, "replay", built.root, "heat", "residual", "--limit", "0")
    assert rc == 0 and out == "" and err == ""  # nothing asked for, nothing to say


def test_replay_limit(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    want = built.expected("heat", "residual")
    for limit in (0, 1, 5, 41, 43, 1000):
        for batch in ("1", "65536"):
            rc, out, _ = cli(
                capsys, "replay", built.root, "heat", "residual", "--limit", limit, "--batch-events", batch, "--format",
                "csv",
            )  # fmt: skip
            assert rc == 0
            rows = list(csv.DictReader(io.StringIO(out)))
            assert [(int(r["time"]), int(r["client"], 16), int(r["seq"]), payload_of(r)) for r in rows] == want[:limit]
    t10 = want[10][0]
    rc, out, _ = cli(capsys, "replay", built.root, "heat", "residual", "--limit", "3", "--start", str(t10))
    tail = [e for e in want if e[0] >= t10][:3]
    assert out.splitlines() == [f"{iso(t)}\t{c:016x}\t{s}\t{p.decode()}" for t, c, s, p in tail]


# -- stats --------------------------------------------------------------------------------------------------------
def test_stats_plain(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "stats", built.root)
    assert rc == 0 and err == ""
    stories, runs = sections(out)
    head = stories[0]
    assert head == [
        "chronicle", "story", "events", "bytes", "first", "last", "span_s", "events_per_s", "segments", "runs",
        "windows", "late",
    ]  # fmt: skip
    rows = {(r[0], r[1]): dict(zip(head, r)) for r in stories[1:]}
    assert set(rows) == set(built.stories)
    for key, ev in built.stories.items():
        r = rows[key]
        ev = sorted(ev)
        assert int(r["events"]) == len(ev)
        assert int(r["bytes"]) == sum(len(e[3]) for e in ev)
        assert (r["first"], r["last"]) == (iso(ev[0][0]), iso(ev[-1][0]))
        span = (ev[-1][0] - ev[0][0]) / 1e9
        assert float(r["span_s"]) == pytest.approx(span, abs=1e-3)
        assert float(r["events_per_s"]) == pytest.approx(len(ev) / span, rel=1e-3)
    res, binr, log = rows[("heat", "residual")], rows[("heat", "bin")], rows[("other", "log")]
    assert (res["segments"], res["runs"], res["windows"], res["late"]) == ("2", "1", "3", "1")
    assert (binr["segments"], binr["runs"], binr["windows"], binr["late"]) == ("1", "1", "1", "0")
    assert (log["segments"], log["runs"], log["windows"], log["late"]) == ("1", "1", "1", "0")

    rhead = runs[0]
    assert rhead == [
        "run", "status", "start", "duration_s", "ranks", "events", "in_store", "bytes", "segments", "dropped"
    ]  # fmt: skip
    rr = {r[0]: dict(zip(rhead, r)) for r in runs[1:]}
    heat = [e for k, v in built.stories.items() if k[0] == "heat" for e in v]
    aa = rr[f"{RUN_AA:016x}"]
    assert aa["status"] == "complete" and float(aa["duration_s"]) == pytest.approx(5.0)
    assert aa["events"] == aa["in_store"] == str(len(heat))
    assert int(aa["bytes"]) == sum(len(e[3]) for e in heat) and aa["segments"] == "3"
    bb = rr[f"{RUN_BB:016x}"]
    assert [bb[k] for k in ("status", "duration_s", "events", "in_store", "segments")] == [
        "crashed",
        "-",
        "-",
        "5",
        "1",
    ]


def test_stats_rich(built: Built, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("CHRONOMPI_STDOUT_TTY", raising=False)
    monkeypatch.setenv("TERM", "xterm")  # (with TERM=dumb rich squeezed the table to "...": now plain rows)
    rc, out, _ = cli(capsys, "stats", built.root)
    assert rc == 0 and "\t" not in out
    for word in ("residual", "late", "events_per_s", "complete", "crashed", iso(T0)):
        assert word in out  # nothing squeezed out of a narrow table


# -- export -------------------------------------------------------------------------------------------------------
def test_export_jsonl_stdout_everything(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "export", built.root)  # jsonl is the default
    assert rc == 0
    got = [(r["chronicle"], r["story"], r["time"], int(r["client"], 16), r["seq"], payload_of(r))
           for r in map(json.loads, out.splitlines())]  # fmt: skip
    want = [(c, s, *e) for c, s in sorted(built.stories) for e in built.expected(c, s)]
    assert got == want


def test_export_csv_file_with_filters(built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dst = tmp_path / "heat.csv"
    rc, out, err = cli(capsys, "export", built.root, "--format", "csv", "--output", dst, "--chronicle", "heat")
    n_heat = sum(len(v) for k, v in built.stories.items() if k[0] == "heat")
    assert rc == 0 and out == "" and err.count("\n") == 1 and f"{n_heat} events of 2 stories" in err
    rows = list(csv.DictReader(dst.open(newline="", encoding="utf-8")))
    got = [
        (r["chronicle"], r["story"], int(r["time"]), int(r["client"], 16), int(r["seq"]), payload_of(r)) for r in rows
    ]
    assert got == [(c, s, *e) for c, s in [("heat", "bin"), ("heat", "residual")] for e in built.expected(c, s)]
    assert [p.name for p in tmp_path.iterdir()] == ["heat.csv"]  # no temporary file left

    dst2 = tmp_path / "logs.jsonl"
    rc, _, _ = cli(capsys, "export", built.root, "-o", dst2, "--story", "log", "--story", "bin", "--limit", "8")
    assert rc == 0
    got2 = [(r["chronicle"], r["story"], r["seq"]) for r in map(json.loads, dst2.read_text().splitlines())]
    assert got2 == [("heat", "bin", i) for i in range(6)] + [("other", "log", 0), ("other", "log", 1)]


def test_export_range(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    t1 = T0 + 15 * MS
    rc, out, _ = cli(capsys, "export", built.root, "--end", iso(t1), "--format", "jsonl")
    got = [(r["story"], r["time"]) for r in map(json.loads, out.splitlines())]
    want = [(s, e[0]) for c, s in sorted(built.stories) for e in built.expected(c, s) if e[0] < t1]
    assert got == want and {s for s, _ in got} == {"bin", "residual"}


def test_export_parquet(built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    dst = tmp_path / "all.parquet"
    rc, _, err = cli(capsys, "export", built.root, "--format", "parquet", "--output", dst)
    assert rc == 0, err
    t = pq.read_table(dst, columns=["chronicle", "story", "client", "seq", "payload"]).to_pydict()
    got = list(zip(t["chronicle"], t["story"], t["client"], t["seq"], t["payload"]))
    want = [(c, s, e[1], e[2], e[3]) for c, s in sorted(built.stories) for e in built.expected(c, s)]
    assert got == want
    assert pq.read_table(dst).column("time").cast("int64").to_pylist() == [
        e[0] for c, s in sorted(built.stories) for e in built.expected(c, s)
    ]


def test_export_parquet_splits_batches_past_arrow_binary(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch with more payload bytes than one Arrow binary column holds (2 GiB; 64 B here) is written
    in halves, as more row groups: same rows, same order."""
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setattr(chronompi.export, "ARROW_BINARY_MAX", 64)
    dst = tmp_path / "split.parquet"
    rc, _, err = cli(capsys, "export", built.root, "--format", "parquet", "--output", dst)
    assert rc == 0, err
    t = pq.read_table(dst, columns=["chronicle", "story", "client", "seq", "payload"]).to_pydict()
    got = list(zip(t["chronicle"], t["story"], t["client"], t["seq"], t["payload"]))
    assert got == [(c, s, e[1], e[2], e[3]) for c, s in sorted(built.stories) for e in built.expected(c, s)]
    assert pq.ParquetFile(dst).num_row_groups > len(built.stories)


def test_export_parquet_without_pyarrow(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chronompi.export, "have_pyarrow", lambda: False)
    rc, out, err = cli(capsys, "export", built.root, "--format", "parquet", "--output", tmp_path / "x.parquet")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "needs pyarrow" in err
    assert not list(tmp_path.iterdir())
    rc, _, err = cli(capsys, "export", built.root, "--format", "parquet")
    assert rc == 2 and "--output" in err


# -- bad input ----------------------------------------------------------------------------------------------------
def _garbage_segment(root: Path) -> None:
    (root / "segments" / "x.h5").write_bytes(b"this is not an HDF5 file\n" * 64)


def _bad_cases(root: Path, tmp: Path) -> list[tuple[str, list[object], str]]:
    (tmp / "plain.txt").write_text("hello\n")
    (tmp / "notastore").mkdir()
    (tmp / "notastore" / "data.csv").write_text("1,2\n")
    return [
        ("missing store", ["ls", tmp / "nowhere"], "does not exist"),
        ("missing store", ["replay", tmp / "nowhere", "heat", "bin"], "does not exist"),
        ("missing store", ["stats", tmp / "nowhere"], "does not exist"),
        ("missing store", ["export", tmp / "nowhere"], "does not exist"),
        ("plain file", ["ls", tmp / "plain.txt"], "not a chronompi store"),
        ("plain file", ["replay", tmp / "plain.txt", "heat", "bin"], "not a chronompi store"),
        ("not a store", ["stats", tmp / "notastore"], "not a chronompi store"),
        ("not a store", ["export", tmp / "notastore"], "not a chronompi store"),
        ("unknown chronicle", ["replay", root, "nope", "bin"], "no chronicle 'nope'"),
        ("unknown story", ["replay", root, "heat", "nope"], "no story 'nope' in chronicle 'heat'"),
        ("unknown chronicle", ["export", root, "--chronicle", "nope"], "no chronicle 'nope'"),
        ("unknown story", ["export", root, "--story", "nope"], "no story 'nope'"),
        ("invalid name", ["replay", root, "..", "bin"], "invalid chronicle name"),
        ("start > end", ["replay", root, "heat", "bin", "--start", str(T0 + 5), "--end", str(T0)], "is after --end"),
        ("start > end", ["export", root, "--start", iso(T0 + 5), "--end", iso(T0)], "is after --end"),
        ("bad time", ["replay", root, "heat", "bin", "--start", "yesterday"], "neither nanoseconds"),
        ("bad time", ["export", root, "--end", "2026-13-45T00:00:00"], "neither nanoseconds"),
        ("bad option", ["replay", root, "heat", "bin", "--limit", "-1"], "--limit"),
        ("bad option", ["replay", root, "heat", "bin", "--format", "xml"], "--format"),
        ("missing argument", ["replay", root, "heat"], "required"),
        ("bad output", ["export", root, "--output", tmp / "no" / "such" / "dir.jsonl"], "no such directory"),
        ("bad output", ["export", root, "--output", tmp], "is a directory"),
    ]


def test_bad_input_is_one_line(built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for what, args, needle in _bad_cases(built.root, tmp_path):
        rc, out, err = cli(capsys, *args)
        assert rc == 2, (what, args, rc, err)
        assert out == "", (what, out)
        assert err.count("\n") == 1 and err.startswith(f"chronompi {args[0]}: "), (what, err)
        assert needle in err, (what, err)
        assert "Traceback" not in err


@pytest.mark.parametrize("cmd", ["ls", "replay", "stats", "export"])
def test_corrupt_segment_is_one_line(copy: Built, capsys: pytest.CaptureFixture[str], cmd: str) -> None:
    _garbage_segment(copy.root)
    args = [cmd, copy.root] + (["heat", "bin"] if cmd == "replay" else [])
    rc, out, err = cli(capsys, *args)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"chronompi {cmd}: unreadable segment ") and "x.h5" in err
    assert "fsck" in err and "Traceback" not in err
    rc, out, err = cli(capsys, *args, "--skip-damaged")  # the rest is still readable on request
    assert rc == 0 and err.count("\n") == 1 and "warning" in err and "x.h5" in err
    if cmd == "replay":
        assert len(out.splitlines()) == len(copy.stories[("heat", "bin")])


def test_damaged_dataset_is_one_line(copy: Built, capsys: pytest.CaptureFixture[str]) -> None:
    """A segment that opens but whose story lacks its index: an error line, not a traceback."""
    import h5py

    seg = sorted((copy.root / "segments").glob(f"r{RUN_BB:016x}-*.h5"))[0]
    with h5py.File(seg, "a") as f:
        del f["other/log/windows"]
    for args in (["stats", copy.root], ["replay", copy.root, "other", "log"], ["ls", copy.root]):
        rc, out, err = cli(capsys, *args)
        assert rc == 2 and err.count("\n") == 1 and err.startswith(f"chronompi {args[0]}: "), err
        assert "Traceback" not in err


# -- fsck ---------------------------------------------------------------------------------------------------------
def test_fsck(copy: Built, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("chronompi.store.fsck")
    rc, out, err = cli(capsys, "fsck", copy.root)
    assert rc == 0 and err == "" and out.splitlines()[-1].endswith(": ok") and "4 segments" in out
    _garbage_segment(copy.root)
    rc, out, err = cli(capsys, "fsck", copy.root, "--dry-run")
    assert rc == 1 and err == ""
    assert any(line.startswith("problem: ") and "x.h5" in line for line in out.splitlines())
    assert (copy.root / "segments" / "x.h5").exists()  # a dry run changes nothing
    rc, out, err = cli(capsys, "fsck", copy.root)  # moved aside, and never "ok": a closed segment held events
    assert rc == 1 and any(line.startswith("repaired: ") and "x.h5" in line for line in out.splitlines())
    assert any(line.startswith("problem: x.h5: its events are lost") for line in out.splitlines()), out
    rc, out, err = cli(capsys, "fsck", copy.root)  # and the second fsck finds nothing
    assert rc == 0 and "repaired:" not in out and out.splitlines()[-1].endswith(": ok"), out
    rc, out, err = cli(capsys, "replay", copy.root, "heat", "bin", "--format", "jsonl")
    assert rc == 0 and [payload_of(json.loads(x)) for x in out.splitlines()] == [
        e[3] for e in copy.expected("heat", "bin")
    ]
    rc, out, err = cli(capsys, "fsck", copy.root / "nowhere")
    assert rc == 2 and err.count("\n") == 1 and "does not exist" in err


def test_fsck_exit_status_and_missing_module(
    built: Built, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring alone, with a stand-in fsck: problems left after repair give exit status 1."""

    @dataclass
    class Report:
        problems: list[str] = field(default_factory=list)
        repaired: list[str] = field(default_factory=list)
        segments: int = 0

        @property
        def ok(self) -> bool:
            return not self.problems

    calls: list[bool] = []
    ages: list[float] = []

    def fake(path: object, repair: bool = True, live_s: float = 60.0) -> Report:
        calls.append(repair)
        ages.append(live_s)
        return Report(["segment y.h5 is\nunreadable"], ["removed z.tmp-1"], 3)

    monkeypatch.setitem(sys.modules, "chronompi.store.fsck", types.SimpleNamespace(fsck=fake))
    rc, out, _ = cli(capsys, "fsck", built.root)
    assert rc == 1 and calls == [True]
    assert out.splitlines() == [
        "repaired: removed z.tmp-1",
        "problem: segment y.h5 is unreadable",
        f"{built.root}: 3 segments, 1 repaired, 1 problems: problems remain",
    ]
    rc, out, _ = cli(capsys, "fsck", built.root, "--dry-run")
    assert rc == 1 and calls == [True, False] and "dry run" in out
    rc, out, _ = cli(capsys, "fsck", built.root, "--job-ended")  # the job is dead: nothing is too young
    assert rc == 1 and calls == [True, False, True] and ages == [60.0, 60.0, 0.0]
    monkeypatch.setitem(sys.modules, "chronompi.store.fsck", None)  # the module is not there
    rc, out, err = cli(capsys, "fsck", built.root)
    assert rc == 2 and err.count("\n") == 1 and "fsck is not available" in err


# -- the console script -------------------------------------------------------------------------------------------
def _script() -> str:
    exe = Path(sys.executable).parent / "chronompi"
    if not exe.exists():
        pytest.skip("the chronompi console script is not installed (pip install -e .)")
    return str(exe)


def test_console_script(copy: Built) -> None:
    exe = _script()
    r = subprocess.run([exe, "ls", str(copy.root)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    stories, _ = sections(r.stdout)
    assert stories[1:] == [
        [c, s, str(len(v)), iso(min(v)[0]), iso(max(v)[0])] for (c, s), v in sorted(copy.stories.items())
    ]
    _garbage_segment(copy.root)  # the HDF5 library must not print its error stack either
    r = subprocess.run([exe, "replay", str(copy.root), "heat", "bin"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("chronompi replay: unreadable segment"), r.stderr


def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    """``chronompi replay ... | head -1``: no traceback, no 'Exception ignored' from the final flush."""
    exe = _script()
    root = tmp_path / "big"
    init_store(root)
    w = SegmentWriter(root, 1, 0, StorageConfig(root=str(root), staging="none"))
    n = 20_000
    events = [(T0 + i * 1000, A, i, b"x" * 60 + f"{i:04d}".encode()) for i in range(n)]
    w.append("c", "s", [make_run(0, events)])
    w.close()
    env = dict(os.environ, PYTHONUNBUFFERED="0")
    p = subprocess.Popen([exe, "replay", str(root), "c", "s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    rc = p.wait(timeout=60)
    assert first.decode().rstrip("\n").split("\t") == [iso(T0), f"{A:016x}", "0", "x" * 60 + "0000"]
    assert err == b"" and rc == 141
