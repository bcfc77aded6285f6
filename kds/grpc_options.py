"""gRPC channel and server options, one place for both ends so they stay consistent.

Measured here (see the README's design notes): with keepalive on, the HTTP/2 ping timeout
defaults to one minute; setting ``grpc.http2.ping_timeout_ms`` brings dead-peer detection down
to keepalive interval + timeout. tests/integration/test_dead_peer.py proves the figure, so a
grpcio upgrade that changes it is caught.
"""

from __future__ import annotations

__all__ = ["MAX_STREAMS_PER_CONNECTION", "client_options", "server_options"]


def _common(max_message_bytes: int, interval: float, timeout: float) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(interval * 1000)),
        ("grpc.keepalive_timeout_ms", int(timeout * 1000)),
        ("grpc.http2.ping_timeout_ms", int(timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


# What any client of the sync port, token or not, can make global hold. gRPC's defaults let a
# connection sit in its TLS handshake for 120 s, stay open without a call for ever, and be
# one of any number: 3,000 connections that sent a few bytes of a handshake held 3,000 file
# descriptors and took global from 80 to 147 MB for two minutes (223 MB after). A zone's
# connection always carries its stream, so it is never idle.
HANDSHAKE_TIMEOUT_MS = 10_000
MAX_CONNECTION_IDLE_MS = 60_000
# Streams one connection may have open at once (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS; a
# client's further streams wait for a free one). A zone dials a connection for each stream.
# gRPC's default is no limit: one connection with no token opened 20,000 streams, each
# held until its hello timed out, and took global from 75 to 440 MB.
MAX_STREAMS_PER_CONNECTION = 4


def server_options(
    max_message_bytes: int, interval: float, timeout: float, max_connections: int
) -> list[tuple[str, int]]:
    return [
        *_common(max_message_bytes, interval, timeout),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # Zones ping as often as global does; never cut them off for it.
        ("grpc.http2.min_ping_interval_without_data_ms", max(100, int(interval * 1000) // 2)),
        ("grpc.http2.max_ping_strikes", 0),
        # grpc sets SO_REUSEPORT by default: a second global on the same port would start and
        # share the zones with the first. Refuse it instead ("cannot listen there").
        ("grpc.so_reuseport", 0),
        # Without a read waiting, a stream's data is held up to its HTTP/2 window, which
        # bandwidth-delay probes grow: a client never read took global to 538 MB with 256
        # streams (15 MB without the probes: 64 KiB each). What zones send is small, and a
        # waiting read opens the window to the message's size anyway.
        ("grpc.http2.bdp_probe", 0),
    ]


def client_options(
    max_message_bytes: int, interval: float, timeout: float
) -> list[tuple[str, int]]:
    return [
        *_common(max_message_bytes, interval, timeout),
        ("grpc.min_reconnect_backoff_ms", 100),
        # A fixed 4 MiB receive window instead of one grown by bandwidth-delay probes: the
        # probes are HTTP/2 pings on every burst of data, each a write on the zone and a read
        # and a write on global (about 5% of both sides' CPU per single write to 10 zones);
        # global's own window (1 MiB per zone) stays below it, so the link is never the
        # limit (30,000 secrets through a link with 50 ms each way: 1.42 s, 1.47 s before).
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 4 << 20),
        # A connection of each channel's own: grpc otherwise shares one among a process's
        # channels to the same address with the same options, and global lets a connection
        # hold MAX_STREAMS_PER_CONNECTION streams, so the fifth zone client of a process
        # (tests, the benchmark's fleets, a program embedding several) waited for ever.
        ("grpc.use_local_subchannel_pool", 1),
    ]
