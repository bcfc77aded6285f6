"""kdsctl against a server or proxy it cannot trust: whatever it sends is escaped before it
reaches the terminal, and the proxy settings of the environment never leak the API's token
or the proxy's password."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import kdsctl.resources
from kdsctl.cli import cli
from kdsctl.client import ApiClient, ApiUnreachable
from tests.unit.test_kdsctl_client import clear_proxy_env

ESC = "\x1b]0;owned\x07\x1b[2J"


class OneServer:
    """Answers every request on 127.0.0.1 with one status line and JSON body."""

    def __init__(self, body: object, status: str = "200 OK"):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        content = json.dumps(body).encode()
        self.answer = (
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1") + content
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(self.answer)


@pytest.fixture
def serve() -> Iterator[Callable[..., OneServer]]:
    made: list[OneServer] = []

    def make(body: object, status: str = "200 OK") -> OneServer:
        made.append(OneServer(body, status))
        return made[-1]

    yield make
    for s in made:
        s.sock.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxy_env(monkeypatch)


def _kdsctl(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--api-url", url, *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "item"),
    [
        (["get", "secrets"], {"type": "Secret", "mesh": ESC, "name": ESC}),
        (
            ["get", "meshes"],
            {
                "type": "Mesh",
                "name": "m",
                "mtls": {"enabledBackend": ESC, "backends": [{"name": ESC, "type": ESC}]},
            },
        ),
        (
            ["get", "globalsecrets"],
            {
                "type": "GlobalSecret",
                "name": "g",
                "labels": {"kuma.io/origin": "zone", "kuma.io/zone": ESC},
            },
        ),
    ],
)
def test_resource_tables_escape_what_the_server_sent(
    serve: Callable[..., OneServer], args: list[str], item: dict[str, object]
) -> None:
    server = serve({"total": 1, "items": [item], "next": None})
    code, out = _kdsctl(server.url, *args)
    assert code == 0, out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;owned\\x07" in out


def test_zone_token_tables_escape_what_the_server_sent(
    serve: Callable[..., OneServer],
) -> None:
    token = {
        "id": ESC,
        "zone": "z",
        "keyName": "k",
        "issuedAt": ESC,
        "expiresAt": "e",
        "revokedAt": None,
    }
    server = serve({"items": [token]})
    code, out = _kdsctl(server.url, "get", "zone-tokens")
    assert code == 0 and "\x1b" not in out and "\\x1b" in out, out
    keys = serve({"items": [{"name": ESC, "current": True}]})
    code, out = _kdsctl(keys.url, "get", "zone-token-signing-keys")
    assert code == 0 and "\x1b" not in out and "\\x1b" in out, out


def test_a_reason_phrase_is_escaped(serve: Callable[..., OneServer]) -> None:
    """An error answer that is not Kuma's error body is reported by its status line, whose
    reason phrase the server chose."""
    server = serve(["not an error body"], status=f"418 I{ESC}")
    code, out = _kdsctl(server.url, "get", "meshes")
    assert code == 1 and "HTTP 418" in out
    assert "\x1b" not in out and "\\x1b" in out


def test_an_api_on_this_machine_is_never_reached_through_a_proxy(
    serve: Callable[..., OneServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in Go's net/http (kumactl's): a proxy named by the environment is not used for
    localhost or a loopback address, so it never sees the API's bearer token, even when
    NO_PROXY does not list them."""
    proxy = serve({"total": 0, "items": [], "next": None})
    api = serve({"total": 0, "items": [], "next": None})
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("ALL_PROXY", proxy.url)
    for host in ("127.0.0.1", "localhost", "127.0.0.2"):
        client = ApiClient(f"http://{host}:{api.port}", timeout=5, token="t0k")
        try:
            if host == "127.0.0.2":
                with pytest.raises(ApiUnreachable):  # nothing listens there: not the proxy
                    client.get("/meshes")
            else:
                assert client.get("/meshes")["total"] == 0
        finally:
            client.close()
    assert proxy.connections == 0 and api.connections == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HTTPS_PROXY", "https://ops:s3cret@proxy.example:3128"),  # not an http:// proxy
        ("HTTPS_PROXY", "http://ops:s3cret@proxy.example:port"),  # not a valid URL
        ("HTTP_PROXY", "socks5://ops:s3cret@proxy.example:1080"),
    ],
)
def test_a_proxy_error_never_shows_its_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    scheme = "https" if variable == "HTTPS_PROXY" else "http"
    code, out = _kdsctl(f"{scheme}://global.example:5681", "get", "meshes")
    assert code == 1 and "proxy" in out, out
    assert "s3cret" not in out and "--api-url" not in out


def test_a_server_that_ignores_offset_cannot_keep_get_reading_forever(
    serve: Callable[..., OneServer],
) -> None:
    """kdsctl get follows the pages up to the first answer's total, whatever "next" says."""
    page = {"total": 3, "items": [{"type": "Mesh", "name": "m"}], "next": "http://x/?offset=1"}
    server = serve(page)
    code, out = _kdsctl(server.url, "get", "meshes", "-o", "json")
    assert code == 0, out
    assert len(json.loads(out)["items"]) == 3 and server.connections == 3


