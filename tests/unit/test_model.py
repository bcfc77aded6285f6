"""Unit tests for kds.model: validation, text forms and safe repr."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
import yaml

from kds.errors import FieldViolation, InvalidResource
from kds.model import (
    DEFAULT_MAX_DATA_BYTES,
    K8S_GLOBAL_SECRET_TYPE,
    K8S_SECRET_TYPE,
    Key,
    Kind,
    Limits,
    Resource,
    decode_data,
    from_document,
    from_json_body,
    to_json,
    to_kubernetes,
    validate,
    validate_labels,
    validate_name,
)

B64 = "dGVzdAo="  # b"test\n", the value used throughout the Secrets user documentation


def fields_of(exc: pytest.ExceptionInfo[InvalidResource]) -> set[str]:
    return {e.field for e in exc.value.errors}


def secret_doc(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {"type": "Secret", "name": "s1", "mesh": "default", "data": B64}
    doc.update(over)
    return doc


_UNSET = object()


def k8s_secret(
    *, labels: object = _UNSET, data: object = _UNSET, **over: object
) -> dict[str, object]:
    doc: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "sample-secret",
            "namespace": "kuma-system",
            "labels": {"kuma.io/mesh": "default"} if labels is _UNSET else labels,
        },
        "data": {"value": B64} if data is _UNSET else data,
        "type": K8S_SECRET_TYPE,
    }
    doc.update(over)
    return doc


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    ["a", "default", "my-secret", "a.b.c", "x1.y-2", "0", "a" * 253, ".".join(["ab"] * 84)],
)
def test_valid_names_accepted(name: str) -> None:
    """RFC 1123 subdomains up to 253 characters, dots included, are valid names."""
    assert validate_name(name) == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Upper",
        "mySecret",
        "-a",
        "a-",
        ".a",
        "a.",
        "a..b",
        "a_b",
        "a b",
        "a/b",
        "é",
        "a" * 254,
        None,
        123,
    ],
)
def test_invalid_names_refused(name: object) -> None:
    """Empty, upper-case, bad characters, bad edges and over 253 characters are refused."""
    errs = validate_name(name)
    assert len(errs) == 1
    assert errs[0].field == "name"


def test_validate_name_uses_given_field() -> None:
    """validate_name reports the field name it was given."""
    assert validate_name("Bad", "mesh")[0].field == "mesh"


def test_name_length_limit_message_mentions_253() -> None:
    """A name over the limit says the limit, not only the syntax rule."""
    (err,) = validate_name("a" * 254)
    assert "253" in err.message


# --------------------------------------------------------------------------- base64


def test_decode_data_valid() -> None:
    """Valid base64 decodes to its bytes."""
    assert decode_data(B64, Limits()) == b"test\n"


def test_decode_data_tolerates_whitespace() -> None:
    """Whitespace and line breaks inside base64 (as `base64` wraps output) are tolerated."""
    wrapped = "  dGVz\ndAo=\n"
    assert decode_data(wrapped, Limits()) == b"test\n"


@pytest.mark.parametrize("value", ["not base64!", "dGVzdAo", "dGVz*Ao=", "====", "a"])
def test_decode_data_invalid(value: str) -> None:
    """Invalid base64 (bad characters, bad padding) is refused naming the field."""
    with pytest.raises(InvalidResource) as e:
        decode_data(value, Limits(), "data.value")
    assert fields_of(e) == {"data.value"}
    assert "base64" in str(e.value)


@pytest.mark.parametrize("value", ["", "   ", "\n", None, 12, b"dGVzdAo="])
def test_decode_data_empty_or_not_string(value: object) -> None:
    """Empty, blank and non-string data are refused naming the field."""
    with pytest.raises(InvalidResource) as e:
        decode_data(value, Limits())
    assert fields_of(e) == {"data"}


def test_decode_data_size_limit_is_configurable() -> None:
    """The decoded size limit comes from Limits: at the limit ok, one byte over refused."""
    limits = Limits(max_data_bytes=4)
    assert decode_data(base64.b64encode(b"1234").decode(), limits) == b"1234"
    with pytest.raises(InvalidResource) as e:
        decode_data(base64.b64encode(b"12345").decode(), limits)
    assert fields_of(e) == {"data"}
    assert "5 bytes" in str(e.value) and "4 bytes" in str(e.value)


def test_default_limit_is_one_mebibyte() -> None:
    """By default data up to 1 MiB decoded is accepted and more is refused."""
    ok = base64.b64encode(b"x" * DEFAULT_MAX_DATA_BYTES).decode()
    assert len(decode_data(ok, Limits())) == DEFAULT_MAX_DATA_BYTES
    too_big = base64.b64encode(b"x" * (DEFAULT_MAX_DATA_BYTES + 1)).decode()
    with pytest.raises(InvalidResource):
        decode_data(too_big, Limits())


def test_universal_document_respects_limits() -> None:
    """from_document applies the Limits it is given to the decoded data."""
    with pytest.raises(InvalidResource) as e:
        from_document(secret_doc(), Limits(max_data_bytes=2))
    assert fields_of(e) == {"data"}
    assert from_document(secret_doc(), Limits(max_data_bytes=5)).data == b"test\n"


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "labels",
    [
        {},
        None,
        {"app": "web"},
        {"team": ""},
        {"example.com/tier": "gold"},
        {"a.b-c_d": "v.1-2_3"},
        {"k": "v" * 63},
        {"n" * 63: "x"},
        {"kuma.io/mesh": "default"},
        {("p" * 60 + ".io") + "/name": "v"},
    ],
)
def test_valid_labels(labels: object) -> None:
    """Kubernetes label syntax: optional DNS prefix, name <= 63, value <= 63, empty value ok."""
    assert validate_labels(labels) == []


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"k": "v" * 64}, "labels[k]"),
        ({"n" * 64: "x"}, "labels[" + "n" * 64 + "]"),
        ({"bad key": "x"}, "labels[bad key]"),
        ({"-k": "x"}, "labels[-k]"),
        ({"k": "bad value"}, "labels[k]"),
        ({"k": "-v"}, "labels[k]"),
        ({"k": "v-"}, "labels[k]"),
        ({"k": "a/b"}, "labels[k]"),
        ({"Example.com/x": "v"}, "labels[Example.com/x]"),
        ({"/x": "v"}, "labels[/x]"),
        ({"ex.com/": "v"}, "labels[ex.com/]"),
        ({"a/b/c": "v"}, "labels[a/b/c]"),
        ({"k": 5}, "labels[k]"),
        ({"k": None}, "labels[k]"),
        ({"": "v"}, "labels[]"),
    ],
)
def test_invalid_labels_name_the_label(labels: dict[str, object], field: str) -> None:
    """Each bad label key or value is refused with a field naming that label."""
    errs = validate_labels(labels)
    assert errs
    assert {e.field for e in errs} == {field}


def test_labels_must_be_a_map() -> None:
    """Labels that are not a map are refused naming the labels field."""
    (err,) = validate_labels(["a", "b"])
    assert err.field == "labels"


def test_label_key_must_be_string() -> None:
    """A non-string label key is refused."""
    errs = validate_labels({1: "x"})
    assert [e.field for e in errs] == ["labels"]


def test_label_prefix_over_253_refused() -> None:
    """A label prefix longer than 253 characters is refused."""
    key = "a" * 254 + "/n"
    assert validate_labels({key: "v"})


@pytest.mark.parametrize("label", ["kuma.io/origin", "kuma.io/zone"])
def test_system_labels_refused(label: str) -> None:
    """kuma.io/origin and kuma.io/zone are set by the system and cannot be given by a user."""
    errs = validate_labels({label: "global"})
    assert [e.field for e in errs] == [f"labels[{label}]"]
    with pytest.raises(InvalidResource) as e:
        from_document(secret_doc(labels={label: "zone"}))
    assert fields_of(e) == {f"labels[{label}]"}


def test_multiple_label_problems_all_reported() -> None:
    """Validation collects every bad label, not only the first one."""
    errs = validate_labels({"kuma.io/zone": "z", "k": "v" * 64, "ok": "fine"})
    assert {e.field for e in errs} == {"labels[kuma.io/zone]", "labels[k]"}


# --------------------------------------------------------------------------- validate()


def test_validate_collects_every_problem() -> None:
    """validate() lists every bad field: name, mesh, labels and data at once."""
    res = Resource(Kind.SECRET, name="Bad", mesh="Bad_Mesh", data=b"", labels={"k": "-"})
    with pytest.raises(InvalidResource) as e:
        validate(res, Limits())
    assert fields_of(e) == {"name", "mesh", "labels[k]", "data"}
    assert all(isinstance(x, FieldViolation) for x in e.value.errors)


def test_validate_mesh_needs_no_data() -> None:
    """A Mesh is valid without data; a GlobalSecret is not."""
    validate(Resource(Kind.MESH, name="default"), Limits())
    with pytest.raises(InvalidResource) as e:
        validate(Resource(Kind.GLOBAL_SECRET, name="g"), Limits())
    assert fields_of(e) == {"data"}


def test_validate_size_limit() -> None:
    """validate() enforces the data size limit of the Limits it is given."""
    res = Resource(Kind.GLOBAL_SECRET, name="g", data=b"12345")
    validate(res, Limits(max_data_bytes=5))
    with pytest.raises(InvalidResource) as e:
        validate(res, Limits(max_data_bytes=4))
    assert fields_of(e) == {"data"}


# --------------------------------------------------------------------------- Universal form

UNIVERSAL_SECRET = """\
type: Secret
name: sample-secret
mesh: default
data: dGVzdAo=
"""

UNIVERSAL_SECRET_CLI = """\
type: Secret
mesh: default
name: sample-secret
data: dGVzdAo=
"""

UNIVERSAL_GLOBAL_SECRET = """\
type: GlobalSecret
name: sample-global-secret
data: dGVzdAo=
"""

UNIVERSAL_MESH_MTLS = """\
type: Mesh
name: default
mtls:
  backends:
    - name: ca-1
      type: provided
      config:
        cert:
          secret: my-cert # name of the secret
        key:
          secret: my-key # name of the secret
