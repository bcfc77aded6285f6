"""Kuma's Mesh validator (pkg/core/resources/apis/mesh/mesh_validator.go and its test table,
mesh_validator_test.go, in Kuma's releases with ``Mesh.mtls``), replayed here.

Each invalid Mesh of Kuma's table is refused naming the fields Kuma names, with Kuma's
message; kds-sync names a backend's settings ``conf``, the key the input has (Kuma's
messages say ``config``), and a backend's dpCert with its index. Kuma's table also has a
Mesh with two mTLS backends, which Kuma's count of one refuses and Kong Mesh allows (its CA
rotation): kds-sync allows it, and its README says so.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from kds.errors import InvalidResource
from kds.model import from_document
from kds.validation import read_mesh_spec
from tests.unit.test_api import MakeApi
from tests.unit.test_api import make_api as make_api_fixture  # noqa: F401  # registers it

# Kuma's "should pass validation" Mesh, its fields as they are there.
KUMA_VALID = """
mtls:
  enabledBackend: builtin-1
  backends:
  - name: builtin-1
    type: builtin
    dpCert:
      rotation:
        expiration: 2y
logging:
  backends:
  - name: file-1
    type: file
    conf:
      path: /path/to/file
  - name: file-2
    format: '%START_TIME% %KUMA_SOURCE_SERVICE%'
    type: file
    conf:
      path: /path/to/file2
  - name: tcp-1
    type: tcp
    conf:
      address: kibana:1234
  - name: tcp-2
    format: '%START_TIME% %KUMA_DESTINATION_SERVICE%'
    type: tcp
    conf:
      address: "[::1]:1234"
  defaultBackend: tcp-1
tracing:
  backends:
  - name: zipkin-us
    type: zipkin
    sampling: 80.0
    conf:
      url: http://zipkin.local:9411/v2/spans
      apiVersion: httpProto
  - name: datadog
    type: datadog
    conf:
      address: 127.0.0.1
      port: 8126
  defaultBackend: zipkin-us
metrics:
  enabledBackend: prom-1
  backends:
  - name: prom-1
    type: prometheus
    conf:
      port: 1234
      path: /metrics
      skipMTLS: false
      tls:
        mode: activeMTLSBackend
      aggregate:
      - name: app
        port: 123
        path: /stats
  - name: prom-2
    type: prometheus
    conf:
      skipMTLS: true
      tls:
        mode: disabled
routing:
  zoneEgress: true
constraints:
  dataplaneProxy:
    requirements:
    - tags:
        kuma.io/zone: east
    restrictions:
    - tags:
        kuma.io/service: '*'
