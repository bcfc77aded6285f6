"""Hostile input: names with a trailing newline, YAML alias bombs, bodies and parameters
that used to crash a handler (500) or be read whole, wherever user input enters."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from globalcp.token_api import token_routes
from globalcp.tokens import ZoneTokens
from kds.api import ApiContext, build_app, client_max_size
from kds.api._body import MAX_DEPTH, _decode
from kds.api._errors import HttpError
from kds.config import ZoneConfig, load_config, parse_duration
from kds.errors import ConfigError, InvalidResource
from kds.model import Limits, from_document
from kds.mtls import parse_ca_expiration, validate_mtls
from kds.store import open_global_store
from kds.validation import read_mesh_spec, validate_labels, validate_name
from kdsctl.cli import cli

SECRET = b"hostile-input-secret-value"
DATA = base64.b64encode(SECRET).decode()
LIMITS = Limits(max_data_bytes=1024)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    store = open_global_store(tmp_path / "global.db")
    tokens = ZoneTokens(store, issuer="test")
    await tokens.load()
    ctx = ApiContext(store=store, role="global", limits=LIMITS)
    app = build_app(ctx, token_routes(tokens, lambda *a, **k: 0))
    c = TestClient(TestServer(app))
    await c.start_server()
    yield c
    await c.close()
    store.close()


async def _answer(resp: Any) -> tuple[int, dict[str, Any]]:
    return resp.status, json.loads(await resp.text())


def _fields(body: dict[str, Any]) -> list[str]:
    return [c["field"] for c in body["causes"]]


# --------------------------------------------------------------------------- newline names


@pytest.mark.parametrize("name", ["zone-a\n", "a.b\n", "x\n"])
def test_validate_name_refuses_a_trailing_newline(name: str) -> None:
    assert validate_name(name)
    assert not validate_name(name.rstrip("\n"))


def test_label_keys_and_values_refuse_a_trailing_newline() -> None:
    assert validate_labels({"team\n": "a"})
    assert validate_labels({"example.com\n/team": "a"})
    assert validate_labels({"team": "a\n"})
    assert not validate_labels({"example.com/team": "a"})


async def test_api_refuses_names_with_a_trailing_newline(client: TestClient) -> None:
    status, body = await _answer(
        await client.put("/global-secrets/nl-test%0A", json={"type": "GlobalSecret", "data": DATA})
    )
    assert status == 400 and "name" in _fields(body), body
    status, body = await _answer(await client.put("/meshes/default%0A", json={"type": "Mesh"}))
    assert status == 400 and "name" in _fields(body), body
    status, body = await _answer(
        await client.post(
            "/_apply", json={"items": [{"type": "GlobalSecret", "name": "gs\n", "data": DATA}]}
        )
    )
    assert status == 400 and "items[0].name" in _fields(body), body
    status, body = await _answer(
        await client.put(
            "/global-secrets/labelled",
            json={"type": "GlobalSecret", "data": DATA, "labels": {"team": "a\n"}},
        )
    )
    assert status == 400 and "labels[team]" in _fields(body), body
    status, body = await _answer(await client.get("/global-secrets"))
    assert body["total"] == 0


def test_mesh_names_in_mtls_refuse_a_trailing_newline() -> None:
    backend = {"name": "ca-1\n", "type": "builtin"}
    errs = validate_mtls({"enabledBackend": "ca-1\n", "backends": [backend]}, "default", "")
    assert any(e.field == "mtls.backends[0].name" for e in errs), errs
    assert parse_ca_expiration("10y\n") is None
    assert parse_ca_expiration("10y") == 10 * 365 * 86400
    with pytest.raises(InvalidResource) as e:
        from_document({"type": "Mesh", "name": "default\n"}, LIMITS)
    assert [c.field for c in e.value.errors] == ["name"]


async def test_zone_token_refuses_a_zone_with_a_trailing_newline(client: TestClient) -> None:
    status, body = await _answer(await client.post("/zone-tokens", json={"zone": "zone-a\n"}))
    assert status == 400 and _fields(body) == ["zone"], body
    status, body = await _answer(await client.post("/zone-tokens", json={"zone": "zone-a"}))
    assert status == 201, body


def test_config_zone_refuses_a_trailing_newline(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--zone"):
        load_config(ZoneConfig, None, {"zone": "zone-a\n"}, {"zone": "environment"})
    f = tmp_path / "zonecp.yaml"
    f.write_text('zone: "zone-a\\n"\n')
    with pytest.raises(ConfigError, match="--zone"):
        load_config(ZoneConfig, f, {}, {})
    assert load_config(ZoneConfig, None, {"zone": "zone-a"}, {}).zone == "zone-a"


# --------------------------------------------------------------------------- YAML aliases

# 382 bytes that stand for 9**9 strings once the aliases are expanded.
BOMB = (
    "a: &a [x,x,x,x,x,x,x,x,x]\n"
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "type: *i\n"
)


def test_apply_refuses_a_yaml_alias_bomb_at_once(tmp_path: Path) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text("type: Mesh\nname: first\n---\n" + BOMB)
    start = time.monotonic()
    res = CliRunner().invoke(cli, ["--api-url", "http://127.0.0.1:9", "apply", "-f", str(f)])
    assert time.monotonic() - start < 1.0
    assert res.exit_code == 1
    assert f"{f} document 2: YAML anchors and aliases are not accepted" in res.stderr
    assert len(res.output) < 500


def test_apply_refuses_merge_keys_and_simple_aliases() -> None:
    merge = "base: &base {type: Mesh}\n<<: *base\nname: m\n"
    alias = f"type: GlobalSecret\nname: &n gs\ndata: {DATA}\nlabels: {{x: *n}}\n"
    for text in (merge, alias):
        res = CliRunner().invoke(
            cli, ["--api-url", "http://127.0.0.1:9", "apply", "-f", "-"], input=text
        )
        assert res.exit_code == 1, res.output
        assert "stdin document 1: YAML anchors and aliases are not accepted" in res.stderr


def test_config_file_refuses_yaml_aliases(tmp_path: Path) -> None:
    f = tmp_path / "zonecp.yaml"
    f.write_text("zone: &z zone-a\nlog-level: *z\n")
    with pytest.raises(ConfigError, match="anchors and aliases are not accepted"):
        load_config(ZoneConfig, f, {}, {})


def test_apply_refuses_a_repeated_key_naming_it_and_where(tmp_path: Path) -> None:
    f = tmp_path / "dup.yaml"
    other = base64.b64encode(b"the other value").decode()
    f.write_text(f"type: GlobalSecret\nname: gs\ndata: {DATA}\ndata: {other}\n")
    res = CliRunner().invoke(cli, ["--api-url", "http://127.0.0.1:9", "apply", "-f", str(f)])
    assert res.exit_code == 1, res.output
    assert f'{f}: invalid YAML at line 4, column 1: found duplicate key "data"' in res.stderr
    assert DATA not in res.output and other not in res.output


def test_config_file_refuses_an_option_given_twice(tmp_path: Path) -> None:
    f = tmp_path / "zonecp.yaml"
    f.write_text("zone: zone-a\nzone: zone-b\n")
    with pytest.raises(
        ConfigError, match='not valid YAML at line 2, column 1: found duplicate key "zone"'
    ):
        load_config(ZoneConfig, f, {}, {})
    f.write_text("zone: zone-a\nlog-level: info\nlog_level: debug\n")
    with pytest.raises(ConfigError, match="option 'log_level' is also given as 'log-level'"):
        load_config(ZoneConfig, f, {}, {})


def test_errors_never_print_a_nested_value() -> None:
    nested: Any = ["x"] * 9
    for _ in range(6):
        nested = [nested] * 9  # shared, like an expanded alias: 9**7 strings to print
    for doc in (
        {"type": nested},
        {"apiVersion": "v1", "kind": nested, "metadata": {"name": "x"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {}, "type": nested},
    ):
        start = time.monotonic()
        with pytest.raises(InvalidResource) as e:
            from_document(doc, LIMITS)
        assert time.monotonic() - start < 0.5
        assert all(len(c.message) < 200 for c in e.value.errors), e.value.errors


# --------------------------------------------------------------------------- bodies, params


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [100, 1000, 20_000])
async def test_deeply_nested_json_is_a_400(client: TestClient, depth: int) -> None:
    body = f'{{"type": "GlobalSecret", "data": "{DATA}", "labels": {_nested(depth)}}}'
    headers = {"Content-Type": "application/json"}
    for method, path, text in (
        ("PUT", "/global-secrets/deep", body),
        ("POST", "/_apply", f'{{"items": [{body}]}}'),
        ("POST", "/zone-tokens", f'{{"zone": "zone-a", "x": {_nested(depth)}}}'),
    ):
        status, answer = await _answer(
            await client.request(method, path, data=text, headers=headers)
        )
        assert status == 400, (method, path, answer)
        assert _fields(answer) == ["body"], answer
        assert DATA not in json.dumps(answer)


async def test_an_integer_of_too_many_digits_is_a_400(client: TestClient) -> None:
    digits = "7" * 5000
    headers = {"Content-Type": "application/json"}
    for method, path, text in (
        ("PUT", "/global-secrets/big", f'{{"type": "GlobalSecret", "data": {digits}}}'),
        ("POST", "/_apply", f'{{"items": [{{"type": "Mesh", "name": {digits}}}]}}'),
        ("POST", "/zone-tokens", f'{{"zone": "zone-a", "validFor": {digits}}}'),
    ):
        status, answer = await _answer(
            await client.request(method, path, data=text, headers=headers)
        )
        assert status == 400, (method, path, answer)
        assert _fields(answer) == ["body"], answer
        assert "7777" not in json.dumps(answer)


async def test_a_repeated_key_in_a_json_body_is_a_400_naming_it(client: TestClient) -> None:
    other = base64.b64encode(b"the other value").decode()
    twice = f'"data": "{DATA}", "data": "{other}"'
    headers = {"Content-Type": "application/json"}
    for method, path, text, field in (
        ("PUT", "/global-secrets/gs", f'{{"type": "GlobalSecret", {twice}}}', "body"),
        (
            "POST",
            "/_apply",
            f'{{"items": [{{"type": "Mesh", "name": "m"}}, {{"type": "GlobalSecret", '
            f'"name": "gs", "data": "{DATA}", "labels": {{"a": "1", "a": "2"}}}}]}}',
            "items[1].labels",
        ),
        ("POST", "/zone-tokens", '{"zone": "zone-a", "zone": "zone-b"}', "body"),
    ):
        status, answer = await _answer(
            await client.request(method, path, data=text, headers=headers)
        )
        assert status == 400, (method, path, answer)
        assert _fields(answer) == [field], answer
        assert "repeats the key" in answer["detail"], answer
        assert DATA not in json.dumps(answer) and other not in json.dumps(answer)
    status, answer = await _answer(await client.get("/global-secrets/gs"))
    assert status == 404, answer  # nothing was written
    lines = f'{{"type": "Mesh", "name": "m"}}\n{{"type": "GlobalSecret", {twice}}}\n'
    status, answer = await _answer(
        await client.post("/_apply", data=lines, headers={"Content-Type": "application/x-ndjson"})
    )
    assert status == 400, answer
    assert 'repeats the key "data" in one object (line 2)' in answer["detail"], answer
    assert DATA not in json.dumps(answer) and other not in json.dumps(answer)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("size=18446744073709551616", "size"),
        ("offset=18446744073709551616", "offset"),
        ("offset=9223372036854775808", "offset"),
        ("size=" + "9" * 5000, "size"),
        ("size=0", "size"),
        ("offset=-1", "offset"),
        ("size=%D9%A5", "size"),  # an Arabic-Indic digit, which int() would take
    ],
)
async def test_paging_parameters_are_bounded(client: TestClient, query: str, param: str) -> None:
    for path in ("/meshes", "/global-secrets"):
        status, body = await _answer(await client.get(f"{path}?{query}"))
        assert status == 400, body
        assert _fields(body) == [param], body
    status, body = await _answer(await client.get("/meshes?offset=1000000000000&size=1"))
    assert status == 200 and body["items"] == [], body


@pytest.mark.parametrize(
    "valid_for", [1e308, "99999999999999d", "NaN", 1e300, -1, 0, 0.0000001, "500ms"]
)
async def test_zone_token_validity_is_bounded(client: TestClient, valid_for: object) -> None:
    text = '{"zone": "zone-a", "validFor": %s}' % (
        "NaN" if valid_for == "NaN" else json.dumps(valid_for)
    )
    status, body = await _answer(
        await client.post("/zone-tokens", data=text, headers={"Content-Type": "application/json"})
    )
    assert status == 400, body
    # NaN is not JSON: refused with the body, before any field is read.
    assert _fields(body) == (["body"] if valid_for == "NaN" else ["validFor"]), body


def test_durations_are_finite_and_bounded() -> None:
    for bad in (float("nan"), float("inf"), 1e308, "1e308", "5s\nx", "\u0661\u0660s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration("36500d") == 36500 * 86400
    assert parse_duration(" 5s\n") == 5.0


async def test_a_chunked_body_over_the_limit_is_refused_while_it_is_sent(
    client: TestClient,
) -> None:
    limit = client_max_size(LIMITS)
    total = 20 * 1024 * 1024
    chunk = b"x" * 65536
    answered = asyncio.Event()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < total:
            if sent > 4 * limit:
                # Hold the rest back until the server has answered: a server that reads
                # the whole body before answering never does.
                await asyncio.wait_for(answered.wait(), 10)
            yield chunk
            sent += len(chunk)

    resp = await asyncio.wait_for(
        client.put("/global-secrets/chunked", data=body(), chunked=True), 5
    )
    sent_before_answer = sent
    status, answer = await _answer(resp)
    resp.close()
    answered.set()
    assert status == 413, answer
    assert sent_before_answer < total


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        ("[" * MAX_DEPTH + "]" * MAX_DEPTH, False),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), True),
        ('{"a": ' * MAX_DEPTH + "1" + "}" * MAX_DEPTH, False),
        ('{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), True),
        # Brackets inside strings are counted by the quick look, not nested: walked, and fine.
        (json.dumps({"name": "{[" * 500, "labels": {"k": "[" * 500}}), False),
        (
            '{"x": "'
            + "[" * 500
            + '", "y": '
            + "[" * (MAX_DEPTH + 1)
            + "]" * (MAX_DEPTH + 1)
            + "}",
            True,
        ),
    ],
)
def test_the_depth_bound_holds_at_its_edge(text: str, too_deep: bool) -> None:
    """A body may nest lists and objects MAX_DEPTH levels, not one more, whatever brackets its
    strings hold (the bound looks at the text's brackets before walking the value)."""
    if too_deep:
        with pytest.raises(HttpError) as e:
            _decode(text.encode())
        assert e.value.status == 400 and f"deeper than {MAX_DEPTH} levels" in e.value.detail
    else:
        assert _decode(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"sampling": NaN}', "holds NaN, which is not JSON"),
        ('{"sampling": -Infinity}', "holds -Infinity, which is not JSON"),
        ('{"sampling": 1e400}', "holds a number too large for a 64-bit float"),
        ('{"conf": {"port": 1' + "0" * 400 + "}}", "holds a number too large for a 64-bit float"),
        ('{"port": -1' + "0" * 309 + "}", "holds a number too large for a 64-bit float"),
        ('{"name": "\\ud800"}', "holds a lone UTF-16 surrogate escape"),
        ('{"name": "a\\uDFFFb"}', "holds a lone UTF-16 surrogate escape"),
    ],
)
def test_what_python_parses_and_json_is_not_is_refused(text: str, problem: str) -> None:
    """Python's parser takes NaN, Infinity, 1e400 (as infinity) and lone surrogate escapes;
    stored in a Mesh, each made every later answer holding it invalid JSON."""
    with pytest.raises(HttpError) as e:
        _decode(text.encode())
    assert e.value.status == 400 and problem in e.value.detail


def test_a_surrogate_pair_and_large_finite_numbers_are_json() -> None:
    text = '{"name": "\\ud83d\\ude00", "n": 1e308, "i": 1' + "0" * 307 + ', "port": 9090}'
    assert _decode(text.encode()) == json.loads(text)


@pytest.mark.parametrize("value", [math.nan, math.inf, "\ud800", {"a": [1, -math.inf]}])
def test_a_mesh_field_holding_what_json_cannot_is_named(value: object) -> None:
    """The same rule for a Mesh read from any form (YAML through kdsctl, Kubernetes)."""
    _, errs = read_mesh_spec({"tracing": {"backends": [{"name": "a", "conf": value}]}}, "m")
    assert [e.field for e in errs] == ["tracing"]
    assert "no NaN or infinite numbers" in errs[0].message
