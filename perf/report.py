"""Markdown and figure helpers shared by ``plot.py`` and ``peer_table.py``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{nd}g}"
    return str(x)


def size(p: int) -> str:
    return f"{p // 1024} KiB" if p >= 1024 else f"{p} B"


def table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    out += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(out)


def title(what: str, rows: list[dict[str, Any]]) -> str:
    m = next((r["machine"] for r in rows if "machine" in r), {})
    return f"{what} — {m.get('hostname', '?')}, {m.get('cores', '?')} cores, {m.get('date', '')[:10]}"


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
