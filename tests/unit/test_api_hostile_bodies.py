"""Bodies built to make the API work or answer without bound: many unknown keys, bad labels
or bad list items in one resource, a body that does not decode as its Content-Encoding says,
and a client that closes its connection part-way through its body."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from kds.api import ApiContext, build_app, serve_api
from kds.api._apply import MAX_PROBLEMS, NDJSON
from kds.fields import MAX_LISTED, UNKNOWN_FIELD, unknown_fields
from kds.model import Key, Kind
from kds.mtls import synced_mtls_problems
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore
from kds.validation import validate_labels

# The most bytes an answer refusing a hostile body may take: its causes are capped.
ANSWER_BYTES = 64 * 1024


class Api:
    def __init__(self, client: TestClient, engine: GlobalEngine):
        self.client = client
        self.engine = engine

    async def send(
        self, method: str, path: str, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any], int]:
        resp = await self.client.request(
            method, path, data=body, headers={"Content-Type": content_type}
        )
        text = await resp.text()
        return resp.status, json.loads(text), len(text)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    engine = GlobalEngine(tmp_path / "global.db")
    store = SqliteGlobalStore(engine)
    ctx = ApiContext(store=store, role="global")
    client = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    yield Api(client, engine)
    await client.close()
    store.close()


def _mesh(**fields: Any) -> bytes:
    return json.dumps({"type": "Mesh", "name": "m1", **fields}).encode()


# --------------------------------------------------------------------------- many problems


def test_unknown_fields_are_named_up_to_a_bound_and_counted() -> None:
    """156,000 unknown keys took 3.9 s of close-match guessing and a 74 MB answer: now the
    first MAX_LISTED are named (in order) and the rest counted in one more violation, which
    still reads as an unknown field (a zone ignores those in a synced Mesh)."""
    keys = [f"k{i:06d}" for i in range(156_000)]
    start = time.perf_counter()
    errs = unknown_fields("mtls.", reversed(keys), {"backends", "enabledBackend"})
    assert time.perf_counter() - start < 1.0
    assert [e.field for e in errs[:MAX_LISTED]] == [f"mtls.{k}" for k in keys[:MAX_LISTED]]
    assert errs[-1].field == "mtls" and len(errs) == MAX_LISTED + 1
    assert (
        errs[-1].message == f"{UNKNOWN_FIELD}s: {156_000 - MAX_LISTED} more besides the 20 listed"
    )
    spec = {"mtls": {"backends": [], **dict.fromkeys(keys[:50], 1)}}
    assert synced_mtls_problems("m1", spec) == []


def test_a_long_unknown_key_gets_no_guess() -> None:
    assert unknown_fields("", ["conff"], {"conf"})[0].message.endswith("did you mean conf?")
    long_key = "conf" + "f" * 10_000
    assert "did you mean" not in unknown_fields("", [long_key], {"conf"})[0].message


def test_labels_are_checked_up_to_a_bound() -> None:
    errs = validate_labels({f"-bad{i}": "x" for i in range(50_000)})
    assert len(errs) == MAX_LISTED + 1
    assert errs[-1].field == "labels"
    assert "labels after the first 20 with problems were not checked" in errs[-1].message


@pytest.mark.parametrize(
    "fields",
    [
        {f"k{i:06d}": 1 for i in range(100_000)},
        {"labels": {f"-bad{i}": "x" for i in range(50_000)}},
        {"skipCreatingInitialPolicies": [1] * 100_000},
        {"tracing": {"backends": [{"x": 1}] * 50_000}},
        {"mtls": {"backends": [{}] * 50_000}},
        # Bounded one by one, these still add up past what one answer lists.
        {f"k{i}": 1 for i in range(50)}
        | {"labels": {f"-bad{i}": "x" for i in range(50)}}
        | {"tracing": {"backends": [{f"x{i}": 1 for i in range(50)}] * 50}},
    ],
    ids=["unknown-keys", "labels", "list-items", "list-of-maps", "mtls-backends", "mixed"],
)
async def test_a_put_or_apply_of_many_problems_answers_briefly(
    api: Api, fields: dict[str, Any]
) -> None:
    """PUT and /_apply (one item on one line) refuse such a body quickly, with an answer of
    at most MAX_PROBLEMS causes."""
    body = _mesh(**fields)
    start = time.perf_counter()
    status, answer, size = await api.send("PUT", "/meshes/m1", body)
    assert status == 400, answer
    assert len(answer["causes"]) <= MAX_PROBLEMS and size < ANSWER_BYTES
    status, answer, size = await api.send("POST", "/_apply", body + b"\n", NDJSON)
    assert status == 400, answer
    assert len(answer["causes"]) <= MAX_PROBLEMS and size < ANSWER_BYTES
    assert time.perf_counter() - start < 5.0
    assert api.engine.get(Key(Kind.MESH, "", "m1")) is None


async def test_a_put_lists_at_most_max_problems(api: Api) -> None:
    many = {"labels": {f"-bad{i}": "x" for i in range(50)}}
    many |= {"tracing": {"backends": [{f"x{i}": 1 for i in range(50)}] * 50}}
    status, answer, _ = await api.send("PUT", "/meshes/m1", _mesh(**many))
    assert status == 400 and len(answer["causes"]) == MAX_PROBLEMS
    assert answer["detail"].startswith("Mesh m1 is invalid: ")
    assert answer["detail"].endswith(f"problems; the first {MAX_PROBLEMS} are listed")


# --------------------------------------------------------------------------- bodies that cannot be read

READERS = [
    ("PUT", "/meshes/m1", "application/json"),
    ("POST", "/_apply", "application/json"),
    ("POST", "/_apply", NDJSON),
]


@pytest.mark.parametrize(("method", "path", "content_type"), READERS)
async def test_a_body_not_in_its_content_encoding_is_a_400(
    api: Api, method: str, path: str, content_type: str
) -> None:
    """Content-Encoding: gzip on a body that is not gzip was a 500 logged as a failure of
    the control plane."""
    body = _mesh() if path != "/_apply" else b'{"items": []}'
    with capture_logs() as logs:
        resp = await api.client.request(
            method,
            path,
            data=body,
            headers={"Content-Type": content_type, "Content-Encoding": "gzip"},
        )
        answer = await resp.json()
    assert resp.status == 400, answer
    assert "could not be decoded as its Content-Encoding (gzip) says" in answer["detail"]
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs


@pytest.fixture
async def real_port(tmp_path: Path) -> AsyncIterator[int]:
    """The API as a daemon serves it (serve_api): unlike aiohttp's test server, it lets a
    handler run on when its client goes away."""
    engine = GlobalEngine(tmp_path / "real.db")
    store = SqliteGlobalStore(engine)
    runner = await serve_api(ApiContext(store=store, role="global"), ("127.0.0.1", 0))
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
        store.close()


async def _cut_off(port: int, method: str, path: str, content_type: str) -> None:
    """Send a request whose body stops at 6 of its 100 bytes, then close the connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        "Content-Length: 100\r\n\r\n".encode()
        + b'{"type'
    )
    await writer.drain()
    await asyncio.sleep(0.1)  # the handler is reading the body
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.1)  # the handler has seen the connection's end


@pytest.mark.parametrize(("method", "path", "content_type"), READERS)
async def test_a_client_gone_mid_body_is_not_an_error_of_the_control_plane(
    real_port: int, method: str, path: str, content_type: str
) -> None:
    """No answer can reach it: not logged as an unhandled error with a stack, a debug line
    only; the API serves the next request."""
    with capture_logs() as logs:
        await _cut_off(real_port, method, path, content_type)
    assert [e["event"] for e in logs] == ["request body cut off: the client closed its connection"]
    assert logs[0]["log_level"] == "debug" and "stack" not in logs[0]
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{real_port}/meshes/m1"
        async with session.put(url, data=_mesh()) as resp:
            assert resp.status == 201, await resp.text()
