"""Suite-wide rules: with CI set, a test that did not run and pass is a failure, never a silent
pass. That covers a skipped test, a module skipped as it is collected (``pytest.skip(...,
allow_module_level=True)``, ``pytest.importorskip``), an expected failure (xfail) and an
unexpected pass (xpass). tests/unit/test_ci_rules.py runs each case."""

from __future__ import annotations

import os

import pytest

import kds  # noqa: F401  # before any test loads grpc: kds.grpc_env sets grpc's environment


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    if not _in_ci():
        return
    if hasattr(rep, "wasxfail"):
        what = "xfailed" if rep.skipped else "xpassed"
        reason = rep.wasxfail
        del rep.wasxfail  # reported as the failure it is, not as xfail/xpass
        rep.outcome = "failed"
        rep.longrepr = f"{what} in CI, where every test must run and pass: {reason}"
    elif rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI, which must run every test: {rep.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    if _in_ci() and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = f"skipped at collection in CI, which must run every test: {rep.longrepr}"
