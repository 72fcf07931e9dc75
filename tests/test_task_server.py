"""The task server against strangers (no Flux): where it listens, how many it
serves, how long an unauthenticated peer may stay, whom it serves as whom,
and how much it logs. Strangers run as another local user (``nobody``); the
Flux job of an AF_UNIX peer comes from an ``identify`` function here, and
from the real job shell in tests/test_flux_failures.py."""

import logging
import os
import socket
import stat
import threading
import time

import pytest
from hostile import as_nobody, run_as_nobody

from parsl_flux.allocation import task_server
from parsl_flux.allocation.task_server import TaskServer
from parsl_flux.job import runner
from parsl_flux.wire import protocol
from parsl_flux.wire.rejects import RejectLog


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(task_server, "HANDSHAKE_TIMEOUT", 0.5)
    srv = TaskServer(protocol.new_secret(), lambda event: None, host="127.0.0.1", max_connections=4)
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


def _port(srv):
    return int(srv.url.rsplit(":", 1)[1])


def test_tcp_listens_only_on_the_given_address(server):
    assert server.url.startswith("127.0.0.1:")


def test_an_unauthenticated_idle_connection_is_dropped(server):
    with socket.create_connection(("127.0.0.1", _port(server))) as idle:
        assert len(idle.recv(protocol.NONCE_BYTES)) == protocol.NONCE_BYTES
        start = time.monotonic()
        assert _closed_by_peer(idle)
        assert time.monotonic() - start < 2.5


def test_connections_beyond_the_cap_are_refused(server, monkeypatch):
    monkeypatch.setattr(task_server, "HANDSHAKE_TIMEOUT", 30)  # hold the first four open
    held = [socket.create_connection(("127.0.0.1", _port(server))) for _ in range(4)]
    try:
        for s in held:
            s.recv(protocol.NONCE_BYTES)
        with socket.create_connection(("127.0.0.1", _port(server))) as extra:
            assert extra.recv(protocol.NONCE_BYTES) == b"", "a fifth connection was served"
    finally:
        for s in held:
            s.close()


def test_a_huge_body_from_a_keyless_peer_is_never_read(server):
    """A header announcing 1 TiB with a wrong MAC is refused on its 72 bytes."""
    with socket.create_connection(("127.0.0.1", _port(server))) as peer:
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


def test_rejects_not_logged_are_reported_at_the_end(caplog):
    log = RejectLog(logging.getLogger("test.rejects"), burst=3, window=60)
    with caplog.at_level(logging.WARNING, logger="test.rejects"):
        for i in range(33000):
            log.reject("rejected %d", i)
        log.flush()
    assert "32997 more rejected message(s) not logged" in caplog.records[-1].getMessage()
    assert log.suppressed == 0


TRICKLE = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.recv(16)
start = time.monotonic()
try:
    while time.monotonic() - start < 6:
        s.sendall(b"x")  # one byte of a 72-byte header, now and then
        time.sleep(0.3)
        s.settimeout(0.01)
        try:
            if s.recv(1) == b"":
                break
        except socket.timeout:
            pass
except OSError:
    pass
print(round(time.monotonic() - start, 2))
"""


def test_a_stranger_trickling_bytes_is_dropped_at_the_overall_deadline(monkeypatch):
    """One byte every 0.3 s kept a connection open past a per-read timeout; the deadline is overall."""
    monkeypatch.setattr(task_server, "HANDSHAKE_TIMEOUT", 1.0)
    srv = TaskServer(protocol.new_secret(), lambda event: None, host="127.0.0.1")
    srv.start()
    try:
        done = run_as_nobody(TRICKLE, str(_port(srv)), timeout=30)
    finally:
        srv.stop()
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 2.5, f"the trickling stranger stayed {done.stdout.strip()}s"


HOLD = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", int(sys.argv[1])))
    held.append(s)
print("holding", flush=True)
time.sleep(30)
"""


def test_a_stranger_holding_connections_cannot_starve_runners(monkeypatch):
    """A stranger opens more connections than the cap; a runner of the block is still served."""
    monkeypatch.setattr(task_server, "HANDSHAKE_TIMEOUT", 30)
    key = protocol.new_secret()
    srv = TaskServer(key, lambda event: None, host="127.0.0.1", max_connections=64)
    srv.add(3, [b"the payload"], packed=False)
    srv.start()
    stranger = as_nobody(HOLD, str(_port(srv)), "100")
    try:
        assert stranger.stdout.readline().strip() == "holding", stranger.stderr.read()
        time.sleep(0.5)  # the server has accepted (or refused) all of them
        assert srv.admission.held("127.0.0.2") == task_server.PER_PEER_UNAUTHENTICATED
        link = runner.ManagerLink(srv.url, srv.credential(3), 3, protocol.DEFAULT_MAX_MESSAGE_BYTES)
        try:
            assert link.request(protocol.Kind.FETCH, protocol.fetch_body(3), timeout=10) == (
                protocol.Kind.PAYLOAD, protocol.payload_body(3, [b"the payload"]))
        finally:
            link.close()
    finally:
        stranger.kill()
        stranger.communicate()
        srv.stop()


def test_a_runner_retries_until_the_server_listens():
    """A refused connection (a full or not yet open server) is retried with backoff, not a failed task."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    def listen_late():
        time.sleep(0.5)
        with socket.create_server(("127.0.0.1", port)) as lsock:
            conn, _ = lsock.accept()
            conn.sendall(b"n" * protocol.NONCE_BYTES)
            conn.close()

    thread = threading.Thread(target=listen_late)
    thread.start()
    sock, nonce = runner.open_connection(f"127.0.0.1:{port}", timeout=10)
    sock.close()
    thread.join()
    assert nonce == b"n" * protocol.NONCE_BYTES


# ---------------------------------------------------------------- AF_UNIX
JOB = 4242


@pytest.fixture
def unix_server():
    """A task server that knows this test process as a runner of Flux job JOB."""
    srv = TaskServer(protocol.new_secret(), lambda event: None,
                     identify=lambda pid: JOB if pid == os.getpid() else None)
    srv.add(5, [b"payload of 5"], packed=False)
    srv.add(7, [b"payload of 7"], packed=False)
    srv.bind(JOB, 5)
    srv.start()
    yield srv
    srv.stop()


def test_unix_socket_is_in_a_directory_only_this_user_can_enter(unix_server):
    path = unix_server.url[len(protocol.UNIX_PREFIX):]
    mode = os.stat(os.path.dirname(path))
    assert stat.S_IMODE(mode.st_mode) == 0o700 and mode.st_uid == os.geteuid()
    assert unix_server.credential(5) is None, "no credential is handed out over AF_UNIX"


CONNECT_MANY = """
import socket, sys
refused = 0
for _ in range(300):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
    except PermissionError:
        refused += 1
    s.close()
print(refused)
"""


def test_another_user_cannot_connect_at_all(unix_server):
    path = unix_server.url[len(protocol.UNIX_PREFIX):]
    done = run_as_nobody(CONNECT_MANY, path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "300"
    link = runner.ManagerLink(unix_server.url, protocol.PEER_VERIFIED, 5, protocol.DEFAULT_MAX_MESSAGE_BYTES)
    try:
        assert link.request(protocol.Kind.FETCH, protocol.fetch_body(5), timeout=10) == (
            protocol.Kind.PAYLOAD, protocol.payload_body(5, [b"payload of 5"]))
    finally:
        link.close()


def _fetch_refused(server, task_id: int) -> None:
    """A runner claiming ``task_id`` on ``server`` gets its connection refused."""
    link = runner.ManagerLink(server.url, protocol.PEER_VERIFIED, task_id, protocol.DEFAULT_MAX_MESSAGE_BYTES)
    try:
        with pytest.raises(ConnectionError):
            link.request(protocol.Kind.FETCH, protocol.fetch_body(task_id), timeout=10)
    finally:
        link.close()


def test_a_job_is_served_only_as_the_task_it_runs(unix_server):
    """Job JOB runs task 5: claiming task 7, with any key, gets nothing."""
    _fetch_refused(unix_server, 7)


def test_a_process_in_no_job_of_the_block_is_refused(unix_server, monkeypatch):
    unix_server.unbind(JOB)
    monkeypatch.setattr(task_server, "BIND_WAIT", 0.2)
    _fetch_refused(unix_server, 5)
