"""kdsctl against a real API server (kds.api on a SQLite store) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner, Result
from structlog.testing import capture_logs

from kds.api import ApiContext, build_app
from kds.api.auth import ApiTokens
from kds.model import Limits
from kds.store import GlobalStore, open_global_store
from kdsctl import apply as kdsctl_apply
from kdsctl.cli import cli

# The Secrets user documentation's examples, as written there (the namespace template filled in).
UNIVERSAL = """\
type: Secret
mesh: default
name: sample-secret
data: dGVzdAo=
---
type: GlobalSecret
name: sample-global-secret
data: dGVzdAo=
---
type: Mesh
name: default
"""

KUBERNETES = """\
apiVersion: v1
kind: Secret
metadata:
  name: sample-secret
  namespace: kuma-system
  labels:
    kuma.io/mesh: default
data:
  value: dGVzdAo=
type: system.kuma.io/secret
---
apiVersion: v1
kind: Secret
metadata:
  name: sample-secret-2
  namespace: kuma-system
data:
  value: dGVzdAo=
type: system.kuma.io/global-secret
---
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: other
"""

DATA = "dGVzdAo="


@dataclass
class Server:
    url: str
    store: GlobalStore
    logs: list[MutableMapping[str, Any]]


@contextlib.contextmanager
def serve_api(tmp_path: Path, **ctx_args: Any) -> Iterator[tuple[str, GlobalStore]]:
    """kds.api on a fresh SQLite store, on a loop in a thread, at an ephemeral 127.0.0.1 port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    store = open_global_store(tmp_path / "global.db")
    ctx = ApiContext(store=store, role="global", **ctx_args)
    runner = web.AppRunner(build_app(ctx), access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serve_api(tmp_path, limits=Limits(max_data_bytes=1024)) as (url, store):
        # The server logs into a list, not into the stdout CliRunner captures.
        with capture_logs() as logs:
            yield Server(url, store, logs)
        assert DATA not in repr(logs)


def run(server: Server | str, *args: str, input: str | None = None) -> Result:
    url = server if isinstance(server, str) else server.url
    return CliRunner().invoke(cli, ["--api-url", url, *args], input=input)


def test_apply_universal_and_kubernetes_examples(server: Server, tmp_path: Path) -> None:
    f = tmp_path / "universal.yaml"
    f.write_text(UNIVERSAL)
    res = run(server, "apply", "-f", str(f))
    assert res.exit_code == 0, res.output
    # meshes first, then the rest in file order
    assert res.stdout.splitlines() == [
        'resource type="Mesh" mesh="" name="default" Created',
        'resource type="Secret" mesh="default" name="sample-secret" Created',
        'resource type="GlobalSecret" mesh="" name="sample-global-secret" Created',
    ]
    res = run(server, "apply", "-f", "-", input=KUBERNETES)
    assert res.exit_code == 0, res.output
    assert (
        res.stdout.splitlines()
        == [
            'resource type="Mesh" mesh="" name="other" Created',
            'resource type="Secret" mesh="default" name="sample-secret" Unchanged',  # the same secret in the other form
            'resource type="GlobalSecret" mesh="" name="sample-secret-2" Created',
        ]
    )
    changed = UNIVERSAL.replace(
        "data: dGVzdAo=\n---\ntype: GlobalSecret", "data: Y2hhbmdlZA==\n---\ntype: GlobalSecret"
    )
    res = run(server, "apply", "-f", "-", input=changed)
    assert res.exit_code == 0, res.output
    assert 'resource type="Secret" mesh="default" name="sample-secret" Updated' in res.stdout
    assert 'resource type="Mesh" mesh="" name="default" Unchanged' in res.stdout


def _applied(server: Server) -> None:
    res = run(server, "apply", "-f", "-", input=UNIVERSAL)
    assert res.exit_code == 0, res.output


def test_get_tables_never_show_data(server: Server) -> None:
    _applied(server)
    res = run(server, "get", "secrets")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["MESH", "NAME", "ORIGIN", "AGE"]
    assert lines[1].split()[:3] == ["default", "sample-secret", "global"]
    for args in (
        ["get", "secrets", "--mesh", "default"],
        ["get", "secret", "sample-secret"],
        ["get", "global-secrets"],
        ["get", "global-secret", "sample-global-secret"],
        ["get", "meshes"],
        ["get", "mesh", "default"],
        ["get", "secrets", "-o", "table"],
    ):
        res = run(server, *args)
        assert res.exit_code == 0, (args, res.output)
        assert DATA not in res.output and "test" not in res.output, args
        assert len(res.stdout.splitlines()) == 2, args
    res = run(server, "get", "global-secrets")
    assert res.stdout.splitlines()[0].split() == ["NAME", "ORIGIN", "AGE"]
    assert res.stdout.splitlines()[1].split()[:2] == ["sample-global-secret", "global"]


def test_get_json_and_yaml(server: Server) -> None:
    _applied(server)
    res = run(server, "get", "secret", "sample-secret", "-o", "json")
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["data"] == DATA and body["mesh"] == "default"
    assert body["labels"] == {
        "kuma.io/origin": "global",
        "kuma.io/display-name": "sample-secret",
        "kuma.io/mesh": "default",
    }
    res = run(server, "get", "secrets", "-o", "yaml")
    listing = yaml.safe_load(res.stdout)
    assert listing["total"] == 1 and listing["items"][0]["name"] == "sample-secret"
    res = run(server, "get", "meshes", "-o", "json")
    assert [m["name"] for m in json.loads(res.stdout)["items"]] == ["default"]
    res = run(server, "get", "global-secret", "sample-global-secret", "-o", "yaml")
    assert yaml.safe_load(res.stdout)["data"] == DATA


def test_get_output_applies_as_it_is(server: Server) -> None:
    """`get -o yaml|json` output (lists included) goes back through `apply`: the system labels
    it shows are left out with a note, everything else is applied."""
    _applied(server)
    for kind in ("meshes", "secrets", "global-secrets"):
        for fmt in ("yaml", "json"):
            out = run(server, "get", kind, "-o", fmt).stdout
            res = run(server, "apply", "-f", "-", input=out)
            assert res.exit_code == 0, res.output
            assert "Unchanged" in res.stdout and "Created" not in res.stdout
            assert "left out the labels the control plane sets (kuma.io/display-name" in res.stderr
    one = yaml.safe_load(run(server, "get", "secret", "sample-secret", "-o", "yaml").stdout)
    one["data"] = "Y2hhbmdlZAo="
    one["labels"]["team"] = "a"
    res = run(server, "apply", "-f", "-", input=yaml.safe_dump(one))
    assert (
        res.exit_code == 0
        and 'resource type="Secret" mesh="default" name="sample-secret" Updated' in res.stdout
    )
    got = json.loads(run(server, "get", "secret", "sample-secret", "-o", "json").stdout)
    assert got["labels"] == {
        "team": "a",
        "kuma.io/origin": "global",
        "kuma.io/display-name": "sample-secret",
        "kuma.io/mesh": "default",
    }
    # Kubernetes form, as a List, with the system label under metadata.labels.
    k8s = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "system.kuma.io/global-secret",
                "metadata": {"name": "from-list", "labels": {"kuma.io/origin": "global"}},
                "data": {"value": DATA},
            }
        ],
    }
    res = run(server, "apply", "-f", "-", input=yaml.safe_dump(k8s))
    assert (
        res.exit_code == 0
        and 'resource type="GlobalSecret" mesh="" name="from-list" Created' in res.stdout
    ), res.output
    # An invalid item is named by its place in the list.
    k8s["items"][0]["metadata"]["name"] = "Bad_Name"
    res = run(server, "apply", "-f", "-", input=yaml.safe_dump(k8s))
    assert res.exit_code == 1 and "stdin document 1 items[0]" in res.output


