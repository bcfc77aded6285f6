"""What any client of the sync port, with or without a token, can make global hold: at most
--kds-max-connections connections (one more is closed at once), each in its TLS handshake
for at most 10 s (kds.grpc_options). A zone connects once the slots are free again."""

from __future__ import annotations

import socket
import time

from tests.integration.conftest import Cluster

MOST = 4
PARTIAL_TLS = b"\x16\x03\x01\x00"  # the start of a TLS record header, never completed


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_beyond_the_most_and_stalled_handshakes_are_closed(cluster: Cluster) -> None:
    cluster.start_global("--kds-max-connections", str(MOST))
    held = []
    for _ in range(MOST):
        s = socket.create_connection(("127.0.0.1", cluster.kds_port))
        s.sendall(PARTIAL_TLS)
        held.append(s)
    time.sleep(0.5)  # accepted and counted
    extra = socket.create_connection(("127.0.0.1", cluster.kds_port))
    try:
        assert _closed_within(extra, 3), "a connection beyond the most was kept"
    finally:
        extra.close()
    start = time.monotonic()
    for s in held:
        assert _closed_within(s, 20), "a stalled TLS handshake was kept past its timeout"
        s.close()
    waited = time.monotonic() - start
    assert waited < 20, waited
    # The slots are free: a real zone connects and syncs.
    z = cluster.start_zone("zone-after")
    assert z.get_json("/meshes/default")