"""


@pytest.mark.parametrize("text", [UNIVERSAL_SECRET, UNIVERSAL_SECRET_CLI])
def test_universal_secret_example(text: str) -> None:
    """The Universal Secret examples of the Secrets documentation parse into a mesh-scoped
    Secret."""
    res = from_document(yaml.safe_load(text))
    assert res.kind is Kind.SECRET
    assert res.key == Key(Kind.SECRET, "default", "sample-secret")
    assert res.data == b"test\n"
    assert dict(res.labels) == {}


def test_universal_global_secret_example() -> None:
    """The Universal GlobalSecret example of the Secrets documentation parses into a
    GlobalSecret."""
    res = from_document(yaml.safe_load(UNIVERSAL_GLOBAL_SECRET))
    assert res.key == Key(Kind.GLOBAL_SECRET, "", "sample-global-secret")
    assert res.data == b"test\n"


def test_universal_mesh_minimal() -> None:
    """A Universal Mesh with only type and name parses with an empty spec."""
    res = from_document({"type": "Mesh", "name": "default"})
    assert res.key == Key(Kind.MESH, "", "default")
    assert res.data == b"" and dict(res.spec) == {}


def test_universal_mesh_example_with_mtls_parses() -> None:
    """The seed's Universal Mesh example with a provided mTLS backend parses, mtls in spec."""
    res = from_document(yaml.safe_load(UNIVERSAL_MESH_MTLS))
    assert res.key == Key(Kind.MESH, "", "default")
    backend = res.spec["mtls"]["backends"][0]
    # The ``config`` spelling some documentation uses is stored and returned as ``conf``,
    # Kuma's key.
    assert backend["conf"] == {"cert": {"secret": "my-cert"}, "key": {"secret": "my-key"}}
    assert "config" not in backend
    assert to_json(res)["mtls"] == res.spec["mtls"]


