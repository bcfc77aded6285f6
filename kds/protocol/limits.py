"""The bounds global puts on what a zone sends it, checked before anything else uses it. Pure.

Each field of a zone's hello is checked against a fixed limit before global uses it (global
reads the hello only once the stream's token verified, but a zone's token holder may be
hostile): a field over its limit (or a string with a non-printable
character) refuses the stream with a message naming the field and the limit, never the value.
A conflict a zone reports names a resource by kind, mesh and name: it must be a kind this
protocol knows and names global would accept (kds.validation). The problem a zone reports
in its status (why it is failing) is text for an operator: at most PROBLEM_CHARS characters;
it is escaped (kds.text) wherever it is shown, not refused for what it contains. A zone lists
at most CONFLICTS_REPORTED conflicts in a report.

The other way, a zone checks the fields of global's welcome and of each batch's header that
it records and sends back in every later hello (the store id, the revision, the history
chain) against the same limits: a value over them would be stored, and an honest global
would then refuse every hello the zone makes.
"""

from __future__ import annotations

from kds.errors import FieldViolation
from kds.resource import Kind
from kds.validation import validate_name

__all__ = [
    "CONFLICTS_REPORTED",
    "HELLO_BYTES",
    "HELLO_CHARS",
    "MAX_REVISION",
    "PROBLEM_CHARS",
    "REASON_CHARS",
    "WELCOME_CHARS",
    "check_batch_header",
    "check_heartbeat",
    "check_hello",
    "check_key",
    "check_problem",
    "check_welcome",
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
# The most characters of each string a welcome carries: global's instance id ("global-" and 8
# hex digits) and its store id, which the zone sends back as hello.resume.global_store_id.
WELCOME_CHARS = {
    "welcome.global_instance_id": 300,
    "welcome.global_store_id": HELLO_CHARS["hello.resume.global_store_id"],
}
# Revisions are SQLite integers: signed 64-bit.
MAX_REVISION = 2**63 - 1
# The most characters of a rejection's reason global keeps or logs.
REASON_CHARS = 200
# The most characters of the problem a zone reports in its status (an error message and the
# fix it names; a store's path in it can be long).
PROBLEM_CHARS = 1024
# The most conflicts a zone lists in a status report, with their count beside them when it
# holds more (global keeps the first 100 and the count). A report listing all of them grew
# with the zone: 100,000 conflicts with 20-character names were 3.5 MB, close to the 4 MiB a
# message may be, and sent again at every change. 1,000 keys are at most about 520 KB (names
# of 253 characters), 35 KB with short names.
CONFLICTS_REPORTED = 1000


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
    return (
        _check_text(strings, HELLO_CHARS)
        or _check_bytes("hello.resume.chain", chain)
        or _check_revisions({"hello.resume.revision": revision})
    )


def _check_bytes(name: str, value: bytes) -> FieldViolation | None:
    limit = HELLO_BYTES["hello.resume.chain"]  # the one bytes field: a history chain
    if len(value) > limit:
        return FieldViolation(name, f"must be at most {limit} bytes (got {len(value)})")
    return None


def _check_text(fields: dict[str, str], limits: dict[str, int]) -> FieldViolation | None:
    for name, value in fields.items():
        limit = limits[name]
        if len(value) > limit:
            return FieldViolation(name, f"must be at most {limit} characters (got {len(value)})")
        if not value.isprintable():
            return FieldViolation(name, "must be printable text (no control characters)")
    return None


def _check_revisions(fields: dict[str, int]) -> FieldViolation | None:
    for name, value in fields.items():
        if not 0 <= value <= MAX_REVISION:
            return FieldViolation(name, f"must be at most {MAX_REVISION} (2^63-1)")
    return None


def check_welcome(*, instance_id: str, store_id: str, head_revision: int) -> FieldViolation | None:
    """On the zone: the first field of global's welcome that breaks its limit, or None."""
    return _check_text(
        {"welcome.global_instance_id": instance_id, "welcome.global_store_id": store_id},
        WELCOME_CHARS,
    ) or _check_revisions({"welcome.head_revision": head_revision})


def check_heartbeat(head_revision: int) -> FieldViolation | None:
    """On the zone: a heartbeat's revision, if it breaks its limit (the zone shows it as
    global's revision in its status and metrics)."""
    return _check_revisions({"heartbeat.head_revision": head_revision})


def check_batch_header(
    *, from_revision: int, revision: int, head_revision: int, chain: bytes
) -> FieldViolation | None:
    """On the zone: the first field of a batch's header that breaks its limit, or None."""
    return _check_bytes("batch.chain", chain) or _check_revisions(
        {
            "batch.from_revision": from_revision,
            "batch.revision": revision,
            "batch.head_revision": head_revision,
        }
    )


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
