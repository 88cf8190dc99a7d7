"""The store directory and the staging directories, as session start-up makes and checks them.

Kept apart from :mod:`chronompi.store.format` (numpy) and :mod:`chronompi.store.writer` (h5py): every
rank runs these before its role's modules are imported, so a keeper or grapher reaches the start-up
collectives without numpy or h5py (they load after the split, beside the program's own start).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StoreError

if TYPE_CHECKING:
    from ..config import StorageConfig

SCHEMA_VERSION = 2  # 2: checksums (XXH3-64 per run and per index row); 1 is still read
MARKER = "chronompi.json"
SEGMENTS = "segments"
RUNS = "runs"


def resolve_staging(staging: str, n_nodes: int) -> str:
    """``storage.staging`` for a job on ``n_nodes`` nodes: ``auto`` is node-local (``local``) on one node and
    the store itself (``none``) on more. A sync is confirmed once its events are committed where the open
    segment lives; on a node-local disk they would be lost with that node, and a job of several nodes must
    outlive the loss of any one of them (docs/architecture.md, Durability)."""
    if staging == "auto":
        return "none" if n_nodes > 1 else "local"
    return staging


def staging_dir(cfg: StorageConfig, run_id: int) -> Path:
    """Where a grapher of run ``run_id`` writes its open segments (the visor names them in the run record).
    ``auto`` not resolved for the job's nodes (:func:`resolve_staging`) counts as one node's."""
    if cfg.staging in ("", "none"):
        return Path(cfg.root) / SEGMENTS
    base = cfg.staging
    if base in ("auto", "local"):
        base = os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(base) / f"chronompi-staging-r{run_id:016x}"


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
        import json

        tmp = path / (MARKER + ".tmp")
        tmp.write_text(json.dumps({"format": "chronompi-store", "schema": SCHEMA_VERSION}) + "\n")
        os.replace(tmp, marker)
    return path


def remove_unused_store(root: str | os.PathLike[str]) -> None:
    """Undo :func:`init_store` for a session that failed at start-up: remove the store if it holds nothing
    but what init_store made (the marker, empty ``segments/`` and ``runs/``); anything else stays."""
    path = Path(root)
    subs = [path / SEGMENTS, path / RUNS]
    try:
        if {p.name for p in path.iterdir()} - {MARKER, SEGMENTS, RUNS}:
            return
        if any(d.is_symlink() or not d.is_dir() or any(d.iterdir()) for d in subs if os.path.lexists(d)):
            return
        for d in subs:
            if d.exists():
                d.rmdir()
        (path / MARKER).unlink(missing_ok=True)
        path.rmdir()
    except OSError:
        pass


def check_dirs(cfg: StorageConfig, run_id: int) -> list[str]:
    """What keeps a grapher of run ``run_id`` from writing here: its staging directory and the
    store's segments directory must be (or become) writable directories. Empty when all is well."""
    from .space import check_dir  # (graphers and spares only)

    out = []
    for setting, path in (("storage.staging", staging_dir(cfg, run_id)), ("storage.root", Path(cfg.root) / SEGMENTS)):
        problem = check_dir(path)
        if problem is not None:
            out.append(f"{setting}: {path}: {problem}")
        if cfg.staging in ("", "none"):
            break  # staging is the store's segments directory
    return out


def discard_staging(cfg: StorageConfig, run_id: int) -> None:
    """Remove the staging directory :func:`check_dirs` made for run ``run_id`` if it is still empty (the run did
    not start: nothing of it is left behind). Other graphers of the node may share it: only an empty one goes."""
    if cfg.staging not in ("", "none"):
        try:
            staging_dir(cfg, run_id).rmdir()
        except OSError:
            pass