def test_universal_with_labels() -> None:
    """Universal labels are kept as given."""
    res = from_document(secret_doc(labels={"app": "web", "env": ""}))
    assert dict(res.labels) == {"app": "web", "env": ""}


def test_universal_unknown_type() -> None:
    """An unknown Universal type is refused naming the type field."""
    with pytest.raises(InvalidResource) as e:
        from_document({"type": "Secrets", "name": "x"})
    assert fields_of(e) == {"type"}


def test_universal_missing_type() -> None:
    """A document with neither type nor apiVersion/kind is refused naming type."""
    with pytest.raises(InvalidResource) as e:
        from_document({"name": "x", "data": B64})
    assert fields_of(e) == {"type"}


def test_document_must_be_a_map() -> None:
    """A document that is not a map is refused."""
    with pytest.raises(InvalidResource):
        from_document(["type", "Secret"])


@pytest.mark.parametrize(
    ("doc", "bad"),
    [
        (secret_doc(extra="x"), {"extra"}),
        (secret_doc(value=B64), {"value"}),
        ({"type": "GlobalSecret", "name": "g", "mesh": "default", "data": B64}, {"mesh"}),
        ({"type": "Mesh", "name": "m", "data": B64}, {"data"}),
        ({"type": "Mesh", "name": "m", "mesh": "x"}, {"mesh"}),
        ({"type": "Mesh", "name": "m", "bogus": {}}, {"bogus"}),
    ],
)
def test_universal_unknown_fields(doc: dict[str, object], bad: set[str]) -> None:
    """Fields a kind does not have are refused, each named."""
    with pytest.raises(InvalidResource) as e:
        from_document(doc)
    assert fields_of(e) == bad


