"""What a zone sends global is checked and bounded: escaping (kds.text), hello limits, the
session's check of rejections, the zone tracker's bounds, the log throttle, kdsctl's printing."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import structlog
from click.testing import CliRunner

from globalcp.tokens import KID_LOGGED, TokenRefused, ZoneTokens
from globalcp.zones import CONFLICTS_KEPT, ERROR_CHARS, ZoneState, ZoneStatusView
from kds.errors import ProtocolError
from kds.logging import escape_control_characters
from kds.model import Key, Kind
from kds.protocol.limits import MAX_REVISION, check_hello, check_key
from kds.protocol.session import (
    STALE_REJECTIONS,
    Ack,
    GlobalSession,
    Hello,
    Mode,
    SendRange,
    SendSnapshot,
)
from kds.store import open_global_store
from kds.text import bound, escape, safe_text
from kds.throttle import Throttle
from kdsctl.cli import cli

FORGED = "\x1b[2J\x1b[H\x1b[32mall zones healthy\x1b[0m\r\n\u202eevil"

# --------------------------------------------------------------------------- kds.text


def test_escape_makes_every_hidden_character_visible() -> None:
    assert escape("zone-a-1f2e3d4c") == "zone-a-1f2e3d4c"
    assert escape("ünïcode ok ✓") == "ünïcode ok ✓"
    out = escape(FORGED)
    assert out.isprintable() and "\x1b" not in out and "\n" not in out
    assert out.startswith("\\x1b[2J\\x1b[H") and "\\x0d\\x0a" in out and "\\u202e" in out
    assert escape("\x00\x7f\x85\u2028\U000e0001") == "\\x00\\x7f\\x85\\u2028\\U000e0001"


def test_bound_and_safe_text_cut_long_text_and_say_so() -> None:
    assert bound("abc", 3) == "abc"
    assert bound("x" * 10, 4) == "xxxx...[6 more characters]"
    huge = "\x1b" * 4_000_000
    out = safe_text(huge, 100)
    assert len(out) < 500 and out.isprintable() and "3999900 more characters" in out
    assert safe_text(12) == "12"


def test_log_lines_escape_control_characters() -> None:
    event = {"event": "zone refused", "instance": FORGED, "conflicts": ["a\x1bb"], "n": 3}
    out = escape_control_characters(None, "warning", dict(event))
    assert out["instance"] == escape(FORGED) and out["conflicts"] == ["a\\x1bb"] and out["n"] == 3
    line = structlog.dev.ConsoleRenderer(colors=False)(None, "warning", out)
    assert "\x1b" not in line and "\n" not in line and "\r" not in line
    tb = escape_control_characters(None, "error", {"exception": "Traceback\n\tline\x1b"})
    assert tb["exception"] == "Traceback\n\tline\\x1b"  # a traceback keeps its lines


# --------------------------------------------------------------------------- hello limits

_HELLO = {
    "instance_id": "zone-a-1f2e3d4c",
    "software_version": "0.1.0",
    "store_backend": "sqlite",
    "store_id": "0123456789abcdef0123456789abcdef",
    "revision": 12,
    "chain": b"\x01" * 16,
}


def test_a_well_formed_hello_passes() -> None:
    assert check_hello(**_HELLO) is None  # type: ignore[arg-type]
    longest = {**_HELLO, "instance_id": "z" * 253 + "-1f2e3d4c", "revision": MAX_REVISION}
    assert check_hello(**longest) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("instance_id", "x" * 4_000_000, "hello.instance_id: must be at most 300 characters"),
        ("instance_id", FORGED, "hello.instance_id: must be printable text"),
        ("software_version", "v" * 129, "hello.software_version: must be at most 128"),
        ("store_backend", "s" * 65, "hello.store_backend: must be at most 64"),
        ("store_id", "i" * 65, "hello.resume.global_store_id: must be at most 64"),
        ("chain", b"c" * 65, "hello.resume.chain: must be at most 64 bytes"),
        ("revision", 2**63, "hello.resume.revision: must be at most 9223372036854775807"),
        ("revision", 2**64 - 1, "hello.resume.revision"),
    ],
)
def test_a_hello_field_over_its_limit_is_named_never_echoed(
    field: str, value: Any, expected: str
) -> None:
    problem = check_hello(**{**_HELLO, field: value})  # type: ignore[arg-type]
    assert problem is not None and str(problem).startswith(expected)
    assert len(str(problem)) < 120


def test_reported_keys_must_be_known_kinds_and_valid_names() -> None:
    assert check_key(Kind.SECRET, "default", "db", "k") is None
    assert check_key(Kind.GLOBAL_SECRET, "", "g", "k") is None
    assert str(check_key(None, "", "g", "k")) == "k: kind is not one this protocol knows"
    assert str(check_key(Kind.SECRET, "", "db", "k")).startswith("k.mesh: must be a non-empty")
    assert str(check_key(Kind.MESH, "default", "m", "k")) == "k.mesh: must be empty for a Mesh"
    assert str(check_key(Kind.GLOBAL_SECRET, "", "A\x1b", "k")).startswith("k.name: must be an")
    assert "at most 253" in str(check_key(Kind.GLOBAL_SECRET, "", "a" * 300, "k"))


# --------------------------------------------------------------------------- session


def _snapshot_session(*parts: list[Key]) -> GlobalSession:
    """A session that sent a snapshot (revision 5) in batches 1.. holding ``parts``."""
    s = GlobalSession("store-1", max_unacked=8)
    assert s.on_hello(Hello("zone-a", "i", 1, "", 0), head=5, log_floor=0) is Mode.SNAPSHOT
    assert isinstance(s.next_action(5, 0), SendSnapshot)
    for i, keys in enumerate(parts):
        s.on_sent(s.next_seq(), 5, i == len(parts) - 1, keys)
    s.on_done()
    return s


def _sending_session(keys: list[Key]) -> GlobalSession:
    """A session that sent one range batch (seq 1, revisions 3 to 5) holding ``keys``."""
    s = GlobalSession("store-1", max_unacked=8)
    hello = Hello("zone-a", "i", 1, "store-1", 3, b"chain")
    assert s.on_hello(hello, head=5, log_floor=0, chain_at_revision=b"chain") is Mode.RESUME
    assert isinstance(s.next_action(5, 0), SendRange)
    s.on_sent(s.next_seq(), 5, True, keys)
    s.on_done()
    return s


A = Key(Kind.SECRET, "default", "a")
B = Key(Kind.GLOBAL_SECRET, "", "b")


def test_rejections_of_what_the_batch_held_are_accepted() -> None:
    s = _sending_session([A, B])
    (done,) = s.on_ack(Ack(1, 5, (B, A)))
    assert done.seq == 1 and s.acked_revision == 5


@pytest.mark.parametrize(
    ("rejected", "message"),
    [
        ((A, B, A), "ack for batch 1 rejects 3 resources but the batch allows 2"),
        ((Key(Kind.GLOBAL_SECRET, "", "never-sent"),), "rejection 0 names a resource the batch"),
        ((A, None), "rejection 1 names a resource the batch did not hold"),
        ((A, A), "rejection 1 rejects a resource a second time"),
    ],
)
def test_rejections_beyond_the_batch_are_a_protocol_error(
    rejected: tuple[Key | None, ...], message: str
) -> None:
    s = _sending_session([A, B])
    with pytest.raises(ProtocolError, match=message):
        s.on_ack(Ack(1, 5, rejected))


def test_a_snapshot_s_last_part_may_reject_deletes_of_copies_it_left_out() -> None:
    """The final part of a snapshot also removes, on the zone, the copies the snapshot did not
    carry; a zone may refuse such a delete (a Mesh its own secrets still live in)."""
    left_out = Key(Kind.MESH, "", "payments")
    s = _snapshot_session([A], [B])
    (_, done) = s.on_ack(Ack(2, 5, (B, left_out)))
    assert done.seq == 2 and s.acked_revision == 5


@pytest.mark.parametrize(
    ("seq", "rejected", "message"),
    [
        # An earlier part removes nothing: it may reject only what it held.
        (1, (Key(Kind.MESH, "", "m"),), "rejection 0 names a resource the batch did not hold"),
        (2, (Key(Kind.MESH, "", "m"),) * 2, "rejection 1 rejects a resource a second time"),
        (2, (None,), "rejection 0 names a resource the batch did not hold"),
    ],
)
def test_a_snapshot_s_rejections_are_still_checked(
    seq: int, rejected: tuple[Key | None, ...], message: str
) -> None:
    s = _snapshot_session([A], [B])
    with pytest.raises(ProtocolError, match=message):
        s.on_ack(Ack(seq, 5, rejected))


def test_a_snapshot_s_last_part_rejects_a_bounded_number_of_copies_it_left_out() -> None:
    s = _snapshot_session([A])
    limit = 1 + STALE_REJECTIONS
    assert s.rejections_allowed(1) == limit
    flood = tuple(Key(Kind.GLOBAL_SECRET, "", f"g-{i}") for i in range(limit + 1))
    with pytest.raises(ProtocolError, match=f"rejects {limit + 1} resources but the batch allows"):
        s.on_ack(Ack(1, 5, flood))
    s = _snapshot_session([A])
    (done,) = s.on_ack(Ack(1, 5, flood[:limit]))
    assert done.seq == 1


def test_twenty_thousand_rejections_of_a_one_change_batch_end_the_stream() -> None:
    s = _sending_session([A])
    flood = tuple(Key(Kind.GLOBAL_SECRET, "", f"g-{i}") for i in range(20_000))
    with pytest.raises(ProtocolError, match="rejects 20000 resources but the batch allows 1"):
        s.on_ack(Ack(1, 5, flood))


def _ack_reader(session: GlobalSession) -> Any:
    """The stream's ack handling, on ``session`` (no grpc, no zone status)."""
    from types import SimpleNamespace

    from globalcp.stream import ZoneStream

    stream = ZoneStream.__new__(ZoneStream)
    stream.link = SimpleNamespace(session=session, status=None)  # type: ignore[assignment]
    return stream