def test_get_empty_and_missing(server: Server) -> None:
    res = run(server, "get", "global-secrets")
    # kumactl's table of an empty list is its header line alone
    assert res.exit_code == 0 and res.stdout.split() == ["NAME", "ORIGIN", "AGE"]
    assert "No GlobalSecret resources found" in res.stderr
    res = run(server, "get", "secret", "nope")
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: No resources found in default mesh")  # kumactl's
    assert "mesh: mesh 'default' does not exist" in res.stderr
    _applied(server)
    res = run(server, "get", "secret", "nope")
    assert res.exit_code == 1
    assert res.stderr.strip() == "Error: No resources found in default mesh"


def test_delete(server: Server) -> None:
    _applied(server)
    res = run(server, "delete", "mesh", "default")
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: Conflict: mesh 'default' still holds 1 secret(s)")
    res = run(server, "delete", "secret", "sample-secret", "--mesh", "default")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == 'deleted Secret "sample-secret"'
    res = run(server, "delete", "global-secret", "sample-global-secret")
    assert res.stdout.strip() == 'deleted GlobalSecret "sample-global-secret"'
    res = run(server, "delete", "mesh", "default")
    assert res.stdout.strip() == 'deleted Mesh "default"'
    res = run(server, "get", "meshes", "-o", "json")
    assert json.loads(res.stdout)["total"] == 0
    res = run(server, "delete", "global-secret", "sample-global-secret")
    assert res.exit_code == 1
    assert res.stderr.strip() == 'Error: there is no GlobalSecret with name "sample-global-secret"'