def test_universal_secret_needs_mesh() -> None:
    """A Universal Secret without mesh is refused naming mesh."""
    doc = secret_doc()
    del doc["mesh"]
    with pytest.raises(InvalidResource) as e:
        from_document(doc)
    assert fields_of(e) == {"mesh"}


@pytest.mark.parametrize("mesh", ["", "Default", None, 3])
def test_universal_secret_bad_mesh(mesh: object) -> None:
    """A Universal Secret with an invalid mesh name is refused naming mesh."""
    with pytest.raises(InvalidResource) as e:
        from_document(secret_doc(mesh=mesh))
    assert fields_of(e) == {"mesh"}


@pytest.mark.parametrize("name", ["Sample", "", None, "a_b", "x" * 254])
def test_universal_bad_name(name: object) -> None:
    """A Universal resource with an invalid name is refused naming name."""
    with pytest.raises(InvalidResource) as e:
        from_document(secret_doc(name=name))
    assert fields_of(e) == {"name"}


def test_universal_missing_name() -> None:
    """A Universal resource without a name is refused naming name."""
    doc = secret_doc()
    del doc["name"]
    with pytest.raises(InvalidResource) as e:
        from_document(doc)
    assert fields_of(e) == {"name"}


def test_universal_missing_data() -> None:
    """A Universal Secret without data is refused naming data."""
    doc = secret_doc()
    del doc["data"]
    with pytest.raises(InvalidResource) as e:
        from_document(doc)
    assert fields_of(e) == {"data"}


def test_universal_all_errors_at_once() -> None:
    """Several problems in one Universal document are all reported."""
    with pytest.raises(InvalidResource) as e:
        from_document(
            {"type": "Secret", "name": "Bad", "data": "!!", "labels": {"kuma.io/zone": "z"}}
        )
    assert fields_of(e) == {"name", "mesh", "data", "labels[kuma.io/zone]"}


def test_universal_timestamps_accepted_and_ignored() -> None:
    """creationTime / modificationTime (as the API returns them) are accepted, not trusted."""
    res = from_document(secret_doc(creationTime="2020-01-01T00:00:00Z", modificationTime="x"))
    assert res.creation_time == "" and res.modification_time == ""


# --------------------------------------------------------------------------- Kubernetes form

K8S_MESH_SECRET = """\
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
"""

K8S_GLOBAL_SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: sample-secret
  namespace: kuma-system
data:
  value: dGVzdAo=
type: system.kuma.io/global-secret
"""

K8S_MESH = """\
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    backends:
      - name: ca-1
        type: provided
        config:
          cert:
            secret: my-cert
          key:
            secret: my-key
"""


def test_k8s_mesh_secret_example() -> None:
    """The Kubernetes mesh Secret example parses; kuma.io/mesh becomes the mesh, not a label."""
    res = from_document(yaml.safe_load(K8S_MESH_SECRET))
    assert res.key == Key(Kind.SECRET, "default", "sample-secret")
    assert res.data == b"test\n"
    assert "kuma.io/mesh" not in res.labels


def test_k8s_global_secret_example() -> None:
    """The Kubernetes global secret example parses into a GlobalSecret."""
    res = from_document(yaml.safe_load(K8S_GLOBAL_SECRET))
    assert res.key == Key(Kind.GLOBAL_SECRET, "", "sample-secret")
    assert res.data == b"test\n"


def test_k8s_mesh_example_with_mtls_parses() -> None:
    """The seed's Kubernetes Mesh example parses to the same resource as the Universal one."""
    res = from_document(yaml.safe_load(K8S_MESH))
    assert res.spec == from_document(yaml.safe_load(UNIVERSAL_MESH_MTLS)).spec
    assert to_kubernetes(res)["spec"] == res.spec


