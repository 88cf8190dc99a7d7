"""Parsl's own monitoring tests, run with chronompi's hub where they make Parsl's ``MonitoringHub``.

    python parsl_own_tests.py OUTDIR [--all]

Runs test functions of the installed Parsl's ``parsl/tests/test_monitoring`` as they are, with each
module's ``MonitoringHub`` name bound to a factory of ``ChronompiHub(store=..., **the same arguments)``:
a plain driver (no mpirun), the hub's own session, Parsl's database written at close through
``logging_endpoint``, which the tests then query with SQLAlchemy. Parsl's ``conftest.py`` is not loaded (it
does not load under pytest 9: its ``pytest_ignore_collect`` takes the removed ``path`` argument).

Two ways: the tests that need only ``tmpd_cwd`` are called here (a fresh directory each); the modules in
``THROUGH_PYTEST`` (which need pytest's ``caplog`` and Parsl's ``try_assert``) run through pytest itself, in
this process, with a plug-in in place of Parsl's conftest: Parsl's own ``tmpd_cwd`` and ``try_assert``
fixtures over a session directory of ours, and the ``MonitoringHub`` binding. Prints ``PASS name`` or
``FAIL name`` and the traceback for each, then writes OUTDIR/parsl-own.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any

#: Parsl's test modules run through pytest, and which of their tests (a ``-k`` expression; "": all). Of
#: test_stdouterr's 20 (10 ways of naming a stream, for stdout and stderr; each starts HTEX and a session)
#: a named file and no file for each stream: the DataFlowKernel turns each way into a string before the hub
#: sees it. ``--all`` runs all 20.
THROUGH_PYTEST = {"test_stdouterr": "hello.txt or None", "test_log_config": ""}


def hub_factory(outdir: Path) -> Any:
    from chronompi.parsl import ChronompiHub

    made = [0]

    def make(**kwargs: Any) -> Any:
        for name in ("hub_address", "hub_port", "hub_port_range"):  # Parsl's router settings: no router here
            kwargs.pop(name, None)
        made[0] += 1
        return ChronompiHub(store=outdir / f"store-{made[0]}", **kwargs)

    return make


def cases() -> list[tuple[str, Any]]:
    import parsl.tests.test_monitoring.test_basic as basic
    import parsl.tests.test_monitoring.test_htex_init_blocks_vs_monitoring as init_blocks

    out: list[tuple[str, Any]] = []
    for cfg in (basic.thread_config, basic.htex_config, basic.htex_filesystem_config, basic.htex_udp_config):
        name = f"test_basic::test_row_counts_base[{cfg.__name__}]"
        out.append((name, lambda d, c=cfg: basic.row_counts_parametrized(d, c)))
    import parsl.tests.test_monitoring.test_app_names as app_names
    import parsl.tests.test_monitoring.test_incomplete_futures as incomplete
    import parsl.tests.test_monitoring.test_memoization_representation as memo

    for get_app, expected, value in (
        (app_names.get_regular_decorated_app, "regular_decorated_app", 5),
        (app_names.get_for_decoration_later, "for_decoration_later", 77),
        (app_names.get_decorated_closure, "decorated_closure", 53),
    ):
        name = f"test_app_names::test_app_name[{expected}]"
        out.append((name, lambda d, g=get_app, e=expected, v=value: app_names.test_app_name(g, e, v, d)))
    out.append(("test_incomplete_futures::test_future_representation", incomplete.test_future_representation))
    out.append(("test_memoization_representation::test_hashsum", memo.test_hashsum))
    for strategy in ("none", "simple", "htex_auto_scale"):
        out.append(
            (
                f"test_htex_init_blocks_vs_monitoring::test_row_counts[{strategy}]",
                lambda d, s=strategy: init_blocks.test_row_counts(d, s),
            )
        )
    return out


def pytest_plugin(module: str, make: Any, session_dir: Path, results: dict[str, str]) -> types.ModuleType:
    """What Parsl's conftest gives the tests of ``module``, as a plug-in: its own ``tmpd_cwd`` and ``try_assert``
    fixtures (imported, unchanged; ``tmpd_cwd_session``, which needs Parsl's ``--config`` option, is a directory
    of ours), ``MonitoringHub`` bound to ``make`` in the test's module, and each test's outcome into
    ``results``, with the failure's text into ``results["why " + name]``."""
    import pytest
    from parsl.tests import conftest as parsl_conftest  # imported as a module: its hooks are never registered

    plugin = types.ModuleType("chronompi_parsl_own")

    @pytest.fixture(scope="session")
    def tmpd_cwd_session() -> Path:
        return session_dir

    @pytest.fixture(autouse=True)
    def chronompi_hub(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(request.module, "MonitoringHub", make)

    def pytest_runtest_logreport(report: pytest.TestReport) -> None:
        name = f"{module}::{report.nodeid.rpartition('::')[2]}"
        if not (report.failed or report.skipped or report.when == "call"):
            return
        outcome = "FAIL" if report.failed else "SKIP" if report.skipped else "PASS"
        if results.get(name, "PASS") == "PASS":  # (a failed teardown after a passed call is a failure)
            results[name] = outcome
            print(f"{outcome} {name}", flush=True)
            if report.failed:
                results[f"why {name}"] = report.longreprtext

    plugin.tmpd_cwd_session = tmpd_cwd_session  # type: ignore[attr-defined]
    plugin.tmpd_cwd = parsl_conftest.tmpd_cwd  # type: ignore[attr-defined]
    plugin.try_assert = parsl_conftest.try_assert  # type: ignore[attr-defined]
    plugin.chronompi_hub = chronompi_hub  # type: ignore[attr-defined]
    plugin.pytest_runtest_logreport = pytest_runtest_logreport  # type: ignore[attr-defined]
    return plugin


def run_through_pytest(make: Any, outdir: Path, results: dict[str, str], everything: bool = False) -> None:
    """The modules of ``THROUGH_PYTEST`` under pytest, with no ini file, conftest or cache of this repository
    or of Parsl (``--noconftest`` keeps Parsl's out)."""
    import parsl.tests.test_monitoring as tm
    import pytest

    base = Path(tm.__file__).parent
    ini = outdir / "pytest.ini"
    ini.write_text("[pytest]\n")
    session_dir = outdir / "pytest-parsl"
    session_dir.mkdir()
    for module, select in THROUGH_PYTEST.items():
        args = [str(base / f"{module}.py"), "-c", str(ini), "--rootdir", str(outdir), "--noconftest"]
        args += ["-p", "no:cacheprovider", "-q", "--tb=short", "--show-capture=no"]
        args += ["-W", "ignore::pytest.PytestUnknownMarkWarning"]
        if select and not everything:
            args += ["-k", select]
        pytest.main(args, plugins=[pytest_plugin(module, make, session_dir, results)])


def main() -> int:
    outdir = Path(sys.argv[1])
    import parsl.tests.configs.htex_local_alternate as alternate
    import parsl.tests.test_monitoring.test_basic as basic
    import parsl.tests.test_monitoring.test_htex_init_blocks_vs_monitoring as init_blocks
    import parsl.tests.test_monitoring.test_memoization_representation as memo

    make = hub_factory(outdir)
    for module in (alternate, basic, init_blocks, memo):
        module.MonitoringHub = make  # type: ignore[attr-defined]
    results: dict[str, str] = {}
    for name, run in cases():
        tmpd = Path(tempfile.mkdtemp(prefix="tmpd-", dir=outdir))
        try:
            run(tmpd)
        except Exception:  # noqa: BLE001 - reported, and the next test runs
            results[name] = "FAIL"
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()
        else:
            results[name] = "PASS"
            print(f"PASS {name}", flush=True)
    run_through_pytest(make, outdir, results, everything="--all" in sys.argv[2:])
    (outdir / "parsl-own.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":  # (Parsl's spawned processes import this file again: nothing runs then)
    sys.exit(main())