def test_apply_invalid_document_names_index_and_field(server: Server) -> None:
    doc = UNIVERSAL.replace("name: sample-global-secret\ndata: dGVzdAo=", "name: Bad\ndata: '%%%'")
    res = run(server, "apply", "-f", "-", input=doc)
    assert res.exit_code == 1
    assert "stdin document 2: invalid resource" in res.stderr
    assert "  data: must be valid base64" in res.stderr
    assert "  name: must be an RFC 1123 subdomain" in res.stderr
    assert "nothing was applied" in res.stderr
    assert "%%%" not in res.output
    res = run(server, "get", "meshes", "-o", "json")
    assert json.loads(res.stdout)["total"] == 0  # nothing was sent


def test_apply_server_refusal_names_the_field(server: Server) -> None:
    doc = "type: Secret\nmesh: nope\nname: s\ndata: dGVzdAo=\n"
    res = run(server, "apply", "-f", "-", input=doc)
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        "Error: Invalid resources: nothing was applied: stdin document 1 (Secret nope/s) "
        "is invalid",
        "  stdin document 1: mesh: mesh 'nope' does not exist",
    ]
    # over the server's data limit (1 KiB here): the client leaves the limit to the server
    big = "type: GlobalSecret\nname: big\ndata: " + "QUFB" * 400 + "\n"
    res = run(server, "apply", "-f", "-", input=big)
    assert res.exit_code == 1
    assert "  stdin document 1: data: decoded size 1200 bytes exceeds the limit of 1024 bytes" in (
        res.stderr
    )
    assert "QUFB" not in res.output


def test_apply_stops_at_first_failure(server: Server) -> None:
    doc = UNIVERSAL + "---\ntype: Secret\nmesh: nope\nname: s\ndata: dGVzdAo=\n"
    doc += "---\ntype: GlobalSecret\nname: after\ndata: dGVzdAo=\n"
    res = run(server, "apply", "-f", "-", input=doc)
    assert res.exit_code == 1
    assert "document 4" in res.stderr
    assert "GlobalSecret after" not in res.stdout
    assert run(server, "get", "global-secret", "after").exit_code == 1