def test_k8s_mesh_without_spec() -> None:
    """A Kubernetes Mesh without spec parses."""
    res = from_document(
        {"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "metadata": {"name": "m"}}
    )
    assert res.key == Key(Kind.MESH, "", "m")


@pytest.mark.parametrize("spec", [[], "", 0, False, ["mtls"]])
def test_k8s_mesh_spec_that_is_not_a_map_is_named(spec: object) -> None:
    """An empty list or string is not a missing spec: refused, naming spec, not taken as {}."""
    doc = {"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "metadata": {"name": "m"}}
    with pytest.raises(InvalidResource) as e:
        from_document({**doc, "spec": spec})
    assert [(v.field, v.message) for v in e.value.errors] == [("spec", "must be a map")]
    assert from_document({**doc, "spec": None}).key == Key(Kind.MESH, "", "m")


def test_k8s_other_labels_kept() -> None:
    """Other Kubernetes labels are kept as resource labels."""
    res = from_document(k8s_secret(labels={"kuma.io/mesh": "default", "app": "web"}))
    assert dict(res.labels) == {"app": "web"}


def test_k8s_missing_mesh_label_means_mesh_default() -> None:
    """A system.kuma.io/secret without the kuma.io/mesh label belongs to mesh default, as in
    Kuma."""
    res = from_document(k8s_secret(labels={}))
    assert res.key == Key(Kind.SECRET, "default", res.name)
    assert "kuma.io/mesh" not in res.labels


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"kind": "ConfigMap"}, "kind"),
        ({"kind": None}, "kind"),
        ({"apiVersion": "v2"}, "apiVersion"),
        ({"apiVersion": None}, "apiVersion"),
        ({"type": "Opaque"}, "type"),
        ({"type": "kubernetes.io/tls"}, "type"),
        ({"type": None}, "type"),
        ({"metadata": None}, "metadata"),
        ({"metadata": "x"}, "metadata"),
        ({"data": None}, "data.value"),
        ({"data": {}}, "data.value"),
        ({"data": {"value": "!!"}}, "data.value"),
        ({"data": {"value": ""}}, "data.value"),
        ({"data": {"value": B64, "other": B64}}, "data.other"),
    ],
)
def test_k8s_wrong_fields_named(over: dict[str, object], field: str) -> None:
    """A wrong kind, apiVersion, type, metadata or data is refused naming that field."""
    with pytest.raises(InvalidResource) as e:
        from_document(k8s_secret(**over))
    assert field in fields_of(e)


def test_k8s_wrong_type_message_lists_expected_types() -> None:
    """The error for a wrong Secret type says which types are accepted."""
    with pytest.raises(InvalidResource) as e:
        from_document(k8s_secret(type="Opaque"))
    assert K8S_SECRET_TYPE in str(e.value) and K8S_GLOBAL_SECRET_TYPE in str(e.value)


def test_k8s_mesh_wrong_api_version() -> None:
    """A Kubernetes Mesh with apiVersion v1 is refused naming apiVersion."""
    with pytest.raises(InvalidResource) as e:
        from_document({"apiVersion": "v1", "kind": "Mesh", "metadata": {"name": "m"}})
    assert fields_of(e) == {"apiVersion"}


def test_k8s_mesh_unknown_spec_field() -> None:
    """A Kubernetes Mesh spec field this version does not know is refused naming it."""
    with pytest.raises(InvalidResource) as e:
        from_document(
            {
                "apiVersion": "kuma.io/v1alpha1",
                "kind": "Mesh",
                "metadata": {"name": "m"},
                "spec": {"bogus": 1},
            }
        )
    assert fields_of(e) == {"spec.bogus"}


@pytest.mark.parametrize("extra", ["stringData", "spec", "immutable", "mesh"])
def test_k8s_secret_unknown_top_level_field(extra: str) -> None:
    """An unknown top-level field in a Kubernetes Secret (e.g. stringData) is refused, named."""
    with pytest.raises(InvalidResource) as e:
        from_document(k8s_secret(**{extra: {"value": "x"}}))
    assert fields_of(e) == {extra}


@pytest.mark.parametrize("labels", [["a"], "abc", 5])
def test_k8s_labels_not_a_map(labels: object) -> None:
    """Kubernetes metadata.labels that are not a map give InvalidResource, not a crash."""
    with pytest.raises(InvalidResource) as e:
        from_document(k8s_secret(labels=labels))
    assert "metadata.labels" in fields_of(e)


