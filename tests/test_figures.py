"""Every measured figure the docs quote traces to a results file in ``perf/results`` (no MPI, fast).

``perf/figures.toml`` registers each quoted figure: the doc(s) quoting it, the text as quoted, the results
file, the row(s) it comes from, the field, and how it is formatted. For each entry this test reads the row(s),
formats the value and checks that it equals the quote and that the quote is in every doc named. A second
check fails when a published results file holds a row measured from a tree with uncommitted changes (a
``git_commit`` ending in ``+dirty``, at the top level or in ``machine``), except in the files the registry
lists under ``legacy_dirty`` (each with its reason). A third, narrow one: a doc passage (a table row, or a
paragraph) that names a results file and quotes a figure with a unit of measure must quote at least one
registered figure of that file; and every results file a doc names exists.
"""

from __future__ import annotations

import json
import re
import statistics
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results"
REGISTRY = tomllib.loads((ROOT / "perf" / "figures.toml").read_text())
FIGURES: list[dict[str, Any]] = REGISTRY["figure"]
LEGACY_DIRTY: dict[str, str] = REGISTRY.get("legacy_dirty", {})
DOCS = ["README.md", "perf/README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]

REDUCE: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min, "max": max}
# a figure with a unit typical of a measurement: "1.44 M/s", "13.7 ms", "0.95 s", "383 ns", "12 MiB"
MEASURED = re.compile(r"\d[\d,.]*\s?(?:ms|ns|µs|us|s|k/s|M/s|events/s|msg/s|MiB|GiB|MB/s)(?![\w/])")
CITED = re.compile(r"perf/results/([\w.-]+\.jsonl)|`([\w.-]+\.jsonl)`")


def rows_of(name: str) -> list[dict[str, Any]]:
    lines = (RESULTS / name).read_text().splitlines()
    return [{"_line": i, **json.loads(s)} for i, s in enumerate(lines, 1) if s.strip()]


def field(row: dict[str, Any], path: str) -> Any:
    """``a.b.c`` of a row; through a list of dicts, the list of each one's value (e.g. ``sessions.tail``)."""
    value: Any = row
    for key in path.split("."):
        value = [v[key] for v in value] if isinstance(value, list) else value[key]
    return value


def matches(row: dict[str, Any], fig: dict[str, Any]) -> bool:
    if "lines" in fig and row["_line"] not in fig["lines"]:
        return False
    try:
        return all(field(row, k) == v for k, v in fig.get("where", {}).items())
    except (KeyError, TypeError):
        return False


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def value_of(fig: dict[str, Any]) -> list[float]:
    """The figure's value(s): a field of the selected row, or a reduction over the selected rows."""
    rows = [r for r in rows_of(fig["file"]) if matches(r, fig)]
    if "divide_by" in fig:
        values = [float(field(r, fig["field"])) / float(field(r, fig["divide_by"])) for r in rows]
    else:  # a field that holds a list (the rounds of a run) pools its items over the selected rows
        values = [float(v) for r in rows for v in _items(field(r, fig["field"]))]
    values = [(v - fig.get("subtract", 0.0)) * fig.get("scale", 1.0) for v in values]
    how = fig.get("reduce", "one")
    if how == "one":
        assert len(values) == 1, f"{fig['quote']!r}: {len(values)} rows of {fig['file']} match {fig.get('where')}"
        return values
    assert values, f"{fig['quote']!r}: no row of {fig['file']} matches {fig.get('where')}"
    return [min(values), max(values)] if how == "range" else [float(REDUCE[how](values))]


def commit_of(row: dict[str, Any]) -> str:
    machine = row["machine"] if isinstance(row.get("machine"), dict) else {}
    return str(row.get("git_commit") or machine.get("git_commit") or "")


def figure_id(fig: dict[str, Any]) -> str:
    return f"{fig['file']}:{fig['quote']}"


@pytest.mark.parametrize("fig", FIGURES, ids=figure_id)
def test_quoted_figure_is_in_its_file(fig: dict[str, Any]) -> None:
    assert (RESULTS / fig["file"]).is_file(), f"{fig['quote']!r} cites perf/results/{fig['file']}, which is absent"
    shown = fig["format"].format(*value_of(fig))
    assert shown == fig["quote"], f"{fig['file']} {fig['field']} gives {shown!r}, the docs quote {fig['quote']!r}"
    for doc in fig["docs"]:
        assert fig["quote"] in (ROOT / doc).read_text(), f"{doc} no longer quotes {fig['quote']!r}: update the registry"


def test_no_results_from_a_dirty_tree() -> None:
    dirty = {}
    for path in sorted(RESULTS.glob("*.jsonl")):
        commits = {commit_of(r) for r in rows_of(path.name)}
        if any(c.endswith("+dirty") for c in commits) and path.name not in LEGACY_DIRTY:
            dirty[path.name] = sorted(c for c in commits if c.endswith("+dirty"))
    assert not dirty, f"results measured from a tree with uncommitted changes: {dirty}"
    assert "+dirty" not in (RESULTS / "summary.md").read_text(), "summary.md is drawn from a dirty-tree run"


def test_legacy_dirty_list_is_current() -> None:
    for name, reason in LEGACY_DIRTY.items():
        assert reason.strip(), f"legacy_dirty {name}: say why it is kept"
        assert any(commit_of(r).endswith("+dirty") for r in rows_of(name)), f"{name} is clean: drop it from the list"


def passages(text: str) -> list[str]:
    """Table rows one by one, other text by paragraph."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        rows = [line for line in block.splitlines() if line.lstrip().startswith("|")]
        out += rows or [block]
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_cited_results_are_registered(doc: str) -> None:
    """A passage naming a results file and quoting a measured figure quotes a registered figure of that file."""
    quotes: dict[str, set[str]] = {}
    for fig in FIGURES:
        if doc in fig["docs"]:
            quotes.setdefault(fig["file"], set()).add(fig["quote"])
    missing = []
    for passage in passages((ROOT / doc).read_text()):
        cited = {a or b for a, b in CITED.findall(passage)}
        for name in cited:
            assert (RESULTS / name).is_file(), f"{doc} cites perf/results/{name}, which is absent"
        if cited and MEASURED.search(passage):
            if not any(q in passage for name in cited for q in quotes.get(name, ())):
                missing.append((sorted(cited), passage[:120]))
    assert not missing, f"{doc}: figures citing a results file, none registered in perf/figures.toml: {missing}"
