"""kdsctl inspect sync says whether the zone holds its stream to global, as the zone's
/status says: connected, not connected, or a standby instance whose leader holds it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from kdsctl.cli import cli
from tests.unit.test_kdsctl_client import clear_proxy_env
from tests.unit.test_kdsctl_malformed_answers import FakeApi

NOW = "2026-12-04T00:51:33.134Z"


def _status(**changes: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "zone": "zone-a",
        "connected": True,
        "ready": True,
        "global": {"address": "grpcs://127.0.0.1:5685", "instanceId": "global-1"},
        "connectedSince": "2026-12-04T00:50:49.089Z",
        "disconnectedAt": None,
        "lastMessageAt": NOW,
        "appliedRevision": 2,
        "appliedAt": NOW,
        "globalRevision": 2,
        "lagRevisions": 0,
        "resources": {k: {"synced": 0, "local": 0} for k in ("Mesh", "Secret", "GlobalSecret")},
        "applied": {},
        "rejected": {},
        "conflicts": [],
        "connections": 1,
    }
    st.update(changes)
    return st


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApi]:
    a = FakeApi()
    a.role = "zone"
    yield a
    a.server.shutdown()
    a.server.server_close()


def _global_line(api: FakeApi, monkeypatch: pytest.MonkeyPatch, st: dict[str, Any]) -> str:
    clear_proxy_env(monkeypatch)
    api.body = json.dumps(st).encode()
    r = CliRunner().invoke(cli, ["--api-url", api.url, "--token", "t", "inspect", "sync"])
    assert r.exit_code == 0, r.output
    return next(line for line in r.output.splitlines() if line.startswith("Global:"))


def test_a_connected_zone_is_shown_connected(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    line = _global_line(api, monkeypatch, _status())
    assert "(connected since 2026-12-04T00:50:49.089Z" in line, line
    assert "NOT connected" not in line


def test_a_disconnected_zone_is_shown_not_connected(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = _status(connected=False, connectedSince=None, disconnectedAt=NOW)
    line = _global_line(api, monkeypatch, st)
    assert f"(NOT connected since {NOW})" in line, line


def test_a_standby_is_shown_as_such(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    leader = {"instanceId": "zone-a-2", "thisInstance": False, "epoch": 3}
    st = _status(connected=False, connectedSince=None, leader=leader)
    line = _global_line(api, monkeypatch, st)
    assert "(not connected: a standby; the leader holds the stream)" in line, line


def test_the_leader_is_shown_connected(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    leader = {"instanceId": "zone-a-1", "thisInstance": True, "epoch": 3}
    line = _global_line(api, monkeypatch, _status(leader=leader))
    assert "(connected since " in line, line
