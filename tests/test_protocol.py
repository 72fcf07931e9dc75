"""Message signing: nothing unauthenticated is ever unpickled (pure, no Flux)."""

import pickle

import pytest

from parsl_flux.wire import protocol
from parsl_flux.wire.protocol import AuthenticationError, Kind


class _Bomb:
    """Unpickling this would create a file: proof of unpickling."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pair():
    """A manager session and the driver session that answered its hello."""
    key = protocol.new_secret()
    m_nonce, d_nonce = b"m" * 16, b"d" * 16
    return key, protocol.manager_session(key, m_nonce, d_nonce), protocol.driver_session(key, m_nonce, d_nonce)


def test_session_roundtrip_both_ways():
    _, manager, driver = _pair()
    assert driver.open(manager.seal(Kind.RESULTS, [{"id": 1}])) == (Kind.RESULTS, [{"id": 1}])
    assert manager.open(driver.seal(Kind.TASKS, [{"id": 2, "payload": b"x"}])) == (Kind.TASKS, [{"id": 2,
                                                                                              "payload": b"x"}])


def test_replayed_reflected_and_reordered_frames_are_refused():
    _, manager, driver = _pair()
    first = manager.seal(Kind.HEARTBEAT)
    second = manager.seal(Kind.HEARTBEAT)
    with pytest.raises(AuthenticationError, match="out-of-order"):
        driver.open(second)  # before the first
    driver.open(first)
    with pytest.raises(AuthenticationError, match="out-of-order"):
        driver.open(first)  # replayed
    with pytest.raises(AuthenticationError, match="authentication code"):
        manager.open(manager.seal(Kind.HEARTBEAT))  # reflected back to its sender
    driver.open(second)


def test_session_of_another_handshake_cannot_read_frames():
    key, manager, _ = _pair()
    other = protocol.driver_session(key, b"m" * 16, b"e" * 16)  # same key, another driver nonce
    with pytest.raises(AuthenticationError, match="authentication code"):
        other.open(manager.seal(Kind.REGISTER, {}))


def test_nothing_unauthenticated_is_unpickled(tmp_path):
    target = tmp_path / "pwned"
    _, manager, driver = _pair()
    frames = manager.seal(Kind.RESULTS, [])
    frames[3] = pickle.dumps(_Bomb(str(target)))
    with pytest.raises(AuthenticationError):
        driver.open(frames)
    assert not target.exists()


def test_hello_and_welcome_prove_both_sides_hold_the_key():
    key = protocol.new_secret()
    nonce = b"n" * 16
    block_id, got_nonce, mac = protocol.open_hello(protocol.hello(key, "3", nonce))
    assert (block_id, got_nonce) == ("3", nonce)
    protocol.check_hello(key, "3", nonce, mac)
    with pytest.raises(AuthenticationError):
        protocol.check_hello(protocol.new_secret(), "3", nonce, mac)
    with pytest.raises(AuthenticationError):
        protocol.check_hello(key, "4", nonce, mac)  # a hello for block 3 does not open block 4
    welcome = protocol.welcome(key, nonce, b"d" * 16)
    assert protocol.open_welcome(key, nonce, welcome) == b"d" * 16
    with pytest.raises(AuthenticationError):
        protocol.open_welcome(key, b"x" * 16, welcome)  # an answer to another hello
    with pytest.raises(AuthenticationError):
        protocol.open_welcome(protocol.new_secret(), nonce, welcome)


def test_block_keys_and_task_credentials_are_distinct():
    m1, m2 = protocol.new_secret(), protocol.new_secret()
    assert protocol.block_key(m1, "0") != protocol.block_key(m1, "1")
    assert protocol.block_key(m1, "0") != protocol.block_key(m2, "0")
    assert protocol.block_key(m1, "0") == protocol.block_key(m1, "0")
    creds = {protocol.task_credential(m1, p) for p in (protocol.WORKER, 0, 1, 2)}
    assert len(creds) == 4


def _stream_pair(max_bytes=1 << 20):
    import socket

    a, b = socket.socketpair()
    nonce = b"s" * 16
    return (protocol.Stream(a, nonce, protocol.TO_SERVER, protocol.TO_RUNNER, max_bytes),
            protocol.Stream(b, nonce, protocol.TO_RUNNER, protocol.TO_SERVER, max_bytes))


def test_stream_roundtrip_and_principal():
    runner, server = _stream_pair()
    cred = protocol.task_credential(b"k" * 32, 7)
    runner.send(cred, 7, Kind.FETCH, 7)
    principal, head = server.recv_header()
    assert principal == 7
    assert server.recv_body(cred, head) == (Kind.FETCH, 7)
    server.send(cred, 7, Kind.PAYLOAD, b"data")
    assert runner.recv(cred) == (Kind.PAYLOAD, b"data")


def test_stream_checks_the_header_before_reading_the_body():
    """A keyless peer announcing a huge body is refused on its 80-byte header."""
    runner, server = _stream_pair(max_bytes=1 << 40)
    fields = (Kind.RESULT.encode().ljust(16, b"\0") + (3).to_bytes(8, "big") + bytes(8) + (1).to_bytes(8, "big")
              + (1 << 39).to_bytes(8, "big"))
    runner.sock.sendall(fields + b"\0" * 32)  # no body follows: reading it would block forever
    server.sock.settimeout(2)
    principal, head = server.recv_header()
    with pytest.raises(AuthenticationError, match="header"):
        server.recv_body(protocol.task_credential(b"k" * 32, principal), head)


def test_stream_refuses_a_body_over_the_limit_before_reading_it():
    runner, server = _stream_pair(max_bytes=1000)
    cred = protocol.task_credential(b"k" * 32, 1)
    runner.max_bytes = 1 << 30
    runner.send(cred, 1, Kind.RESULT, b"x" * 5000)
    with pytest.raises(protocol.MessageTooLarge, match="5"):
        server.recv(cred)


def test_stream_refuses_replay_and_other_principals_credentials():
    runner, server = _stream_pair()
    key = b"k" * 32
    runner.send(protocol.task_credential(key, 1), 2, Kind.FETCH, 2)  # task 1's credential, claiming task 2
    principal, head = server.recv_header()
    with pytest.raises(AuthenticationError):
        server.recv_body(protocol.task_credential(key, principal), head)


@pytest.mark.parametrize("key", [b"", b"k", b"x" * 64, b"y" * 100])
def test_hmac_matches_the_standard_library(key):
    import hashlib
    import hmac

    big = bytes(range(256)) * (protocol.FAST_MAC_BYTES // 256 + 3)  # OpenSSL's path
    for msg in (b"", b"hello", bytes(range(256)) * 9, big):
        assert protocol.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()
        assert protocol.hmac_sha256(key, msg[:7], memoryview(msg)[7:]) == hmac.new(key, msg, hashlib.sha256).digest()


def _blob(*sizes):
    """A blob as :mod:`parsl_flux.wire.payload` makes one: a pickle stream and writable buffers."""
    return [b"stream"] + [bytearray([i]) * n for i, n in enumerate(sizes, 1)]


def test_session_sends_a_blobs_parts_as_frames_of_their_own():
    _, manager, driver = _pair()
    blob = _blob(3 << 20, 10)
    frames = driver.seal(Kind.TASKS, [protocol.task_body(1, blob, {}, False)])
    assert len(frames) == 5 + len(blob)  # header frames, the pickle, each part, the MAC
    assert any(memoryview(f).nbytes == 3 << 20 for f in frames)
    kind, tasks = manager.open([memoryview(bytearray(f)) for f in frames])  # as zero-copy ZMQ frames arrive
    assert kind == Kind.TASKS and [bytes(p) for p in tasks[0]["payload"]] == blob
    assert not any(memoryview(p).readonly for p in tasks[0]["payload"][1:])


def test_bytes_moved_between_frames_are_refused():
    """The MAC covers each part's size, so a split at another place is a forgery."""
    _, manager, driver = _pair()
    frames = driver.seal(Kind.TASKS, [protocol.task_body(1, _blob(100, 100), {}, False)])
    moved = list(frames)
    moved[-3], moved[-2] = bytes(frames[-3]) + bytes(frames[-2])[:1], bytes(frames[-2])[1:]
    with pytest.raises(AuthenticationError, match="authentication code"):
        manager.open(moved)