def test_a_server_whose_total_is_made_up_cannot_make_get_read_without_end(
    serve: Callable[..., OneServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A total of 10**12 and a full page every time: kdsctl stops at MAX_LISTED resources
    (it read on past 5 GB before) and says how to page by hand."""
    monkeypatch.setattr(kdsctl.resources, "MAX_LISTED", 5_000)
    items = [{"type": "Mesh", "name": f"m{i}"} for i in range(1000)]
    server = serve({"total": 10**12, "items": items, "next": "http://x/?offset=1"})
    code, out = _kdsctl(server.url, "get", "meshes", "-o", "json")
    assert code == 1 and server.connections == 5
    assert "lists more than 5,000 of them: page with --size and --offset" in out


OSC = "\x1b]0;owned\x07"  # sets a terminal's title; click strips colours, not this


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "zone-token", "--zone", "z"],
        ["revoke", "zone-token", "id-1"],
        ["rotate", "zone-token-signing-key"],
        ["delete", "zone-token-signing-key", "k1"],
    ],
)
def test_token_commands_print_what_the_server_sent_escaped(
    serve: Callable[..., OneServer], args: list[str]
) -> None:
    fields = ("id", "zone", "expiresAt", "revokedAt", "streamsEnded", "name")
    answer = {k: f"v{OSC}" for k in fields} | {"token": "a.b.c"}
    server = serve(answer)
    result = CliRunner().invoke(cli, ["--api-url", server.url, *args])
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 0, out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;owned\\x07" in out or args[0] == "delete"


@pytest.mark.parametrize("token", [f"a.b.c{OSC}", "", "not a jwt", 12])
def test_generate_prints_only_a_token_shaped_like_one(
    serve: Callable[..., OneServer], token: object
) -> None:
    server = serve({"id": "t1", "zone": "z", "expiresAt": "x", "token": token})
    code, out = _kdsctl(server.url, "generate", "zone-token", "--zone", "z")
    assert code == 1 and "\x1b" not in out
    assert "holds no zone token (a JWT)" in out


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [
        ("", True),
        ("10.0.0.0/8", False),
        ("192.168.0.0/16, 10.1.2.0/24", False),
        ("10.1.2.4/32", True),
        ("not-a-range/8,10.1.2.3", False),
    ],
)
def test_no_proxy_takes_address_ranges_as_kumactl_does(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, proxied: bool
) -> None:
    from kdsctl.client import _proxy, _target

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    found = _proxy(_target("http://10.1.2.3:5681"))
    assert (found is not None) is proxied
    if found:
        assert (found[0].host, found[0].port) == ("proxy.example", 3128)


@pytest.mark.parametrize(
    ("body", "args"),
    [
        ("[" * 100_000 + "]" * 100_000, ["get", "meshes"]),
        (
            '{"items": [{"name": "z", "lagRevisions": 1e400, "globalRevision": 1e400}]}',
            ["inspect", "zones"],
        ),
        ('{"total": NaN, "items": []}', ["get", "meshes"]),
    ],
)
@pytest.mark.parametrize("status", ["200 OK", "400 Bad Request"])
def test_an_answer_that_parses_but_cannot_be_used_is_an_error_not_a_traceback(
    body: str, args: list[str], status: str
) -> None:
    server = OneServer(None, status)
    server.answer = (
        server.answer.split(b"\r\n\r\n")[0].replace(
            b"Content-Length: 4", f"Content-Length: {len(body)}".encode()
        )
        + b"\r\n\r\n"
        + body.encode()
    )
    try:
        result = CliRunner().invoke(cli, ["--api-url", server.url, *args])
    finally:
        server.sock.close()
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and result.output.startswith("Error: ")


def test_apply_prints_each_result_escaped(serve: Callable[..., OneServer], tmp_path: Path) -> None:
    """The result word of each applied resource is the server's: it was printed as sent."""
    item = {"type": "Secret", "mesh": "default", "name": "s", "result": f"created{ESC}"}
    server = serve({"items": [item]})
    doc = tmp_path / "s.yaml"
    doc.write_text("type: Secret\nmesh: default\nname: s\ndata: dGVzdA==\n")
    code, out = _kdsctl(server.url, "apply", "-f", str(doc))
    assert code == 0, out
    assert "\x1b" not in out and "\x07" not in out
    assert 'name="s" Created\\x1b]0;owned\\x07' in out, out


@pytest.mark.parametrize(
    "args", [["delete", "secret", "s", "--mesh", "default"], ["get", "meshes"]]
)
def test_a_redirect_is_neither_followed_nor_taken_as_the_answer(
    serve: Callable[..., OneServer], args: list[str]
) -> None:
    """Before, a 301 with a JSON body was the answer: 'deleted Secret "s"', exit 0."""
    moved = f"301 Moved Permanently\r\nLocation: https://elsewhere.example/{ESC}"
    server = serve({"total": 0, "items": [], "next": None}, status=moved)
    code, out = _kdsctl(server.url, *args)
    assert code == 1, out
    assert "HTTP 301 Moved Permanently" in out and "deleted" not in out
    assert "redirects to https://elsewhere.example/\\x1b]0;owned\\x07" in out
    assert "\x1b" not in out and server.connections == 1