def test_k8s_system_label_refused() -> None:
    """System labels are refused in the Kubernetes form too."""
    with pytest.raises(InvalidResource) as e:
        from_document(k8s_secret(labels={"kuma.io/mesh": "default", "kuma.io/origin": "zone"}))
    assert fields_of(e) == {"metadata.labels[kuma.io/origin]"}


def test_k8s_bad_name_and_mesh() -> None:
    """Invalid metadata.name and mesh label values are refused."""
    with pytest.raises(InvalidResource) as e:
        from_document(
            k8s_secret(
                metadata={"name": "Sample", "labels": {"kuma.io/mesh": "Default"}},
            )
        )
    assert fields_of(e) == {"metadata.name", "metadata.labels[kuma.io/mesh]"}


def test_k8s_missing_name() -> None:
    """A Kubernetes Secret without metadata.name is refused."""
    with pytest.raises(InvalidResource) as e:
        from_document(k8s_secret(metadata={"labels": {"kuma.io/mesh": "default"}}))
    assert fields_of(e) == {"metadata.name"}


def test_k8s_respects_limits() -> None:
    """The Kubernetes form applies the decoded size limit to data.value."""
    with pytest.raises(InvalidResource) as e:
        from_document(k8s_secret(), Limits(max_data_bytes=3))
    assert fields_of(e) == {"data.value"}


def test_k8s_round_trip() -> None:
    """to_kubernetes output parses back to the same resource, for every kind."""
    for res in (
        Resource(Kind.SECRET, "s", mesh="m", data=b"\x00\xff", labels={"a": "b"}),
        Resource(Kind.GLOBAL_SECRET, "g", data=b"x"),
        Resource(Kind.MESH, "m", labels={"x": "y"}),
    ):
        back = from_document(to_kubernetes(res))
        assert back == res


def test_to_kubernetes_shapes() -> None:
    """to_kubernetes gives type system.kuma.io/secret + mesh label, or global-secret."""
    s = to_kubernetes(Resource(Kind.SECRET, "s", mesh="m", data=b"test\n"))
    assert s["apiVersion"] == "v1" and s["kind"] == "Secret"
    assert s["type"] == K8S_SECRET_TYPE
    assert s["metadata"]["labels"]["kuma.io/mesh"] == "m"
    assert s["data"] == {"value": B64}
    g = to_kubernetes(Resource(Kind.GLOBAL_SECRET, "g", data=b"test\n"))
    assert g["type"] == K8S_GLOBAL_SECRET_TYPE
    assert "kuma.io/mesh" not in g["metadata"]["labels"]


# --------------------------------------------------------------------------- to_json


def test_to_json_universal_round_trip() -> None:
    """to_json output (Universal form) parses back to the same content."""
    res = Resource(
        Kind.SECRET,
        "s",
        mesh="m",
        data=b"\x00\x01secret",
        labels={"a": "b"},
        creation_time="2024-01-01T00:00:00Z",
        modification_time="2024-01-02T00:00:00Z",
        version=7,
    )
    out = to_json(res)
    assert out["type"] == "Secret" and out["mesh"] == "m" and out["name"] == "s"
    assert base64.b64decode(out["data"]) == res.data
    assert out["creationTime"] == res.creation_time
    back = from_document(out)
    assert back.same_content(res)


def test_to_json_extra_labels_added_not_stored() -> None:
    """extra_labels appear in the output without changing the resource."""
    res = Resource(Kind.GLOBAL_SECRET, "g", data=b"x", labels={"a": "b"})
    out = to_json(res, {"kuma.io/origin": "global"})
    assert out["labels"] == {"a": "b", "kuma.io/origin": "global"}
    assert "mesh" not in out
    assert dict(res.labels) == {"a": "b"}


def test_to_json_mesh_has_no_data() -> None:
    """A Mesh's JSON form has no data field, carries its spec fields, and never lets them
    shadow the common ones."""
    out = to_json(Resource(Kind.MESH, "m", spec={"extra": {"backends": []}, "name": "x"}))
    assert "data" not in out and "mesh" not in out
    assert out["extra"] == {"backends": []}
    assert out["name"] == "m" and out["type"] == "Mesh"


# --------------------------------------------------------------------------- from_json_body


def test_json_body_path_decides_identity() -> None:
    """A body without type/name/mesh takes them from the path."""
    res = from_json_body({"data": B64}, Kind.SECRET, "s1", "default")
    assert res.key == Key(Kind.SECRET, "default", "s1")
    g = from_json_body({"data": B64}, Kind.GLOBAL_SECRET, "g1")
    assert g.key == Key(Kind.GLOBAL_SECRET, "", "g1")
    m = from_json_body({}, Kind.MESH, "default")
    assert m.key == Key(Kind.MESH, "", "default")


