"""The harness's --profile: py-spy is started on each process handed to ``sample`` only when
a profile directory was given, and the harness waits for every sampler at the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import common


def test_sample_starts_py_spy_only_with_a_profile_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []

    class FakePopen:
        def __init__(self, cmd: list[str], **kw: Any) -> None:
            started.append(cmd)
            self.waited = False

        def wait(self, timeout: float | None = None) -> int:
            self.waited = True
            return 0

    monkeypatch.setattr(common, "_profile", {"dir": None, "spies": []})
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    common.sample(1234, "bulk-global")
    assert started == []
    common.profile_into(tmp_path / "prof")
    assert (tmp_path / "prof").is_dir()
    common.sample(1234, "bulk-global")
    assert started == [
        [
            str(Path(sys.executable).parent / "py-spy"),
            *("record", "--pid", "1234", "--rate", "250", "--format", "raw"),
            *("--output", str(tmp_path / "prof" / "bulk-global-1234.txt"), "--nonblocking"),
        ]
    ]
    spies = list(common._profile["spies"])
    common.samplers_done()
    assert [s.waited for s in spies] == [True] and common._profile["spies"] == []
