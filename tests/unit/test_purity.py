"""The pure core imports no network, database, event loop or daemon code.

A core that never awaits, dials or reads the clock can be tested with events in and actions
out, no network: that is what keeps most protocol tests fast and exact.

Each check imports the core in a fresh interpreter and looks at sys.modules, so a forbidden
import anywhere in the core's import graph, direct or indirect, fails it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PURE = [
    "kds.protocol.session",
    "kds.protocol.zone_session",
    "kds.protocol.limits",
    "kds.protocol.read_budget",
    "kds.text",
    "kds.protocol.applier",
    "kds.protocol.batching",
    "kds.protocol.records",
    "kds.protocol.digest_tree",
    "kds.protocol.anti_entropy",
    "kds.protocol.admission",
    "kds.errors",
    "kds.fields",
    "kds.kubernetes",
    "kds.model",
    "kds.mtls",
    "kds.resource",
    "kds.safe_yaml",
    "kds.validation",
    "kds.wire",
]
# Not here: kds.integrity and kds.ca do no I/O either, but cryptography's x509 loads the
# socket module (through email.utils), which the probe below counts as forbidden.

# Top-level packages the core must never load. asyncio and socket are included: today the
# core's whole import graph (protobuf included) loads neither, and a core that awaits or
# dials is exactly what this check is for. kds.clock reads the clock; the core must not.
FORBIDDEN_TOP = {
    "grpc",
    "sqlite3",
    "_sqlite3",
    "aiohttp",
    "asyncio",
    "socket",
    "ssl",
    "structlog",
    "tenacity",
    "globalcp",
    "zonecp",
    "kdsctl",
}
FORBIDDEN_PREFIXES = ("kds.store", "kds.clock", "kds.api", "kds.runtime", "kds.grpc_options")

PROBE = """
import json, sys
for name in {modules!r}:
    __import__(name)
top, prefixes = set({top!r}), tuple({prefixes!r})
print(json.dumps(sorted(
    m for m in sys.modules
    if m.split(".")[0] in top or any(m == p or m.startswith(p + ".") for p in prefixes)
)))
"""


def loaded_forbidden(modules: list[str]) -> list[str]:
    code = PROBE.format(modules=modules, top=sorted(FORBIDDEN_TOP), prefixes=FORBIDDEN_PREFIXES)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out))


def test_pure_core_loads_nothing_forbidden() -> None:
    """Importing the whole pure core loads no grpc, sqlite3, asyncio, socket, daemon or store."""
    assert loaded_forbidden(PURE) == []


@pytest.mark.parametrize("module", PURE)
def test_each_core_module_alone_is_pure(module: str) -> None:
    """Each core module on its own loads nothing forbidden (names the culprit on failure)."""
    assert loaded_forbidden([module]) == []


def test_probe_catches_a_forbidden_import() -> None:
    """The probe is not blind: importing grpc beside the core is reported."""
    assert "grpc" in loaded_forbidden([*PURE, "grpc"])
    assert "kds.store" in loaded_forbidden([*PURE, "kds.store"])
