"""Static checks: the public API is pinned, ruff and mypy are clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import chronompi

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_pinned() -> None:
    assert sorted(chronompi.__all__) == sorted(
        [
            "ChronicleExists",
            "ChronicleInUse",
            "ChronoError",
            "Client",
            "Config",
            "ConfigError",
            "InvalidName",
            "LogHandler",
            "PayloadTooLarge",
            "RemoteError",
            "ScaleError",
            "ScaleTimeout",
            "SessionClosed",
            "Store",
            "StoreError",
            "Story",
            "StoryNotAcquired",
            "SyncTimeout",
            "UnknownChronicle",
            "UnknownStory",
            "__version__",
            "finalize",
            "init",
            "open_store",
            "session",
            "story",
        ]
    )
    for name in chronompi.__all__:
        assert hasattr(chronompi, name)


def test_errors_inherit_builtins() -> None:
    assert issubclass(chronompi.ConfigError, ValueError)
    assert issubclass(chronompi.InvalidName, ValueError)
    assert issubclass(chronompi.StoryNotAcquired, RuntimeError)
    assert issubclass(chronompi.UnknownChronicle, KeyError)
    assert issubclass(chronompi.StoreError, OSError)
    for name in chronompi.__all__:
        obj = getattr(chronompi, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, chronompi.ChronoError)


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install '.[test]')")
    return found


def test_ruff_clean() -> None:
    paths = [p for p in ("chronompi", "tests", "perf", "examples") if (ROOT / p).exists()]
    r = subprocess.run([_tool("ruff"), "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean() -> None:
    r = subprocess.run([_tool("mypy"), "chronompi"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