"""

# (Kuma's case, the Mesh's fields, {field: message}) from Kuma's "should validate fields".
CASES: list[tuple[str, str, dict[str, str]]] = [
    (
        "enabledBackend of unknown name",
        "mtls: {enabledBackend: backend-2, backends: [{name: backend-1, type: builtin}]}",
        {"mtls.enabledBackend": "is not one of the backends"},
    ),
    (
        "dpCert rotation invalid expiration time",
        """
        mtls:
          enabledBackend: backend-3
          backends:
          - {name: backend-3, type: builtin, dpCert: {rotation: {expiration: 2e}}}
        """,
        {"mtls.backends[0].dpCert.rotation.expiration": "has to be a valid format"},
    ),
    (
        "logging backend with empty name",
        "logging: {backends: [{name: '', type: tcp, conf: {address: 'kibana:1234'}}]}",
        {"logging.backends[0].name": "cannot be empty"},
    ),
    (
        "multiple logging backends of the same name",
        """
        logging:
          backends:
          - {name: backend-1, type: tcp, conf: {address: 'kibana:1234'}}
          - {name: backend-1, type: file, conf: {path: /tmp/service.log}}
        """,
        {"logging.backends[1].name": '"backend-1" name is already used for another backend'},
    ),
    (
        "tcp logging address is empty",
        """
        logging:
          backends: [{name: backend-1, type: tcp, conf: {address: null}}]
          defaultBackend: backend-1
        """,
        {"logging.backends[0].conf.address": "cannot be empty"},
    ),
    (
        "tcp logging address is invalid",
        """
        logging:
          backends: [{name: backend-1, type: tcp, conf: {address: 'wrong-format:234:234'}}]
          defaultBackend: backend-1
        """,
        {"logging.backends[0].conf.address": "has to be in format of HOST:PORT"},
    ),
    (
        "file logging path is empty",
        "logging: {backends: [{name: backend-1, type: file, conf: {path: null}}]}",
        {"logging.backends[0].conf.path": "cannot be empty"},
    ),
    (
        "logging: default backend has to be set to one of the backends",
        """
        logging:
          backends: [{name: backend-1, type: file, conf: {path: /tmp/a.log}}]
          defaultBackend: non-existing-backend
        """,
        {"logging.defaultBackend": "has to be set to one of the logging backend in mesh"},
    ),
    (
        "tracing backend with empty name",
        "tracing: {backends: [{name: '', type: zipkin, conf: {url: 'http://z.local:9411/a'}}]}",
        {"tracing.backends[0].name": "cannot be empty"},
    ),
    (
        "multiple tracing backend with the same name",
        """
        tracing:
          backends:
          - {name: zipkin-us, type: zipkin, conf: {url: 'http://zipkin.us:9411/v2/spans'}}
          - {name: zipkin-us, type: zipkin, conf: {url: 'http://zipkin.eu:9411/v2/spans'}}
        """,
        {"tracing.backends[1].name": '"zipkin-us" name is already used for another backend'},
    ),
    (
        "tracing with invalid sampling",
        """
        tracing:
          backends:
          - {name: z, type: zipkin, sampling: 100.1, conf: {url: 'http://z.local:9411/a'}}
        """,
        {"tracing.backends[0].sampling": "has to be in [0.0 - 100.0] range"},
    ),
    (
        "tracing with zipkin without url",
        "tracing: {backends: [{name: z, type: zipkin, conf: {url: ''}}]}",
        {"tracing.backends[0].conf.url": "cannot be empty"},
    ),
    (
        "tracing with zipkin with invalid url",
        "tracing: {backends: [{name: z, type: zipkin, conf: {url: invalid-url}}]}",
        {"tracing.backends[0].conf.url": "invalid URL"},
    ),
    (
        "tracing with zipkin with valid url but without port",
        "tracing: {backends: [{name: z, type: zipkin, conf: {url: 'http://z.local/v2/spans'}}]}",
        {"tracing.backends[0].conf.url": "port has to be explicitly specified"},
    ),
    (
        "tracing with zipkin with invalid apiVersion",
        """
        tracing:
          backends:
          - {name: z, type: zipkin, conf: {url: 'http://z.local:9411/a', apiVersion: invalid}}
        """,
        {
            "tracing.backends[0].conf.apiVersion": "has invalid value. Allowed values: "
            "httpJsonV1, httpJson, httpProto"
        },
    ),
    (
        "tracing: default backend has to be set to one of the backends",
        """
        tracing:
          backends: [{name: z, type: zipkin, conf: {url: 'http://z.local:9411/a'}}]
          defaultBackend: non-existing-backend
        """,
        {"tracing.defaultBackend": "has to be set to one of the tracing backend in mesh"},
    ),
    (
        "datadog without address or port (Kuma's validateDatadog)",
        "tracing: {backends: [{name: d, type: datadog, conf: {port: 0}}]}",
        {
            "tracing.backends[0].conf.address": "cannot be empty",
            "tracing.backends[0].conf.port": "port must be in the range [1, 65535]",
        },
    ),
    (
        "multiple metrics backends of the same name",
        """
        metrics:
          backends: [{name: backend-1, type: prometheus}, {name: backend-1, type: prometheus}]
        """,
        {"metrics.backends[1].name": '"backend-1" name is already used for another backend'},
    ),
    (
        "metrics: enabledBackend of unknown name",
        "metrics: {enabledBackend: backend-2, backends: [{name: backend-1, type: prometheus}]}",
        {"metrics.enabledBackend": "has to be set to one of the backends in the mesh"},
    ),
    (
        "unknown backend types",
        """
        metrics: {backends: [{name: backend-1, type: xxx}]}
        logging: {backends: [{name: backend-1, type: xxx}]}
        tracing: {backends: [{name: backend-1, type: xxx}]}
        """,
        {
            "logging.backends[0].type": 'unknown backend type. Available backends: "tcp", "file"',
            "tracing.backends[0].type": "unknown backend type. Available backends: "
            '"zipkin", "datadog"',
            "metrics.backends[0].type": 'unknown backend type. Available backends: "prometheus"',
        },
    ),
    (
        "zoneEgress enabled but mtls not defined",
        "routing: {zoneEgress: true}",
        {"mtls": "has to be set when zoneEgress enabled"},
    ),
    (
        "zoneEgress and mTLS enabled but no enabledBackend provided",
        "mtls: {backends: [{name: backend-1, type: builtin}]}\nrouting: {zoneEgress: true}",
        {"mtls": "has to be set when zoneEgress enabled"},
    ),
    (
        "metrics contains skipMTLS and tls configuration",
        """
        metrics:
          backends:
          - {name: b, type: prometheus, conf: {skipMTLS: true, tls: {mode: providedTLS}}}
        """,
        {"metrics.backends[0].conf": "skipMTLS and tls configuration cannot be defined together"},
    ),
    (
        "metrics contains not skipMTLS and disabled",
        """
        metrics:
          backends:
          - {name: b, type: prometheus, conf: {skipMTLS: false, tls: {mode: disabled}}}
        """,
        {"metrics.backends[0].conf": "skipMTLS and tls configuration cannot be defined together"},
    ),
]


def problems(text: str) -> dict[str, list[str]]:
    _, errs = read_mesh_spec(yaml.safe_load(textwrap.dedent(text)) or {}, "default")
    out: dict[str, list[str]] = {}
    for e in errs:
        out.setdefault(e.field, []).append(e.message)
    return out


def test_kumas_valid_mesh_is_accepted() -> None:
    """Kuma's "should pass validation" Mesh (every backend kind, a bracketed IPv6 address,
    a '*' selector value, zoneEgress with an enabled mTLS backend) passes."""
    assert problems(KUMA_VALID) == {}


@pytest.mark.parametrize(("case", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_kumas_invalid_meshes_are_refused_naming_kumas_fields(
    case: str, text: str, expected: dict[str, str]
) -> None:
    """Each Mesh Kuma's validator refuses is refused, naming the same fields, with Kuma's
    message."""
    got = problems(text)
    assert set(got) == set(expected), (case, got)
    for field, message in expected.items():
        assert any(message in m for m in got[field]), (case, field, got[field])


def test_metrics_aggregate_names_are_unique() -> None:
    """Kuma's Prometheus check: an aggregate entry's name appears once per backend."""
    got = problems(
        """
        metrics:
          backends:
          - name: backend-1
            type: prometheus
            conf:
              aggregate: [{name: app, port: 123}, {name: app}, {name: sidecar}, {name: sidecar}]
          - name: backend-2
            type: prometheus
            conf: {aggregate: [{name: app}, {name: app}]}
        """
    )
    assert got == {
        "metrics.backends[0].conf.aggregate[1].name": [
            "duplicate entry: app, values have to be unique"
        ],
        "metrics.backends[0].conf.aggregate[3].name": [
            "duplicate entry: sidecar, values have to be unique"
        ],
        "metrics.backends[1].conf.aggregate[1].name": [
            "duplicate entry: app, values have to be unique"
        ],
    }


def test_constraint_selectors_follow_kumas_tag_rules() -> None:
    """Kuma's ValidateSelector, a tag required: names and values from letters, digits and
    . - _ : / (a value may be '*'), neither empty."""
    got = problems(
        """
        constraints:
          dataplaneProxy:
            requirements: [{}, {tags: {'': ''}}, {tags: {'!@#$': '!@#$'}}]
            restrictions: [{tags: {kuma.io/service: '*'}}]
        """
    )
    f = "constraints.dataplaneProxy.requirements"
    assert got == {
        f"{f}[0].tags": ["must have at least one tag"],
        f"{f}[1].tags": ["tag name must be non-empty"],
        f'{f}[1].tags[""]': ["tag value must be non-empty"],
        f'{f}[2].tags["!@#$"]': [
            "tag name must consist of alphanumeric characters, dots, dashes, slashes and "
            "underscores",
            "tag value must consist of alphanumeric characters, dots, dashes, slashes and "
            'underscores or be "*"',
        ],
    }


@pytest.mark.parametrize("expiration", ["0", "2y", "3w", "24h", "90m", "500ms", "1s"])
def test_dp_cert_expirations_kuma_reads(expiration: str) -> None:
    """Kuma's ParseDuration: digits and y, w, d, h, m, s or ms, or a bare 0."""
    dp = {"rotation": {"expiration": expiration}}
    mesh: dict[str, Any] = {"mtls": {"backends": [{"name": "a", "type": "builtin", "dpCert": dp}]}}
    assert problems(yaml.safe_dump(mesh)) == {}