def test_json_body_matching_fields_accepted() -> None:
    """A body whose type, name and mesh match the path is accepted."""
    body = {"type": "Secret", "name": "s1", "mesh": "default", "data": B64}
    assert from_json_body(body, Kind.SECRET, "s1", "default").data == b"test\n"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "other", "data": B64}, "name"),
        ({"mesh": "other", "data": B64}, "mesh"),
        ({"type": "GlobalSecret", "data": B64}, "type"),
    ],
)
def test_json_body_path_mismatch(body: dict[str, object], field: str) -> None:
    """A body disagreeing with the path on type, name or mesh is refused naming that field."""
    with pytest.raises(InvalidResource) as e:
        from_json_body(body, Kind.SECRET, "s1", "default")
    assert fields_of(e) == {field}


def test_json_body_invalid_path_name_reported() -> None:
    """A mismatch with an invalid path name also reports the path name."""
    with pytest.raises(InvalidResource) as e:
        from_json_body({"name": "x", "data": B64}, Kind.GLOBAL_SECRET, "Bad_Name")
    assert fields_of(e) == {"name"}
    assert len(e.value.errors) == 2


def test_json_body_not_object() -> None:
    """A body that is not a JSON object is refused."""
    with pytest.raises(InvalidResource):
        from_json_body([1, 2], Kind.SECRET, "s", "m")


def test_json_body_respects_limits() -> None:
    """from_json_body applies the Limits it is given."""
    with pytest.raises(InvalidResource) as e:
        from_json_body({"data": B64}, Kind.GLOBAL_SECRET, "g", limits=Limits(max_data_bytes=1))
    assert fields_of(e) == {"data"}


def test_json_body_does_not_mutate_input() -> None:
    """from_json_body does not modify the body it is given."""
    body = {"data": B64}
    from_json_body(body, Kind.SECRET, "s", "m")
    assert body == {"data": B64}


# --------------------------------------------------------------------------- Resource / Key


def test_repr_never_shows_data() -> None:
    """repr() and str() of a Resource show the size of data, never its bytes."""
    secret = b"hunter2-very-secret"
    res = Resource(Kind.SECRET, "s", mesh="m", data=secret)
    for text in (repr(res), str(res), f"{res}", repr([res]), repr({"r": res})):
        assert "hunter2" not in text
        assert base64.b64encode(secret).decode() not in text
        assert f"<{len(secret)} bytes>" in text


def test_invalid_resource_message_never_shows_data() -> None:
    """Validation errors never echo the data, valid or not."""
    with pytest.raises(InvalidResource) as e:
        from_document(secret_doc(name="Bad", data="c2VjcmV0LXZhbHVl"), Limits(max_data_bytes=1))
    assert "c2VjcmV0LXZhbHVl" not in str(e.value) and "secret-value" not in str(e.value)


def test_same_content_ignores_metadata() -> None:
    """same_content compares key, data, labels and spec, not times or version."""
    a = Resource(Kind.GLOBAL_SECRET, "g", data=b"x", labels={"a": "b"})
    b = a.with_meta(creation_time="t", modification_time="u", version=9)
    assert a.same_content(b)
    assert not a.same_content(a.with_meta(data=b"y"))
    assert not a.same_content(a.with_meta(labels={}))
    assert not a.same_content(a.with_meta(name="h"))


def test_with_meta_copies_and_refuses_unknown_fields() -> None:
    """with_meta returns a new resource with the given fields changed (as dataclasses.replace
    would) and refuses a field Resource does not have."""
    a = Resource(Kind.SECRET, "s", "m", data=b"x", labels={"a": "b"}, version=1)
    b = a.with_meta(version=2, modification_time="t")
    assert b == replace(a, version=2, modification_time="t") and b is not a
    assert a.version == 1
    with pytest.raises(TypeError, match="colour"):
        a.with_meta(colour="red")


def test_key_str() -> None:
    """A Key prints as kind mesh/name, or kind name without a mesh."""
    assert str(Key(Kind.SECRET, "m", "s")) == "Secret m/s"
    assert str(Key(Kind.GLOBAL_SECRET, "", "g")) == "GlobalSecret g"