def _flood(seq: int, n: int) -> Any:
    from kds._pb import sync_pb2 as pb

    key = pb.ResourceKey(kind=pb.GLOBAL_SECRET, name="g")
    return pb.Ack(seq=seq, applied_revision=5, rejected=[pb.Rejection(key=key)] * n)


@pytest.mark.parametrize(
    ("seq", "message"),
    [
        (1, "ack for batch 1 rejects 200000 resources but the batch allows 1"),
        (99, "ack for batch 99, but the batches in flight are 1 to 1"),
    ],
)
def test_a_flood_of_rejections_is_refused_before_a_key_is_read(
    seq: int, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ack is counted against the batch it names before its keys are read: building the
    keys of 440,000 rejections took global's event loop over a second."""
    import globalcp.stream

    read: list[object] = []
    monkeypatch.setattr(globalcp.stream, "_rejected_key", lambda r: read.append(r))
    stream = _ack_reader(_sending_session([A]))
    with pytest.raises(ProtocolError, match=message):
        stream._on_ack(_flood(seq, 200_000))
    assert read == []


# --------------------------------------------------------------------------- zone state


def test_saved_state_is_bounded_when_loaded() -> None:
    saved = {
        "last_error": "refused instance " + "x" * 4_000_000 + FORGED,
        "disconnect_reason": FORGED,
        "conflicts": [f"GlobalSecret:c-{i}" for i in range(30_000)],
    }
    s = ZoneState.from_json("zone-a", json.dumps(saved))
    assert len(s.last_error) < ERROR_CHARS + 100 and s.last_error.isprintable()
    assert s.disconnect_reason == escape(FORGED)
    assert len(s.conflicts) == CONFLICTS_KEPT
    summary = ZoneStatusView(s, 0, 0.0).summary()
    assert summary["conflictCount"] == CONFLICTS_KEPT  # older saves kept no total


# --------------------------------------------------------------------------- throttle


def test_throttle_lets_a_burst_through_per_key_then_counts() -> None:
    now = [0.0]
    t = Throttle(10, burst=2, max_keys=2, clock=lambda: now[0])
    assert [t.allow("a") for _ in range(5)] == [0, 0, None, None, None]
    assert t.allow("b") == 0
    # c, d and e share the overflow slot: a burst of two
    assert [t.allow("c"), t.allow("d"), t.allow("e")] == [0, 0, None]
    now[0] = 10.0
    assert t.allow("a") == 3  # a new interval: the line says 3 were held back


def test_throttle_says_whether_a_key_spent_its_burst_without_counting() -> None:
    now = [0.0]
    t = Throttle(10, burst=2, clock=lambda: now[0])
    assert not t.spent("a")
    t.allow("a")
    assert not t.spent("a") and not t.spent("a")  # asking counts nothing
    t.allow("a")
    assert t.spent("a") and not t.spent("b")
    now[0] = 10.0
    assert not t.spent("a")  # a new interval
    assert t.allow("a") == 0


# --------------------------------------------------------------------------- kdsctl


class _FakeGlobal(BaseHTTPRequestHandler):
    """Global's API answering with what a hostile zone might have made it hold."""

    answers: dict[str, Any] = {
        "/": {"role": "global"},
        "/zones": {
            "globalRevision": 3,
            "items": [
                {
                    "name": "zone-a",
                    "status": "Online",
                    "zoneVersion": FORGED,
                    "storeBackend": "sqlite\x1b]0;title\x07",
                    "ackedRevision": 3,
                    "problem": {"message": "disk full: " + FORGED, "since": "2024-01-01T00:00:00Z"},
                }
            ],
        },
        "/zones/zone-a/_overview": {
            "type": "ZoneOverview",
            "name": "zone-a",
            "kdsSync": {
                "name": "zone-a",
                "status": "Offline",
                "disconnectedAt": "2024-01-01T00:00:00Z",
                "disconnectReason": FORGED,
                "instanceId": FORGED,
                "zoneVersion": FORGED,
                "ackedRevision": 3,
                "globalRevision": 3,
                "lastError": {"message": FORGED, "time": "2024-01-01T00:00:00Z"},
                "resources": {"Secret\x1b[1m": {"sent": 1, "acknowledged": 1, "rejected": 0}},
                "conflicts": [f"GlobalSecret:c\x1b[31m{i}" for i in range(3)],
                "conflictCount": 30_000,
                "lastSyncMode": FORGED,
                "problem": {"message": "disk full: " + FORGED, "since": "2024-01-01T00:00:00Z"},
            },
        },
        "/zones/zone-a/events?limit=10": {
            "name": "zone-a",
            "events": [
                {"time": "2024-01-01T00:00:00Z", "type": "disconnected", "reason": FORGED},
                {"time": "2024-01-01T00:00:01Z", "type": FORGED},
                {
                    "time": "2024-01-01T00:00:02Z",
                    "type": "conflicts",
                    "count": 2,
                    "started": [FORGED],
                    "startedCount": 2,
                },
            ],
            "lag": [{"time": "2024-01-01T00:00:00Z", "revisions": 4, "seconds": 1.5}],
        },
    }

    def do_GET(self) -> None:
        body = json.dumps(self.answers[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_global() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGlobal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("args", [["inspect", "zone", "zone-a"], ["inspect", "zones"]])
def test_kdsctl_prints_peer_text_escaped(fake_global: str, args: list[str]) -> None:
    res = CliRunner().invoke(cli, ["--api-url", fake_global, "--token", "t", *args])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\r" not in res.output and "\u202e" not in res.output
    assert "\\x1b[32mall zones healthy" in res.output
    # The problem the zone reported is shown, escaped, in the list and in the detail.
    assert "disk full: " in res.output and "(since " in res.output
    if "zone" in args:
        assert "Conflicts (30000, the first 3 shown):" in res.output
        assert "GlobalSecret:c\\x1b[31m0" in res.output
        assert "at most 4 revision(s) behind" in res.output and "(+1 more)" in res.output


# --------------------------------------------------------------------------- token key ids


@pytest.mark.parametrize("kid", [FORGED * 2000, "zone-token-signing-key-9", None])
async def test_a_token_s_unknown_key_id_is_never_echoed_to_the_peer(
    tmp_path: Path, kid: object
) -> None:
    """The peer is told a fixed reason; global's log gets the key id cut and escaped."""
    store = open_global_store(tmp_path / "global.db")
    try:
        tokens = ZoneTokens(store, issuer="test")
        await tokens.load()
        headers = {} if kid is None else {"kid": kid}
        forged = jwt.encode({"sub": "zone-a"}, "k" * 32, algorithm="HS256", headers=headers)
        with pytest.raises(TokenRefused) as e:
            tokens.verify(forged, "zone-a", dt.datetime.now(dt.UTC))
        assert e.value.reason == (
            "zone token signed by a key this global does not hold (removed, or never made "
            "here): generate a new token"
        )
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert len(e.value.detail) < 6 * KID_LOGGED + 40  # escaping makes a character 6 at most
        assert "\x1b" not in e.value.detail and "\u202e" not in e.value.detail
        assert e.value.detail == (
            "kid missing" if kid is None else f"kid {safe_text(kid, KID_LOGGED)}"
        )
    finally:
        store.close()


@pytest.mark.parametrize(
    ("listed", "count", "total"),
    [(1000, 250_000, 250_000), (3000, 0, 3000), (500, 7, 500)],
    ids=["the first 1000 and the count", "an older zone: all of them", "a count below the list"],
)
def test_a_status_report_counts_the_conflicts_it_says_it_holds(
    listed: int, count: int, total: int
) -> None:
    from globalcp.stream import ZoneStream
    from kds._pb import sync_pb2 as pb

    keys = [pb.ResourceKey(kind=pb.SECRET, mesh="default", name=f"c-{i}") for i in range(listed)]
    stream = ZoneStream.__new__(ZoneStream)
    report = pb.ZoneStatus(conflicts=keys, conflict_count=count)
    _, kept, got = stream._checked_status(report)
    assert len(kept) == CONFLICTS_KEPT and got == total
