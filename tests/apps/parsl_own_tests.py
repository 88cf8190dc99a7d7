"""Parsl's own monitoring tests, run with chronompi's hub where they make Parsl's ``MonitoringHub``.

    python parsl_own_tests.py OUTDIR

Runs test functions of the installed Parsl's ``parsl/tests/test_monitoring`` as they are, with each
module's ``MonitoringHub`` name bound to a factory of ``ChronompiHub(store=..., **the same arguments)``:
a plain driver (no mpirun), the hub's own session, Parsl's database written at close through
``logging_endpoint``, which the tests then query with SQLAlchemy. Parsl's ``conftest.py`` is not loaded (it
does not load under pytest 9); its one fixture these tests use, ``tmpd_cwd``, is a fresh directory here.
Prints ``PASS name`` or ``FAIL name`` and the traceback for each, then writes OUTDIR/parsl-own.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any


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
    (outdir / "parsl-own.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":  # (Parsl's spawned processes import this file again: nothing runs then)
    sys.exit(main())
