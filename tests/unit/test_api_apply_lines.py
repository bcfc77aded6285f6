"""POST /_apply with a body of JSON Lines: each item checked as its line arrives, the same
rules and answer as {"items": [...]}, and nothing applied from a body that ends early."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from kds.api import ApiContext, build_app
from kds.api._apply import MAX_PROBLEMS, NDJSON
from kds.model import Key, Kind
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore

SECRET_B64 = base64.b64encode(b"s3cr3t-value-do-not-leak").decode()


class Api:
    def __init__(self, client: TestClient, engine: GlobalEngine):
        self.client = client
        self.engine = engine

    async def apply_lines(self, body: bytes, **headers: str) -> tuple[int, Any]:
        resp = await self.client.post(
            "/_apply", data=body, headers={"Content-Type": NDJSON, **headers}
        )
        return resp.status, await resp.json()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    engine = GlobalEngine(tmp_path / "global.db")
    store = SqliteGlobalStore(engine)
    ctx = ApiContext(store=store, role="global", max_apply_bytes=64 * 1024)
    client = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    yield Api(client, engine)
    await client.close()
    store.close()


def _line(item: dict[str, Any]) -> bytes:
    return json.dumps(item).encode() + b"\n"


def _sec(name: str, mesh: str = "payments", data: str = SECRET_B64) -> dict[str, Any]:
    return {"type": "Secret", "mesh": mesh, "name": name, "data": data}


async def test_lines_apply_in_one_transaction_meshes_first(api: Api) -> None:
    """Each non-blank line is an item; a Secret before its Mesh applies; the answer is the
    one a JSON body gets."""
    head = api.engine.head()
    body = _line(_sec("a")) + b"\n  \n" + _line(_sec("b")) + b'{"type": "Mesh", "name": "payments"}'
    status, answer = await api.apply_lines(body)
    assert status == 200, answer
    assert [(i["type"], i["name"], i["result"]) for i in answer["items"]] == [
        ("Mesh", "payments", "created"),
        ("Secret", "a", "created"),
        ("Secret", "b", "created"),
    ]
    assert api.engine.head() == head + 3


async def test_problems_name_the_item_and_nothing_is_applied(api: Api) -> None:
    """items[i] counts non-blank lines; every invalid item is named; nothing is written."""
    body = (
        _line({"type": "Mesh", "name": "payments"})
        + b"\n"
        + _line(_sec("ok"))
        + _line(_sec("Bad_Name", data="%%"))
        + _line(_sec("ok"))
    )
    status, answer = await api.apply_lines(body)
    assert status == 400 and answer["detail"] == "nothing was applied"
    fields = [c["field"] for c in answer["causes"]]
    assert {"items[2].name", "items[2].data", "items[3]"} <= set(fields)
    assert api.engine.get(Key(Kind.MESH, "", "payments")) is None
    assert SECRET_B64 not in json.dumps(answer)


@pytest.mark.parametrize("form", ["lines", "json"])
async def test_an_apply_answers_at_most_max_problems(api: Api, form: str) -> None:
    """Every empty item is a problem; the answer stops at MAX_PROBLEMS instead of growing with
    the body (3 MiB of empty lines made a 238 MB answer and took global past 1 GB)."""
    n = 5_000
    if form == "lines":
        status, answer = await api.apply_lines(b"{}\n" * n)
    else:
        resp = await api.client.post("/_apply", json={"items": [{}] * n})
        status, answer = resp.status, await resp.json()
    assert status == 400
    assert len(answer["causes"]) == MAX_PROBLEMS
    assert answer["detail"].startswith(f"nothing was applied: {MAX_PROBLEMS} problems or more")
    assert "were not read" in answer["detail"]


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        (
            b'{"type": "Secret", bad}',
            "not valid JSON: Expecting property name enclosed in double quotes (line 2, column 20)",
        ),
        (b'{"type": "\xff"}', "must be UTF-8 JSON (line 2)"),
        (b"[" * 70 + b"]" * 70, "nests lists and objects deeper than 64 levels (line 2)"),
        (b"1" * 5000, "holds a number of too many digits (line 2)"),
    ],
)
async def test_a_line_that_is_not_json_is_refused_naming_it(
    api: Api, line: bytes, detail: str
) -> None:
    status, answer = await api.apply_lines(_line({"type": "Mesh", "name": "m"}) + line + b"\n")
    assert status == 400 and detail in answer["detail"], answer
    assert api.engine.get(Key(Kind.MESH, "", "m")) is None


async def test_a_body_over_the_limit_is_refused(api: Api) -> None:
    lines = b"".join(_line(_sec(f"s{i}")) for i in range(1000))  # ~90 KiB, limit 64 KiB
    status, answer = await api.apply_lines(lines)
    assert status == 413, answer
    assert api.engine.head() == 0
    # The body as a whole is too large, not one secret's data.
    assert "65536 bytes, the most one apply takes" in answer["detail"]
    assert not answer.get("causes")


async def test_a_body_that_ends_early_applies_nothing(api: Api) -> None:
    """A client that stops sending part-way (kdsctl found an invalid document, or was
    stopped) leaves a chunked body unfinished: nothing is written, nothing logged as a
    failure of the control plane."""
    server = api.client.server
    assert isinstance(server, TestServer) and server.port is not None
    first = _line({"type": "Mesh", "name": "payments"}) + _line(_sec("a"))
    with capture_logs() as logs:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /_apply HTTP/1.1\r\nHost: x\r\nContent-Type: " + NDJSON.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(first) + first + b"\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.1)  # the server has taken the first lines
        writer.close()
        await writer.wait_closed()
        # The same connection's end reaches the handler; then a full apply still works.
        status, answer = await api.apply_lines(_line({"type": "Mesh", "name": "other"}))
    assert status == 200, answer
    assert api.engine.get(Key(Kind.MESH, "", "payments")) is None
    assert api.engine.get(Key(Kind.SECRET, "payments", "a")) is None
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs
