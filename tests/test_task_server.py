"""The task server against strangers (no Flux): where it listens, how many it
serves, how long an unauthenticated peer may stay, and how much it logs."""

import logging
import socket
import time

import pytest

from parsl_flux import protocol, task_server
from parsl_flux.rejects import RejectLog
from parsl_flux.task_server import TaskServer


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(task_server, "HANDSHAKE_TIMEOUT", 0.5)
    srv = TaskServer(protocol.new_secret(), lambda *event: None, host="127.0.0.1", max_connections=4)
    srv.start()
    yield srv
    srv.stop()


def _closed_by_peer(sock, timeout=3.0):
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_listens_on_loopback_only_for_a_one_node_block(server):
    assert server._tcp.server_address[0] == "127.0.0.1"


def test_an_unauthenticated_idle_connection_is_dropped(server):
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        assert len(idle.recv(protocol.NONCE_BYTES)) == protocol.NONCE_BYTES
        start = time.monotonic()
        assert _closed_by_peer(idle)
        assert time.monotonic() - start < 2.5


def test_connections_beyond_the_cap_are_refused(server, monkeypatch):
    monkeypatch.setattr(task_server, "HANDSHAKE_TIMEOUT", 30)  # hold the first four open
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        for s in held:
            s.recv(protocol.NONCE_BYTES)
        with socket.create_connection(("127.0.0.1", server.port)) as extra:
            assert extra.recv(protocol.NONCE_BYTES) == b"", "a fifth connection was served"
    finally:
        for s in held:
            s.close()


def test_a_huge_body_from_a_keyless_peer_is_never_read(server):
    """A header announcing 1 TiB with a wrong MAC is refused on its 72 bytes."""
    with socket.create_connection(("127.0.0.1", server.port)) as peer:
        peer.recv(protocol.NONCE_BYTES)
        fields = protocol.Kind.RESULT.encode().ljust(16, b"\0") + (0).to_bytes(8, "big") + bytes(8) \
            + (1 << 40).to_bytes(8, "big")
        peer.sendall(fields + b"\0" * 32)
        assert _closed_by_peer(peer)


def test_rejects_are_logged_at_a_limited_rate(caplog):
    log = RejectLog(logging.getLogger("test.rejects"), burst=3, window=60)
    with caplog.at_level(logging.WARNING, logger="test.rejects"):
        for i in range(1000):
            log.reject("rejected %d", i)
    assert len(caplog.records) == 3
    assert log.suppressed == 997