def test_apply_splits_a_large_input_into_requests_of_the_chunk_size(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request holds what fits APPLY_CHUNK_BYTES; a later request's failure says how
    many resources the earlier ones applied."""
    monkeypatch.setattr(kdsctl_apply, "APPLY_CHUNK_BYTES", 170)
    docs = "".join(
        f"---\ntype: GlobalSecret\nname: g{i}\ndata: dGVzdAo=\nlabels: {{n: '{i}'}}\n"
        for i in range(5)
    )
    res = run(server, "apply", "-f", "-", input=docs)
    assert res.exit_code == 0, res.output
    assert [line.split()[-2:] for line in res.stdout.splitlines()] == [
        [f'name="g{i}"', "Created"] for i in range(5)
    ]
    summaries = [e for e in server.logs if e["event"] == "resources applied"]
    assert [e["total"] for e in summaries] == [2, 2, 1]
    for i in range(5):
        got = json.loads(run(server, "get", "global-secret", f"g{i}", "-o", "json").stdout)
        assert got["labels"]["n"] == str(i)
    bad = (
        docs.replace("name: g", "name: h")
        + "---\ntype: Secret\nmesh: nope\nname: s\ndata: dGVzdAo=\n"
    )
    res = run(server, "apply", "-f", "-", input=bad)
    assert res.exit_code == 1
    assert "(4 resources applied before this request)" in res.stderr


def test_a_large_input_streams_in_one_transaction(server: Server) -> None:
    """An input of many blocks is sent while it is read, as one request written in one
    transaction, Meshes first, reported as before."""
    docs = "".join(
        f"---\ntype: Secret\nmesh: streamed\nname: s{i}\ndata: {DATA}\n" for i in range(1500)
    )
    res = run(server, "apply", "-f", "-", input=docs + "---\ntype: Mesh\nname: streamed\n")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == 'resource type="Mesh" mesh="" name="streamed" Created'
    assert lines[1:] == [
        f'resource type="Secret" mesh="streamed" name="s{i}" Created' for i in range(1500)
    ]
    summaries = [e for e in server.logs if e["event"] == "resources applied"]
    assert [e["total"] for e in summaries] == [1501]


def test_an_input_found_too_large_while_streaming_goes_again_in_requests(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream that passes APPLY_CHUNK_BYTES after its first block went is left unfinished
    (nothing of it applied) and the whole input goes again in requests of that size."""
    monkeypatch.setattr(kdsctl_apply, "APPLY_CHUNK_BYTES", 100_000)
    docs = "".join(f"---\ntype: Secret\nmesh: big\nname: s{i}\ndata: {DATA}\n" for i in range(1500))
    res = run(server, "apply", "-f", "-", input=docs + "---\ntype: Mesh\nname: big\n")
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 1501
    summaries = [e["total"] for e in server.logs if e["event"] == "resources applied"]
    assert len(summaries) == 2 and sum(summaries) == 1501
    assert not [e for e in server.logs if e["log_level"] in ("error", "critical")]


def test_an_invalid_document_late_in_a_streamed_input_applies_nothing(server: Server) -> None:
    """Blocks already sent when a later document turns out invalid are not applied: the
    request is left unfinished, and the messages are those of a check before sending."""
    docs = "---\ntype: Mesh\nname: late\n" + "".join(
        f"---\ntype: Secret\nmesh: late\nname: s{i}\ndata: {DATA}\n" for i in range(1500)
    )
    bad = docs + "---\ntype: Secret\nmesh: late\nname: Bad_Name\ndata: '%%'\n"
    res = run(server, "apply", "-f", "-", input=bad)
    assert res.exit_code == 1
    assert res.stderr.splitlines()[0] == "Error: stdin document 1502: invalid resource"
    assert res.stderr.splitlines()[-1] == "Error: 1 invalid document(s); nothing was applied"
    assert res.stdout == ""
    assert not [e for e in server.logs if e["event"] == "resources applied"]
    assert not [e for e in server.logs if e["log_level"] in ("error", "critical")]
    assert run(server, "get", "mesh", "late").exit_code == 1
    # the same input without it applies whole
    assert run(server, "apply", "-f", "-", input=docs).exit_code == 0
    assert run(server, "get", "mesh", "late").exit_code == 0


def test_apply_bad_yaml_does_not_echo_the_line(server: Server) -> None:
    res = run(server, "apply", "-f", "-", input="type: Secret\ndata: [c2VjcmV0: \n  - x\n")
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: stdin: invalid YAML at line")
    assert "c2VjcmV0" not in res.output
    res = run(server, "apply", "-f", "-", input="---\n")
    assert res.exit_code == 1 and "no resource(s) passed to apply" in res.stderr


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    res = run(url, "get", "meshes")
    assert res.exit_code == 1
    assert f"cannot connect to the control plane API at {url}" in res.stderr
    assert "connection refused" in res.stderr
    res = CliRunner().invoke(cli, ["get", "meshes"], env={"KDSCTL_API_URL": url})
    assert res.exit_code == 1 and url in res.stderr


def test_not_a_kds_api(server: Server) -> None:
    res = run(server.url + "/openapi.yaml", "get", "meshes")
    assert res.exit_code == 1 and "Error:" in res.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["--api-url", "KDSCTL_API_URL", "--timeout", "apply", "get", "delete"]),
        (["apply"], ["-f, --file", "stdin", "Kubernetes"]),
        (["get"], ["meshes", "secrets", "global-secrets"]),
        (["get", "secrets"], ["--mesh", "--output", "table|json|yaml", "never show"]),
        (["get", "secret"], ["--mesh"]),
        (["get", "meshes"], ["--output"]),
        (["get", "global-secrets"], ["--output"]),
        (["delete"], ["mesh", "secret", "global-secret"]),
        (["delete", "secret"], ["--mesh", "NAME"]),
        (["delete", "mesh"], ["holds secrets"]),
        (["delete", "global-secret"], ["NAME"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    res = CliRunner().invoke(cli, [*args, "--help"])
    assert res.exit_code == 0, res.output
    for text in expected:
        assert text in res.stdout, (args, text)


def test_meshes_with_mtls_in_both_forms(server: Server, tmp_path: Path) -> None:
    """apply takes a provided-CA Mesh and its secrets (Universal, any order) and a builtin one
    (Kubernetes); get shows the backend; a secret in use and a mesh with secrets refuse delete."""
    from tests import certs

    ca = certs.ca()
    universal = (
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n"
        "    - name: ca-1\n      type: provided\n      config:\n"
        "        cert:\n          secret: my-cert\n        key:\n          secret: my-key\n---\n"
        f"type: Secret\nmesh: default\nname: my-cert\ndata: {ca.cert_b64}\n---\n"
        f"type: Secret\nmesh: default\nname: my-key\ndata: {ca.key_b64}\n"
    )
    kubernetes = (
        "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: payments\nspec:\n"
        "  mtls:\n    enabledBackend: ca-1\n    backends:\n      - name: ca-1\n"
        "        type: builtin\n        config:\n          caCert:\n            keyType: ECDSA\n"
    )
    res = run(server, "apply", "-f", "-", input=universal)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        'resource type="Mesh" mesh="" name="default" Created',
        'resource type="Secret" mesh="default" name="my-cert" Created',
        'resource type="Secret" mesh="default" name="my-key" Created',
    ]
    bad = universal.replace(ca.key_b64, base64.b64encode(certs.other_key()).decode())
    res = run(server, "apply", "-f", "-", input=bad)
    assert res.exit_code == 1
    assert "stdin document 1: mtls.backends[0].conf.key.secret" in res.output
    assert "not the private key of the certificate" in res.output
    res = run(server, "apply", "-f", "-", input=kubernetes)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        'resource type="Mesh" mesh="" name="payments" Created',
        'resource type="Secret" mesh="payments" name="payments.ca-builtin-cert-ca-1" Created',
        'resource type="Secret" mesh="payments" name="payments.ca-builtin-key-ca-1" Created',
    ]
    res = run(server, "get", "meshes")
    assert res.stdout.splitlines()[0].split() == [
        "NAME",
        "mTLS",
        "LOCALITY",
        "ZONEEGRESS",
        "ORIGIN",
        "AGE",
    ]
    assert "builtin/ca-1" in res.stdout
    res = run(server, "get", "mesh", "payments", "-o", "yaml")
    assert yaml.safe_load(res.stdout)["mtls"]["backends"][0]["type"] == "builtin"
    res = run(server, "delete", "secret", "payments.ca-builtin-key-ca-1", "--mesh", "payments")
    assert res.exit_code == 1
    assert "used by mesh 'payments' mTLS backend 'ca-1'" in res.output
    res = run(server, "delete", "mesh", "payments")
    assert res.exit_code == 0, res.output
    res = run(server, "get", "secrets", "--mesh", "default")
    assert "payments.ca-builtin" not in res.output


