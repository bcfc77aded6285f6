"""The bounds global puts on what a zone sends it, checked before anything else uses it. Pure.

A zone's hello is read before its token is verified, so each of its fields is checked
against a fixed limit first: a field over its limit (or a string with a non-printable
character) refuses the stream with a message naming the field and the limit, never the value.
A conflict a zone reports names a resource by kind, mesh and name: it must be a kind this
protocol knows and names global would accept (kds.validation). The problem a zone reports
in its status (why it is failing) is text for an operator: at most PROBLEM_CHARS characters;
it is escaped (kds.text) wherever it is shown, not refused for what it contains.
"""

from __future__ import annotations

from kds.errors import FieldViolation
from kds.resource import Kind
from kds.validation import validate_name

__all__ = [
    "HELLO_BYTES",
    "HELLO_CHARS",
    "MAX_REVISION",
    "PROBLEM_CHARS",
    "REASON_CHARS",
    "check_hello",
    "check_key",
    "check_problem",
]

# The most characters of each string a hello carries. A zone's instance id is its name (at
# most 253 characters), a dash and 8 hex digits; a store id is 32 hex digits.
HELLO_CHARS = {
    "hello.instance_id": 300,
    "hello.software_version": 128,
    "hello.store_backend": 64,
    "hello.resume.global_store_id": 64,
}
# The most bytes of each bytes field a hello carries (a history chain is 16 bytes).
HELLO_BYTES = {"hello.resume.chain": 64}
# Revisions are SQLite integers: signed 64-bit.
MAX_REVISION = 2**63 - 1
# The most characters of a rejection's reason global keeps or logs.
REASON_CHARS = 200
# The most characters of the problem a zone reports in its status (an error message and the
# fix it names; a store's path in it can be long).
PROBLEM_CHARS = 1024


def check_hello(
    *,
    instance_id: str,
    software_version: str,
    store_backend: str,
    store_id: str,
    revision: int,
    chain: bytes,
) -> FieldViolation | None:
    """The first field of a hello that breaks its limit, or None."""
    strings = {
        "hello.instance_id": instance_id,
        "hello.software_version": software_version,
        "hello.store_backend": store_backend,
        "hello.resume.global_store_id": store_id,
    }
    for name, value in strings.items():
        limit = HELLO_CHARS[name]
        if len(value) > limit:
            return FieldViolation(name, f"must be at most {limit} characters (got {len(value)})")
        if not value.isprintable():
            return FieldViolation(name, "must be printable text (no control characters)")
    if len(chain) > HELLO_BYTES["hello.resume.chain"]:
        limit = HELLO_BYTES["hello.resume.chain"]
        return FieldViolation(
            "hello.resume.chain", f"must be at most {limit} bytes (got {len(chain)})"
        )
    if not 0 <= revision <= MAX_REVISION:
        return FieldViolation("hello.resume.revision", f"must be at most {MAX_REVISION} (2^63-1)")
    return None


def check_key(kind: Kind | None, mesh: str, name: str, field_name: str) -> FieldViolation | None:
    """Whether a resource key a zone reported names something global could have sent: a
    known kind, a mesh exactly for a Secret, and valid names."""
    if kind is None:
        return FieldViolation(field_name, "kind is not one this protocol knows")
    if kind is Kind.SECRET:
        errs = validate_name(mesh, f"{field_name}.mesh")
    elif mesh:
        errs = [FieldViolation(f"{field_name}.mesh", f"must be empty for a {kind}")]
    else:
        errs = []
    errs = errs or validate_name(name, f"{field_name}.name")
    return errs[0] if errs else None


def check_problem(problem: str) -> FieldViolation | None:
    """Whether the problem text a zone reported is within its bound (never echoed)."""
    if len(problem) > PROBLEM_CHARS:
        return FieldViolation(
            "status.problem", f"must be at most {PROBLEM_CHARS} characters (got {len(problem)})"
        )
    return None