def _send_in_thread(stream, *args):
    import threading

    sender = threading.Thread(target=stream.send, args=args)
    sender.start()
    return sender


@pytest.mark.parametrize("credential", [b"k" * 32, protocol.PEER_VERIFIED], ids=["tcp", "af-unix"])
def test_stream_delivers_a_blob_into_writable_buffers(credential):
    runner, server = _stream_pair(max_bytes=64 << 20)
    blob = _blob(9 << 20, 1, 0)  # larger than a socket buffer: sent in many partial writes
    sender = _send_in_thread(runner, credential, 4, Kind.RESULT, (4, protocol.outcome_value(blob)))
    kind, (task_id, outcome) = server.recv(credential)
    sender.join()
    assert (kind, task_id) == (Kind.RESULT, 4)
    assert [bytes(p) for p in outcome["value"]] == blob
    assert not any(memoryview(p).readonly for p in outcome["value"][1:])  # arrays on them stay writable


def test_stream_refuses_a_tampered_part_over_tcp():
    runner, server = _stream_pair()
    cred = protocol.task_credential(b"k" * 32, 2)
    real_sendmsg = runner.sock.sendmsg

    def flip_last_byte_of_the_part(buffers):
        parts = [bytes(b) for b in buffers]
        parts[2] = parts[2][:-1] + b"?"  # the out-of-band buffer
        return real_sendmsg(parts)

    runner.sock = type("Tamper", (), {"sendmsg": staticmethod(flip_last_byte_of_the_part)})()
    runner.send(cred, 2, Kind.RESULT, (2, protocol.outcome_value(_blob(1000))))
    with pytest.raises(AuthenticationError, match="body"):
        server.recv(cred)