def test_the_kubernetes_form_names_spec_fields() -> None:
    """The same rules in the Kubernetes form, fields under spec."""
    doc = {
        "apiVersion": "kuma.io/v1alpha1",
        "kind": "Mesh",
        "metadata": {"name": "m"},
        "spec": {"routing": {"zoneEgress": True}},
    }
    with pytest.raises(InvalidResource) as e:
        from_document(doc)
    assert [(v.field, v.message) for v in e.value.errors] == [
        ("spec.mtls", "has to be set when zoneEgress enabled")
    ]


def test_many_bad_backends_are_named_a_bounded_number_of_times() -> None:
    """A body of many bad backends gets a short answer (the first 20, then a count)."""
    mesh = {"logging": {"backends": [{"name": "", "type": "file"}] * 10_000}}
    _, errs = read_mesh_spec(mesh, "m")
    assert 20 <= len(errs) <= 20 * 3 + 1


async def test_kong_meshs_ca_rotation_is_allowed(make_api_fixture: MakeApi) -> None:  # noqa: F811
    """Kong Mesh's CA rotation: a second backend is added, then enabledBackend moves to it
    while mTLS is on. Kuma's own validator refuses both steps (one backend at most;
    "Changing CA when mTLS is enabled is forbidden"); kds-sync follows Kong Mesh."""
    api = await make_api_fixture()
    ca1 = {"name": "ca-1", "type": "builtin"}
    ca2 = {"name": "ca-2", "type": "builtin"}
    steps = [
        {"enabledBackend": "ca-1", "backends": [ca1]},
        {"enabledBackend": "ca-1", "backends": [ca1, ca2]},
        {"enabledBackend": "ca-2", "backends": [ca1, ca2]},
        {"enabledBackend": "ca-2", "backends": [ca2]},
    ]
    for mtls in steps:
        status, body, _ = await api.put("/meshes/m", {"mtls": mtls})
        assert status in (200, 201), body


