"""kds.healthcheck (the image's HEALTHCHECK) against small HTTP servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from kds.healthcheck import candidate_urls, main


def test_candidate_urls() -> None:
    env = {"GLOBALCP_API_ADDRESS": "0.0.0.0:5681", "ZONECP_API_ADDRESS": "10.1.2.3:5682"}
    assert candidate_urls([], env) == [
        "http://127.0.0.1:5681/readyz",
        "http://10.1.2.3:5682/readyz",
    ]
    assert candidate_urls([], {"ZONECP_API_ADDRESS": "[::]:7"}) == ["http://127.0.0.1:7/readyz"]
    assert candidate_urls([], {"ZONECP_API_ADDRESS": "[::1]:7"}) == ["http://[::1]:7/readyz"]
    assert candidate_urls([], {**env, "KDS_HEALTHCHECK_URL": "http://x/readyz"}) == [
        "http://x/readyz"
    ]
    assert candidate_urls(["http://y/readyz"], env) == ["http://y/readyz"]
    tls = {"ZONECP_API_ADDRESS": "0.0.0.0:5682", "ZONECP_API_TLS_CERT_FILE": "/c.pem"}
    assert candidate_urls([], tls) == ["https://127.0.0.1:5682/readyz"]


def _serve(status: int) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b'{"status": "not ready", "reason": "catching up"}')

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/readyz"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def ready() -> Iterator[str]:
    yield from _serve(200)


@pytest.fixture
def unready() -> Iterator[str]:
    yield from _serve(503)


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/readyz"


def test_ready_if_any_answers_200(ready: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The other daemon's port is closed in a container: that alone does not fail the check.
    assert main([_closed_url(), ready]) == 0


def test_not_ready_names_each_answer(unready: str, capsys: pytest.CaptureFixture[str]) -> None:
    closed = _closed_url()
    assert main([closed, unready]) == 1
    err = capsys.readouterr().err
    assert f"{unready}: 503" in err and "catching up" in err and closed in err


def test_nothing_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KDS_HEALTHCHECK_URL", "GLOBALCP_API_ADDRESS", "ZONECP_API_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    assert main([]) == 2
