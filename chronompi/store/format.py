"""Layout of a store directory and of its HDF5 segment files.

::

    STORE/chronompi.json                      marker: {"format": "chronompi-store", "schema": 1}
    STORE/segments/r<run>-g<grapher>-<n>.h5   closed segments (".h5.part" while being written)
    STORE/runs/r<run>.json                    run manifest written by the visor at the end

    segment:/<chronicle>/<story>/events    EVENT rows (time, client, seq, offset, length)
    segment:/<chronicle>/<story>/payload   uint8 heap; row i's bytes are payload[offset : offset + length]
    segment:/<chronicle>/<story>/windows   WINDOW rows, one per sorted run written
    segment attrs: schema, run, grapher, created

Rows of one window run are contiguous and sorted by (time, client, seq); their
payloads are contiguous too. Data rows are flushed before the index row that
covers them, so a reader that trusts only the windows index never sees a
half-written run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..codec import EVENT
from ..errors import StoreError

SCHEMA_VERSION = 1
MARKER = "chronompi.json"
SEGMENTS = "segments"
RUNS = "runs"

WINDOW = np.dtype(
    [
        ("window", "<i8"),
        ("first_row", "<u8"),
        ("n_rows", "<u8"),
        ("t_min", "<i8"),
        ("t_max", "<i8"),
        ("late", "u1"),
        ("committed", "<i8"),  # wall-clock ns when the run was written (time-to-durable)
    ]
)

__all__ = ["EVENT", "WINDOW", "SCHEMA_VERSION", "init_store", "check_store", "write_run", "read_runs"]


def init_store(root: str | os.PathLike[str]) -> Path:
    """Create (or accept) a store directory; refuse a directory that is something else."""
    path = Path(root)
    marker = path / MARKER
    if path.exists() and not path.is_dir():
        raise StoreError(f"store path {str(path)!r} exists and is not a directory; choose another storage.root")
    if path.is_dir() and not marker.exists() and any(path.iterdir()):
        raise StoreError(
            f"{str(path)!r} is a non-empty directory that is not a chronompi store; "
            "choose an empty or new directory for storage.root"
        )
    (path / SEGMENTS).mkdir(parents=True, exist_ok=True)
    (path / RUNS).mkdir(exist_ok=True)
    if not marker.exists():
        tmp = path / (MARKER + ".tmp")
        tmp.write_text(json.dumps({"format": "chronompi-store", "schema": SCHEMA_VERSION}) + "\n")
        os.replace(tmp, marker)
    return path


def check_store(root: str | os.PathLike[str]) -> Path:
    """Return the path of an existing store, or raise StoreError saying what is wrong."""
    path = Path(root)
    if not path.exists():
        raise StoreError(f"no store at {str(path)!r}: the directory does not exist")
    marker = path / MARKER
    if not marker.is_file():
        raise StoreError(f"{str(path)!r} is not a chronompi store (no {MARKER})")
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{str(marker)!r} is unreadable: {exc}") from None
    if meta.get("format") != "chronompi-store":
        raise StoreError(f"{str(path)!r} is not a chronompi store ({MARKER} says {meta!r})")
    if int(meta.get("schema", 0)) > SCHEMA_VERSION:
        raise StoreError(
            f"store {str(path)!r} has schema {meta['schema']}, newer than this chronompi "
            f"({SCHEMA_VERSION}); upgrade chronompi"
        )
    return path


def open_segment(path: str | os.PathLike[str]) -> Any:
    """Open a segment read-only: a ``.part`` (open, or left by a crash) in SWMR mode, a closed one plainly.

    SWMR read mode is what makes an open or killed writer's file readable; raises OSError
    (or ValueError) when the file is not a readable HDF5 file.
    """
    import h5py

    if str(path).endswith(".part"):
        return h5py.File(path, "r", libver="latest", swmr=True)
    return h5py.File(path, "r")


def write_run(root: str | os.PathLike[str], record: dict[str, object]) -> Path:
    """Write (or replace) a run's record ``runs/r<run>.json`` atomically."""
    path = Path(root) / RUNS / f"r{record['run']}.json"
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_runs(root: str | os.PathLike[str]) -> list[dict[str, object]]:
    """Every run record of a store, oldest first; unreadable records are skipped."""
    out = []
    for p in sorted((Path(root) / RUNS).glob("r*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    out.sort(key=lambda r: int(r.get("start") or 0))  # type: ignore[call-overload]
    return out