@pytest.mark.parametrize(
    ("expiration", "seconds"),
    [("52w", 52 * 7 * 86400), ("3600000ms", 3600), ("010h", 36000), ("10y", 10 * 365 * 86400)],
)
def test_builtin_ca_expiration_takes_kumas_units(expiration: str, seconds: int) -> None:
    """Kuma reads a builtin CA's caCert.expiration with its ParseDuration (digits and y, w,
    d, h, m, s or ms): weeks and milliseconds are Kuma durations too."""
    from kds.mtls import parse_ca_expiration

    assert parse_ca_expiration(expiration) == seconds
    ca = {"caCert": {"expiration": expiration}}
    mesh = {"mtls": {"backends": [{"name": "a", "type": "builtin", "conf": ca}]}}
    assert problems(yaml.safe_dump(mesh)) == {}


@pytest.mark.parametrize(
    ("mode", "refused"),
    [("Exclusive", False), ("ReachableBackends", False), (2, False), ("Sometimes", True)],
)
def test_mesh_services_mode_is_one_of_kumas(mode: object, refused: bool) -> None:
    """Mesh.MeshServices.Mode is an enum (mesh.proto: Disabled, Everywhere,
    ReachableBackends, Exclusive): Kuma refuses an unknown name when it reads the body
    ("unknown value ... for enum"); a number is taken, as protobuf's JSON takes one."""
    got = problems(yaml.safe_dump({"meshServices": {"mode": mode}}))
    assert bool(got) is refused
    if refused:
        assert "Exclusive" in got["meshServices.mode"][0]