def test_universal_mesh_mtls_must_be_map() -> None:
    """A Universal Mesh whose mtls is not a map is refused naming mtls."""
    with pytest.raises(InvalidResource) as e:
        from_document({"type": "Mesh", "name": "m", "mtls": "yes"})
    assert fields_of(e) == {"mtls"}


def test_k8s_mesh_mtls_must_be_map() -> None:
    """A Kubernetes Mesh whose spec.mtls is not a map is refused naming spec.mtls."""
    with pytest.raises(InvalidResource) as e:
        from_document(
            {
                "apiVersion": "kuma.io/v1alpha1",
                "kind": "Mesh",
                "metadata": {"name": "m"},
                "spec": {"mtls": ["x"]},
            }
        )
    assert fields_of(e) == {"spec.mtls"}


def test_k8s_mesh_unknown_top_level_field() -> None:
    """A Kubernetes Mesh with a top-level field it does not have (data) is refused, named."""
    with pytest.raises(InvalidResource) as e:
        from_document(
            {
                "apiVersion": "kuma.io/v1alpha1",
                "kind": "Mesh",
                "metadata": {"name": "m"},
                "data": {"value": B64},
            }
        )
    assert fields_of(e) == {"data"}


def test_k8s_null_labels_ok() -> None:
    """metadata.labels: null on a global secret is treated as no labels."""
    res = from_document(k8s_secret(labels=None, type=K8S_GLOBAL_SECRET_TYPE))
    assert dict(res.labels) == {}


def test_kubectl_output_shape_accepted() -> None:
    """A Secret as `kubectl get -o yaml` prints it (extra metadata fields) is accepted."""
    doc = k8s_secret()
    doc["metadata"] = {
        "name": "sample-secret",
        "namespace": "kuma-system",
        "labels": {"kuma.io/mesh": "default"},
        "creationTimestamp": "2024-01-01T00:00:00Z",
        "resourceVersion": "123",
        "uid": "abc",
    }
    assert from_document(doc).key == Key(Kind.SECRET, "default", "sample-secret")


def test_mesh_mtls_must_be_json() -> None:
    """A Mesh mtls holding YAML values JSON cannot carry (a date) is refused, not a crash later."""
    doc = yaml.safe_load("type: Mesh\nname: m\nmtls:\n  since: 2024-01-01\n")
    with pytest.raises(InvalidResource) as e:
        from_document(doc)
    assert fields_of(e) == {"mtls"}


def test_universal_kuma_mesh_label_must_agree_with_mesh() -> None:
    """In the Universal form a kuma.io/mesh label must equal mesh (then it is implied, not
    stored) and is refused on kinds without a mesh."""
    res = from_document(secret_doc(labels={"kuma.io/mesh": "default", "app": "web"}))
    assert dict(res.labels) == {"app": "web"}
    with pytest.raises(InvalidResource) as e:
        from_document(secret_doc(labels={"kuma.io/mesh": "other"}))
    assert fields_of(e) == {"labels[kuma.io/mesh]"}
    with pytest.raises(InvalidResource) as e:
        from_document({"type": "Mesh", "name": "m", "labels": {"kuma.io/mesh": "m"}})
    assert fields_of(e) == {"labels[kuma.io/mesh]"}


def test_of_builds_the_same_resource_as_the_constructor() -> None:
    """Resource.of (the decoders' fast path) gives a resource equal to the normal one,
    still frozen."""
    args = dict(
        kind=Kind.SECRET,
        name="s",
        mesh="m",
        data=b"x",
        labels={"a": "b"},
        spec={},
        creation_time="t",
        modification_time="u",
        version=3,
    )
    fast = Resource.of(**args)  # type: ignore[arg-type]
    assert fast == Resource(**args) and hash(fast.key) == hash(Resource(**args).key)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        fast.name = "t"  # type: ignore[misc]


@pytest.mark.parametrize("labels", [[], "", 0, False])
def test_labels_that_are_not_a_map_are_named_in_both_forms(labels: object) -> None:
    """An empty list or string is not "no labels": refused, not taken as {}."""
    with pytest.raises(InvalidResource) as e:
        from_document({"type": "Mesh", "name": "m", "labels": labels})
    assert [v.field for v in e.value.errors] == ["labels"]
    k8s = {"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh"}
    with pytest.raises(InvalidResource) as e:
        from_document({**k8s, "metadata": {"name": "m", "labels": labels}})
    assert [v.field for v in e.value.errors] == ["metadata.labels"]
    assert from_document({"type": "Mesh", "name": "m", "labels": None}).labels == {}
