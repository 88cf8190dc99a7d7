"""Extraction modules: where the Parsl monitoring tables rebuilt from a store go.

The store itself (HDF5 segments, one story per message type) is always the
primary copy; an extractor writes Parsl's tables somewhere else, once
(``chronompi export parsl``) or step by step while a workflow runs (``--follow``):

* ``sqlite`` -- :class:`~chronompi.parsl.extract.sqlite.SqliteExtractor`: Parsl's own monitoring
  database (``parsl-visualize``, ``parsl.monitoring.queries``);
* ``parquet`` -- :class:`~chronompi.parsl.extract.parquet.ParquetExtractor`: one Parquet file per
  table (needs pyarrow).

A new one subclasses :class:`Extractor` and is added to ``EXTRACTORS``.
"""

from __future__ import annotations

from typing import Any

from .base import Change, Extractor

EXTRACTORS = {
    "sqlite": "chronompi.parsl.extract.sqlite:SqliteExtractor",
    "parquet": "chronompi.parsl.extract.parquet:ParquetExtractor",
}


def make_extractor(fmt: str, path: Any, **options: Any) -> Extractor:
    """The extractor of format ``fmt`` (a key of ``EXTRACTORS``) writing to ``path``."""
    import importlib

    where = EXTRACTORS.get(fmt)
    if where is None:
        raise ValueError(f"unknown extraction format {fmt!r}: give one of {', '.join(EXTRACTORS)}")
    module, _, name = where.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(path, **options)


__all__ = ["EXTRACTORS", "Change", "Extractor", "make_extractor"]
