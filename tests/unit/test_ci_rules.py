"""The suite's CI rule (tests/conftest.py): with CI set, every way a test can avoid running and
passing fails the run. Each case is a tiny test file run by a separate pytest with a copy of
that conftest; without CI the same files pass, so the failures are the rule's doing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

CASES = {
    "test_skip.py": "import pytest\n\ndef test_skipped():\n    pytest.skip('no engine')\n",
    "test_module_skip.py": (
        "import pytest\n\npytest.skip('no engine here', allow_module_level=True)\n\n"
        "def test_never_collected():\n    pass\n"
    ),
    "test_xfail.py": (
        "import pytest\n\n@pytest.mark.xfail(reason='known bug')\n"
        "def test_expected_failure():\n    assert False\n"
    ),
    "test_xpass.py": (
        "import pytest\n\n@pytest.mark.xfail(reason='known bug')\n"
        "def test_unexpected_pass():\n    pass\n"
    ),
    "test_pass.py": "def test_passes():\n    pass\n",
}


def _run(tmp: Path, *names: str, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "1"
    quiet = ["-p", "no:cacheprovider", "-p", "no:asyncio", "-rfE", "--rootdir", str(tmp)]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *quiet, *names],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ci-rules")
    shutil.copy(CONFTEST, tmp / "conftest.py")
    for name, text in CASES.items():
        (tmp / name).write_text(text)
    return tmp


def test_ci_fails_a_skip_an_xfail_and_an_xpass_and_passes_a_pass(project: Path) -> None:
    r = _run(project, "test_skip.py", "test_xfail.py", "test_xpass.py", "test_pass.py", ci=True)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "3 failed, 1 passed in" in out, out
    for line in (
        "FAILED test_skip.py::test_skipped - skipped in CI, which must run every test",
        "FAILED test_xfail.py::test_expected_failure - xfailed in CI, where every test must run"
        " and pass: known bug",
        "FAILED test_xpass.py::test_unexpected_pass - xpassed in CI, where every test must run"
        " and pass: known bug",
    ):
        assert line in out, out


def test_ci_fails_a_module_skipped_at_collection(project: Path) -> None:
    r = _run(project, "test_module_skip.py", ci=True)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "skipped at collection in CI, which must run every test" in out, out
    assert "no engine here" in out and "1 error" in out, out


def test_without_ci_the_same_files_pass(project: Path) -> None:
    r = _run(project, *CASES, ci=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "1 passed, 2 skipped, 1 xfailed, 1 xpassed in" in out, out