def test_runner_side_imports_stay_small():
    """The modules every Flux job loads must not pull in heavy ones."""
    import subprocess
    import sys

    code = ("import sys, parsl_flux.job.runner; heavy = {'parsl', 'zmq', 'cloudpickle', 'hashlib', 'enum', 'typing',"
            " 'socket', 'pickle'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_guarded_paths_are_curve_or_loopback_only():
    assert protocol.guarded_path(True, "10.1.2.3")
    assert all(protocol.guarded_path(False, h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost"))
    assert not any(protocol.guarded_path(False, h) for h in ("10.1.2.3", "", "::ffff:10.0.0.1", "pfnode1"))


def test_on_a_guarded_path_the_envelope_and_sizes_stay_authenticated():
    key = protocol.new_secret()
    m, d = b"m" * 16, b"d" * 16
    manager, driver = protocol.manager_session(key, m, d, False), protocol.driver_session(key, m, d, False)
    frames = driver.seal(Kind.TASKS, [protocol.task_body(9, _blob(1 << 20), {}, False)])
    forged_body = list(frames)
    forged_body[3] = bytes(frames[3]).replace(b"packable", b"packabld")
    with pytest.raises(AuthenticationError, match="authentication code"):
        manager.open(forged_body)
    resized = list(frames)
    resized[-2] = bytes(frames[-2])[:-1]
    with pytest.raises(AuthenticationError, match="authentication code"):
        manager.open(resized)
    kind, tasks = manager.open(frames)
    assert [bytes(p) for p in tasks[0]["payload"]] == _blob(1 << 20)


def test_ends_that_disagree_on_the_path_fail_loudly_on_the_first_buffer():
    key = protocol.new_secret()
    m, d = b"m" * 16, b"d" * 16
    manager, driver = protocol.manager_session(key, m, d, True), protocol.driver_session(key, m, d, False)
    with pytest.raises(AuthenticationError, match="authentication code"):
        manager.open(driver.seal(Kind.TASKS, [protocol.task_body(1, _blob(10), {}, False)]))
