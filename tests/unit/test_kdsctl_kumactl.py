"""kdsctl next to kumactl: kumactl's verbs, flags and messages where kumactl has them.

Written from kumactl's source (app/kumactl/cmd/apply, get, delete at v2.14.3): apply's
``-f DIR``, ``-v KEY=VALUE``, ``--dry-run`` and its ``resource type=... Created`` lines and
``Warning:`` lines, the ``globalsecret(s)`` names, ``get --size/--offset``, and
``deleted TYPE "NAME"``.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from tests.unit.test_kdsctl import DATA, Server, run
from tests.unit.test_kdsctl import server as server_fixture  # noqa: F401  # registers it

MESH_TEMPLATE = """\
type: Mesh
name: {{ mesh }}
"""
SECRET_TEMPLATE = """\
type: Secret
mesh: {{ mesh }}
name: {{name}}
data: {{{ data }}}
"""


@pytest.fixture
def server(server_fixture: Server) -> Server:  # noqa: F811
    return server_fixture


def test_apply_a_directory_in_name_order(server: Server, tmp_path: Path) -> None:
    """-f DIR applies every .yaml, .yml and .json file directly in DIR, in name order;
    other files and subdirectories are left alone (kumactl's readDirectory)."""
    d = tmp_path / "resources"
    (d / "nested").mkdir(parents=True)
    (d / "01-mesh.yaml").write_text("type: Mesh\nname: default\n")
    (d / "02-secret.yml").write_text(f"type: Secret\nmesh: default\nname: a\ndata: {DATA}\n")
    (d / "03-global.json").write_text(f'{{"type": "GlobalSecret", "name": "g", "data": "{DATA}"}}')
    (d / "ignored.txt").write_text("type: Mesh\nname: ignored\n")
    (d / "nested" / "x.yaml").write_text("type: Mesh\nname: nested\n")
    res = run(server, "apply", "-f", str(d))
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        'resource type="Mesh" mesh="" name="default" Created',
        'resource type="Secret" mesh="default" name="a" Created',
        'resource type="GlobalSecret" mesh="" name="g" Created',
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run(server, "apply", "-f", str(empty))
    assert res.exit_code == 1 and "no resource(s) passed to apply" in res.stderr


def test_apply_variables_and_dry_run(server: Server, tmp_path: Path) -> None:
    """-v KEY=VALUE fills {{ KEY }} (repeatable or comma-separated); --dry-run prints the
    resolved resources and applies nothing; a variable no -v gives is an error."""
    f = tmp_path / "t.yaml"
    f.write_text(MESH_TEMPLATE + "---\n" + SECRET_TEMPLATE)
    res = run(
        server, "apply", "-f", str(f), "-v", "mesh=demo,name=s1", "-v", f"data={DATA}", "--dry-run"
    )
    assert res.exit_code == 0, res.output
    docs = list(yaml.safe_load_all(res.stdout))
    assert docs == [
        {"type": "Mesh", "name": "demo", "labels": {}},
        {"type": "Secret", "name": "s1", "mesh": "demo", "labels": {}, "data": DATA},
    ]
    assert run(server, "get", "meshes", "-o", "json").stdout.count('"name"') == 0
    res = run(
        server, "apply", "-f", str(f), "-v", "mesh=demo", "-v", "name=s1", "-v", f"data={DATA}"
    )
    assert res.exit_code == 0, res.output
    assert 'resource type="Secret" mesh="demo" name="s1" Created' in res.stdout
    res = run(server, "apply", "-f", str(f), "-v", "mesh=demo")
    assert res.exit_code == 1
    assert "uses the variable(s) data, name, which no -v gives" in res.stderr
    # With no -v at all, as kumactl: applied as written, with a warning; a variable in a
    # comment (as in Kuma's own documentation's examples) is no variable.
    quoted = 'type: Mesh\nname: m1 # the {{site.mesh_product_name}} mesh\nskipCreatingInitialPolicies: ["{{ policy }}"]\n'
    res = run(server, "apply", "-f", "-", "--dry-run", input=quoted)
    assert res.exit_code == 0, res.output
    assert res.stderr == (
        "Warning: stdin document 1: holds {{ policy }}, which no -v gave: applied as written "
        "(give -v policy=VALUE)\n"
    )
    res = run(server, "apply", "-f", "-", "--dry-run", input="type: Mesh\nname: m1 # {{ x }}\n")
    assert res.exit_code == 0 and res.stderr == ""
    res = run(server, "apply", "-f", str(f), "-v", "novalue")
    assert res.exit_code == 2 and "expected KEY=VALUE" in res.output


def test_apply_prints_the_servers_warnings(server: Server) -> None:
    """kumactl prints each warning of a write as 'Warning: ...' on stderr."""
    doc = f"type: GlobalSecret\nname: user-token-signing-key-1\ndata: {DATA}\n"
    res = run(server, "apply", "-f", "-", input=doc)
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("Warning: stdin document 1: GlobalSecret user-token-signing-key-1")
    assert "stays on global" in res.stderr


def test_apply_warns_of_config_as_the_api_does(server: Server) -> None:
    """A Mesh backend given ``config`` (a spelling some documentation uses) is stored as ``conf``;
    kdsctl sends it so, so it says what the API says of such a body, in both text forms."""
    backend = "backends: [{name: ca-1, type: builtin, config: {caCert: {expiration: 1y}}}]"
    universal = f"type: Mesh\nname: m1\nmtls:\n  {backend}\n"
    kubernetes = (
        "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: m2}\n"
        f"spec:\n  mtls:\n    {backend}\n"
    )
    for doc in (universal, kubernetes):
        res = run(server, "apply", "-f", "-", input=doc)
        assert res.exit_code == 0, res.output
        assert res.stderr == (
            "Warning: stdin document 1: mtls.backends[0].config is stored and returned as "
            "conf, Kuma's name for it\n"
        )


def test_globalsecret_names_and_delete_messages(server: Server) -> None:
    """kumactl's globalsecret / globalsecrets work; delete says 'deleted TYPE "NAME"', and
    a missing one 'there is no TYPE with name "NAME"'."""
    doc = f"type: GlobalSecret\nname: g\ndata: {DATA}\n"
    assert run(server, "apply", "-f", "-", input=doc).exit_code == 0
    for args in (("globalsecrets",), ("globalsecret", "g"), ("global-secrets",)):
        res = run(server, "get", *args)
        assert res.exit_code == 0 and "g" in res.stdout, res.output
    res = run(server, "delete", "globalsecret", "g")
    assert res.exit_code == 0 and res.stdout == 'deleted GlobalSecret "g"\n'
    res = run(server, "delete", "globalsecret", "g")
    assert res.exit_code == 1 and res.stderr == 'Error: there is no GlobalSecret with name "g"\n'
    res = run(server, "get", "globalsecret", "g")
    assert res.exit_code == 1 and res.stderr == "Error: No resources found\n"


def test_get_lists_every_page_or_the_page_asked_for(server: Server, tmp_path: Path) -> None:
    """The API pages by 100 (Kuma's default): get lists every page, unless --size (and
    --offset) ask for one page, as kumactl's flags do."""
    docs = [
        {"type": "GlobalSecret", "name": f"g{i:03}", "data": base64.b64encode(b"v").decode()}
        for i in range(130)
    ]
    f = tmp_path / "many.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    assert run(server, "apply", "-f", str(f)).exit_code == 0
    listing = yaml.safe_load(run(server, "get", "globalsecrets", "-o", "yaml").stdout)
    assert listing["total"] == 130 and len(listing["items"]) == 130
    assert listing["items"][-1]["name"] == "g129"
    page = yaml.safe_load(
        run(server, "get", "globalsecrets", "--size", "10", "--offset", "120", "-o", "yaml").stdout
    )
    assert [i["name"] for i in page["items"]] == [f"g{i}" for i in range(120, 130)]
    table = run(server, "get", "globalsecrets", "--offset", "125").stdout
    assert "g125" in table and "g124" not in table and "g129" in table


def test_kuma_error_bodies_are_read_and_made_safe_to_print() -> None:
    """kdsctl reads Kuma's invalid_parameters (else the older causes), and escapes what the
    server sent before it reaches a terminal."""
    import http.client
    import json

    from kdsctl.client import Response, _api_error

    def answer(body: object) -> Response:
        content = json.dumps(body).encode()
        return Response("PUT", "http://x/", 400, "Bad Request", http.client.HTTPMessage(), content)

    kuma = {
        "type": "/std-errors",
        "status": 400,
        "title": "Could not process a resource",
        "detail": "Resource is not valid\x1b[2J",
        "invalid_parameters": [{"field": "name", "reason": "cannot be empty"}],
        "causes": [{"field": "ignored", "message": "older clients read this"}],
    }
    e = _api_error(answer(kuma))
    assert e.causes == [("name", "cannot be empty")]
    assert "\x1b" not in e.detail and "\\x1b[2J" in e.detail
    older = {"title": "Bad Request", "detail": "x", "causes": [{"field": "a", "message": "b"}]}
    assert _api_error(answer(older)).causes == [("a", "b")]


def test_a_table_of_one_page_says_how_to_get_the_next(server: Server, tmp_path: Path) -> None:
    """kumactl's table of a page with more after it (--size) ends with its footer,
    'Rerun command with --offset=N argument to retrieve more resources'
    (app/kumactl/pkg/output/table/pagination.go and the get tests' pagination golden
    files); the last page has none, nor has -o yaml."""
    docs = [{"type": "GlobalSecret", "name": f"sec-{i}", "data": DATA} for i in (1, 2)]
    f = tmp_path / "two.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    assert run(server, "apply", "-f", str(f)).exit_code == 0
    res = run(server, "get", "globalsecrets", "--size", "1")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ORIGIN", "AGE"] and lines[1].startswith("sec-1 ")
    assert lines[2:] == ["", "Rerun command with --offset=1 argument to retrieve more resources"]
    last = run(server, "get", "globalsecrets", "--size", "1", "--offset", "1").stdout
    assert "sec-2" in last and "Rerun" not in last
    assert "Rerun" not in run(server, "get", "globalsecrets", "--size", "1", "-o", "yaml").stdout
    assert "Rerun" not in run(server, "get", "globalsecrets").stdout


def test_mesh_tables_have_kumactls_columns(server: Server) -> None:
    """kumactl's Mesh table (app/kumactl/cmd/get/table_printer.go and its get-meshes golden
    file): NAME, mTLS as TYPE/NAME or off, LOCALITY and ZONEEGRESS as on or off (kds-sync's
    ORIGIN follows), and AGE."""
    doc = (
        "type: Mesh\nname: mesh1\nmtls:\n  enabledBackend: builtin-1\n  backends:\n"
        "  - {name: builtin-1, type: builtin}\n"
        "routing: {localityAwareLoadBalancing: true, zoneEgress: true}\n"
        "---\ntype: Mesh\nname: mesh2\n"
    )
    assert run(server, "apply", "-f", "-", input=doc).exit_code == 0
    lines = [line.split() for line in run(server, "get", "meshes").stdout.splitlines()]
    assert lines[0] == ["NAME", "mTLS", "LOCALITY", "ZONEEGRESS", "ORIGIN", "AGE"]
    assert lines[1][:5] == ["mesh1", "builtin/builtin-1", "on", "on", "global"]
    assert lines[2][:5] == ["mesh2", "off", "off", "off", "global"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (59, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3600, "1h"),
        (86399, "23h"),
        (86400, "1d"),
        (364 * 86400, "364d"),
        (365 * 86400, "1y"),
        (292 * 365 * 86400 + 86400 * 80, "292y"),
        (-5, "never"),
    ],
)
def test_age_is_said_as_kumactl_says_it(seconds: int, shown: str) -> None:
    """kumactl's table.Duration: seconds under a minute, minutes under an hour, hours under
    a day, days under a year, then years; a time ahead is 'never'. Its tables count AGE
    from the last change (modificationTime)."""
    from datetime import UTC, datetime, timedelta

    from kdsctl.render import resource_age

    now = datetime(2026, 1, 1, tzinfo=UTC)
    stamp = (now - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    assert resource_age(stamp, now) == shown
