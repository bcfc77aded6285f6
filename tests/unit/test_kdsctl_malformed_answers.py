"""kdsctl against a broken or hostile server: every command, given answers of the wrong
shape (missing fields, wrong types, not objects at all), ends with a clear error (or output)
and never a Python traceback; an answer over kdsctl's size limit is refused naming the limit;
a user and password in --api-url never appear in its errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kdsctl.cli import cli
from kdsctl.client import ApiClient, ApiUnreachable
from tests.unit.test_kdsctl_client import clear_proxy_env

# Every field name kdsctl reads from an answer (kdsctl/*.py), for the poisoned answers.
FIELDS = [
    "items",
    "mtls",
    "routing",
    "modificationTime",
    "total",
    "next",
    "name",
    "mesh",
    "type",
    "labels",
    "status",
    "zone",
    "token",
    "rejected",
    "title",
    "detail",
    "causes",
    "invalid_parameters",
    "field",
    "message",
    "reason",
    "globalInstance",
    "startedCount",
    "endedCount",
    "started",
    "ended",
    "resources",
    "problem",
    "lastUpdateAt",
    "lastMessageAt",
    "instanceId",
    "disconnectedAt",
    "connections",
    "conflicts",
    "conflictCount",
    "zoneVersion",
    "warnings",
    "totalUpdates",
    "totalErrors",
    "storeBackend",
    "seconds",
    "role",
    "revisions",
    "global",
    "more",
    "metadata",
    "messagesSent",
    "lastSyncMode",
    "lastError",
    "lagSeconds",
    "lagRevisions",
    "kind",
    "kdsSync",
    "globalRevision",
    "enabledBackend",
    "disconnectReason",
    "creationTime",
    "connectedAt",
    "backends",
    "mtls",
    "synced",
    "sent",
    "ready",
    "local",
    "keyName",
    "revokedAt",
    "id",
    "issuedAt",
    "expiresAt",
    "current",
    "result",
    "data",
    "events",
    "connected",
    "appliedRevision",
    "leader",
    "snapshots",
    "lastSync",
    "head",
]


def _poison(value: object) -> dict[str, object]:
    return dict.fromkeys(FIELDS, value)


MALFORMED: list[object] = [
    None,
    [],
    "text",
    12,
    1.5,
    True,
    {},
    {"items": None},
    {"items": "x"},
    {"items": [None, 1, "x", []]},
    {"items": [{}], "total": 1},
    {"total": "x", "items": [{}], "next": "yes"},
    _poison(None),
    _poison([1]),
    _poison({"a": None}),
    _poison("str"),
    _poison(-1),
    {**_poison([_poison("x")]), "items": [_poison(3), _poison({})]},
]

COMMANDS: list[list[str]] = [
    ["get", "meshes"],
    ["get", "meshes", "-o", "yaml"],
    ["get", "meshes", "--size", "1"],
    ["get", "mesh", "m"],
    ["get", "secrets", "--mesh", "default"],
    ["get", "secrets", "--mesh", "default", "-o", "json"],
    ["get", "secret", "s", "--mesh", "default"],
    ["get", "global-secrets"],
    ["get", "global-secret", "g"],
    ["get", "zone-tokens"],
    ["get", "zone-token-signing-keys"],
    ["inspect", "zones"],
    ["inspect", "zones", "-o", "json"],
    ["inspect", "zone", "z"],
    ["inspect", "sync"],
    ["delete", "mesh", "m"],
    ["delete", "secret", "s", "--mesh", "default"],
    ["delete", "global-secret", "g"],
    ["delete", "zone-token-signing-key", "k"],
    ["generate", "zone-token", "--zone", "z"],
    ["rotate", "zone-token-signing-key"],
    ["revoke", "zone-token", "t1"],
    ["wait", "synced", "--timeout", "1s", "--interval", "100ms"],
]


class FakeApi:
    """Answers ``/`` with an index of the role the command needs, everything else with one
    body (status 200, or 201 to a POST)."""

    def __init__(self) -> None:
        self.body: bytes = b"{}"
        self.role = "global"
        self.headers: dict[str, str] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == "/":
                    body = json.dumps({"role": api.role, "version": "0"}).encode()
                else:
                    body = api.body
                self.send_response(201 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/json")
                for k, v in api.headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in api.headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApi]:
    a = FakeApi()
    yield a
    a.server.shutdown()
    a.server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxy_env(monkeypatch)


def _run(api: FakeApi, args: list[str], tmp: Path | None = None) -> Any:
    result = CliRunner().invoke(cli, ["--api-url", api.url, "--token", "t", *args])
    # An uncaught exception (a traceback) is result.exception; a handled error is SystemExit.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        result.output,
        repr(result.exception),
    )
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_no_command_shows_a_traceback_on_a_malformed_answer(api: FakeApi, args: list[str]) -> None:
    api.role = "zone" if args == ["inspect", "sync"] else "global"
    for body in MALFORMED:
        api.body = json.dumps(body).encode()
        _run(api, args)


def test_apply_names_what_its_answer_lacks(api: FakeApi, tmp_path: Path) -> None:
    doc = tmp_path / "m.yaml"
    doc.write_text("type: Mesh\nname: m\n")
    for body in MALFORMED:
        api.body = json.dumps(body).encode()
        _run(api, ["apply", "-f", str(doc)])
    api.body = json.dumps({"items": [{"name": "m", "result": "created"}]}).encode()
    r = _run(api, ["apply", "-f", str(doc)])
    assert r.exit_code == 1
    assert "the answer to POST /_apply: items[0] has no string 'type'" in r.output, r.output
    api.body = json.dumps({"result": "created"}).encode()
    r = _run(api, ["apply", "-f", str(doc)])
    assert "the answer to POST /_apply has no list 'items'" in r.output, r.output
    api.body = json.dumps({"items": [{"type": "Mesh", "name": "m", "result": "created"}]}).encode()
    r = _run(api, ["apply", "-f", str(doc)])
    assert r.exit_code == 0 and 'resource type="Mesh" mesh="" name="m" Created' in r.output


def test_a_field_missing_from_an_answer_is_named(api: FakeApi) -> None:
    api.role = "global"
    api.body = json.dumps({"items": [{"zone": "z"}]}).encode()
    r = _run(api, ["get", "zone-tokens"])
    assert r.exit_code == 1
    assert f"the answer to GET {api.url}/zone-tokens is not what kdsctl expects" in r.output


def test_an_answer_over_the_limit_is_refused_naming_it(api: FakeApi) -> None:
    api.body = json.dumps({"items": [], "pad": "x" * 5000}).encode()
    client = ApiClient(api.url, 5)
    client.max_answer_bytes = 4096
    with pytest.raises(ApiUnreachable, match="larger than 4096 bytes, kdsctl's limit"):
        client.get("/meshes")
    # Without a Content-Length (read until the connection closes), the read stops at the limit.
    api.headers = {"Content-Length": "", "Connection": "close"}
    try:
        with pytest.raises(ApiUnreachable, match=r"\(more\) is larger than 4096 bytes"):
            client.get("/meshes")
    finally:
        api.headers = {}
    client.max_answer_bytes = 10_000
    assert client.get("/meshes")["items"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:s3cret@127.0.0.1:1",  # nothing listens on port 1
        "http://admin:s3cret@127.0.0.1:99999",  # an invalid port
        "ftp://admin:s3cret@host",  # not http(s)
    ],
)
def test_a_password_in_the_api_url_never_shows(url: str) -> None:
    result = CliRunner().invoke(cli, ["--api-url", url, "--token", "t", "get", "meshes"])
    assert result.exit_code == 1 and "Error" in result.output, result.output
    assert "s3cret" not in result.output and "admin" not in result.output, result.output
    assert "***@" in result.output, result.output
