"""kdsctl apply of an input sent in several requests (over APPLY_CHUNK_BYTES): a Mesh goes in
the first request with the Secrets its mTLS backends name, wherever they are in the file, so
the request's transaction checks them together."""

from __future__ import annotations

import pytest

import kdsctl.apply as kdsctl_apply
from tests.unit.test_kdsctl import DATA, Server, run
from tests.unit.test_kdsctl import server as server_fixture  # noqa: F401  # registers it

MESH = """\
---
type: Mesh
name: pm
mtls:
  enabledBackend: ca-1
  skipValidation: true
  backends:
    - name: ca-1
      type: provided
      conf:
        cert: {secret: pm-cert}
        key: {secret: pm-key}
"""


@pytest.fixture
def server(server_fixture: Server) -> Server:  # noqa: F811
    return server_fixture


def test_a_mesh_goes_in_one_request_with_the_secrets_it_names(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kdsctl_apply, "APPLY_CHUNK_BYTES", 1000)
    filler = "".join(
        f"---\ntype: GlobalSecret\nname: filler-{i}\ndata: {DATA}\n" for i in range(30)
    )
    secrets = "".join(
        f"---\ntype: Secret\nmesh: pm\nname: {n}\ndata: {DATA}\n" for n in ("pm-cert", "pm-key")
    )
    res = run(server, "apply", "-f", "-", input=MESH + filler + secrets)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[:3] == [
        'resource type="Mesh" mesh="" name="pm" Created',
        'resource type="Secret" mesh="pm" name="pm-cert" Created',
        'resource type="Secret" mesh="pm" name="pm-key" Created',
    ]
    assert len(lines) == 33
    summaries = [e["total"] for e in server.logs if e["event"] == "resources applied"]
    assert len(summaries) > 1 and sum(summaries) == 33