def test_readme_mtls_examples_apply_as_written(server: Server) -> None:
    """The README's Mesh mTLS examples (the seed's, with its secrets; the builtin one) apply
    through kdsctl; only the shell's base64 substitutions are filled in."""
    import re

    from tests import certs

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Mesh mTLS", 1)[1].split("\n## ", 1)[0]
    shell, builtin = re.findall(r"```(?:sh|yaml)\n(.*?)```", section, re.S)[:2]
    ca = certs.ca()
    body = shell.split("<<EOF\n", 1)[1].rsplit("EOF\n", 1)[0]
    body = body.replace("$(base64 -w0 ca.crt)", ca.cert_b64).replace(
        "$(base64 -w0 ca.key)", ca.key_b64
    )
    res = run(server, "apply", "-f", "-", input=body)
    assert res.exit_code == 0, res.output
    assert 'resource type="Mesh" mesh="" name="default" Created' in res.stdout
    res = run(server, "apply", "-f", "-", input=builtin)
    assert res.exit_code == 0, res.output
    assert (
        'resource type="Secret" mesh="payments" name="payments.ca-builtin-key-ca-1" Created'
        in res.stdout
    )


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[str]:
    """An API that requires tokens: admin 'a' * 20, read-only 'r' * 20."""
    tokens = ApiTokens(admin="a" * 20, read_only="r" * 20, admin_file=tmp_path / "admin-token")
    with serve_api(tmp_path, tokens=tokens) as (url, _):
        yield url


def test_token_file_from_option_and_environment(secured: str, tmp_path: Path) -> None:
    admin = tmp_path / "admin"
    admin.write_text("a" * 20 + "\n")
    r = CliRunner().invoke(cli, ["--api-url", secured, "--token-file", str(admin), "get", "meshes"])
    assert r.exit_code == 0, r.output
    env = {"KDSCTL_API_URL": secured, "KDSCTL_TOKEN_FILE": str(admin)}
    r = CliRunner().invoke(cli, ["get", "meshes"], env=env)
    assert r.exit_code == 0, r.output
    # --token wins over the file.
    r = CliRunner().invoke(cli, ["--token", "r" * 20, "delete", "mesh", "m"], env=env)
    assert r.exit_code == 1 and "read-only token may not DELETE" in r.output
    r = CliRunner().invoke(cli, ["get", "meshes"], env={"KDSCTL_API_URL": secured})
    assert r.exit_code == 1 and "--token-file" in r.output
    # A flag beats the environment: KDSCTL_TOKEN exported for one daemon, --token-file of
    # another's admin token on the command line.
    env = {"KDSCTL_API_URL": secured, "KDSCTL_TOKEN": "r" * 20}
    r = CliRunner().invoke(cli, ["--token-file", str(admin), "delete", "mesh", "m"], env=env)
    assert "read-only token" not in r.output, r.output


def test_token_file_unreadable_or_empty_names_the_option(tmp_path: Path) -> None:
    r = run("http://127.0.0.1:9", "--token-file", str(tmp_path / "nope"), "get", "meshes")
    assert r.exit_code == 2
    assert "'--token-file'" in r.output and "nope" in r.output and "No such file" in r.output
    (tmp_path / "empty").write_text("\n")
    r = run("http://127.0.0.1:9", "--token-file", str(tmp_path / "empty"), "get", "meshes")
    assert r.exit_code == 2 and "is empty" in r.output


@pytest.mark.parametrize(
    ("how", "token"),
    [("file", "tok-1234567890abcdef\nsecond-line\n"), ("flag", "tok-1234567890\x01abcdef")],
)
def test_a_token_no_header_can_carry_is_refused_without_showing_it(
    server: Server, tmp_path: Path, how: str, token: str
) -> None:
    """Before, http.client refused the header with a traceback quoting the token."""
    (tmp_path / "token").write_text(token)
    given = ["--token-file", str(tmp_path / "token")] if how == "file" else ["--token", token]
    r = run(server, *given, "get", "meshes")
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.exception
    assert "the token is not shown" in r.output and "abcdef" not in r.output


@pytest.mark.parametrize("count", [1, 3])
def test_a_global_from_before_json_lines_gets_the_apply_as_json(
    server: Server, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """A global that reads /_apply's body only as one JSON document refuses JSON Lines and
    applies nothing; kdsctl then sends the input again as JSON, and it is applied once."""
    import kds.api._apply as api_apply

    monkeypatch.setattr(api_apply, "NDJSON", "application/x-not-known-here")
    docs = "---\ntype: Mesh\nname: older\n" + "".join(
        f"---\ntype: Secret\nmesh: older\nname: s{i}\ndata: {DATA}\n" for i in range(count - 1)
    )
    res = run(server, "apply", "-f", "-", input=docs)
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == count
    summaries = [e["total"] for e in server.logs if e["event"] == "resources applied"]
    assert summaries == [count]


def test_timeout_takes_a_duration_as_every_other_option(server: Server) -> None:
    """--timeout 10s failed ('not a valid float range') where every other duration takes it."""
    for given in (["--timeout", "10s"], ["--timeout", "2.5"], ["--timeout", "500ms"]):
        res = CliRunner().invoke(cli, ["--api-url", server.url, *given, "get", "meshes"])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        cli, ["--api-url", server.url, "get", "meshes"], env={"KDSCTL_TIMEOUT": "3s"}
    )
    assert res.exit_code == 0, res.output
    for bad, why in (("0", "must be more than 0"), ("soon", "is not a duration")):
        res = CliRunner().invoke(cli, ["--timeout", bad, "get", "meshes"])
        assert res.exit_code == 2 and "--timeout" in res.stderr and why in res.stderr
