"""The driver's socket against strangers (no Flux): what an unauthenticated
peer can make the driver hold, and whether replayed hellos can keep a block
from registering. The flooding stranger runs as another local user."""

import logging
import os
import time

import pytest
import zmq
from hostile import ZMTP_FLOOD, run_as_nobody

from parsl_flux.driver.io_loop import MAX_HANDSHAKES, Driver
from parsl_flux.wire import protocol, versions, zap
from parsl_flux.wire.protocol import Kind

MiB = 1 << 20


@pytest.fixture
def driver():
    drv = Driver("test", logging.getLogger("test.driver"), 0.2, 5.0, protocol.DEFAULT_MAX_MESSAGE_BYTES,
                 lambda: protocol.config_body(0, 5.0, {}, protocol.DEFAULT_MAX_MESSAGE_BYTES, "/"),
                 lambda block, reason, failed: None, lambda error: None, {})
    port, _ = drv.open("127.0.0.1", None, (54000, 55000), encrypt=False)
    drv.port = port
    yield drv
    drv.close()


def _manager(ctx, port, block_id, key, credentials_key=None):
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    zap.configure_client(sock, block_id, credentials_key or key, None)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def _recv(sock, timeout_ms=10000):
    return sock.recv_multipart() if sock.poll(timeout_ms) else None


def _peak_rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def test_a_stranger_cannot_make_the_driver_hold_big_frames(driver):
    """4 connections x 3 frames x 64 MiB from another user: before any credential
    is proved, libzmq reads none of it (it buffered every frame whole)."""
    driver.add_block("0", protocol.new_secret(), "")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak
    before = _peak_rss()
    done = run_as_nobody(ZMTP_FLOOD, "127.0.0.1", str(driver.port), "4", "3", str(64 * MiB), "2", timeout=120)
    assert done.returncode == 0, done.stderr
    grown = _peak_rss() - before
    assert grown < 32 * MiB, f"the driver's peak memory grew by {grown / MiB:.0f} MiB"


def test_wrong_credentials_get_no_message_through(driver, caplog):
    key = protocol.new_secret()
    driver.add_block("0", key, "")
    ctx = zmq.Context()
    try:
        stranger = _manager(ctx, driver.port, "0", key, credentials_key=protocol.new_secret())
        with caplog.at_level(logging.WARNING, logger="test.driver"):
            stranger.send_multipart(protocol.hello(key, "0", os.urandom(protocol.NONCE_BYTES)))
            assert _recv(stranger, 1500) is None, "a connection without the block's credentials was answered"
        assert any("no block's credentials" in r.getMessage() for r in caplog.records)
    finally:
        ctx.destroy(linger=0)


def test_replayed_hellos_do_not_evict_the_real_handshake(driver):
    """64 copies of a captured hello (sent with the block's connection
    credentials, as one who saw them could) come after the real manager's;
    the real manager still registers."""
    key = protocol.new_secret()
    driver.add_block("0", key, "")
    ctx = zmq.Context()
    try:
        real = _manager(ctx, driver.port, "0", key)
        nonce = os.urandom(protocol.NONCE_BYTES)
        hello = protocol.hello(key, "0", nonce)
        real.send_multipart(hello)
        welcome = _recv(real)
        assert welcome is not None
        session = protocol.manager_session(key, nonce, protocol.open_welcome(key, nonce, welcome))
        replayers = [_manager(ctx, driver.port, "0", key) for _ in range(4)]
        for i in range(MAX_HANDSHAKES):
            replayers[i % 4].send_multipart(hello)
        time.sleep(1.0)  # the driver has handled every copy
        real.send_multipart(session.seal(Kind.REGISTER, protocol.register_body(
            {"nodes": 1, "cores_per_node": 1, "gpus_per_node": 0}, "host", 1, "local://x", "0.88.0", versions.this_side())))
        config = _recv(real)
        assert config is not None and session.open(config)[0] == Kind.CONFIG
        assert driver.blocks["0"].live
        assert all(_recv(r, 100) is None for r in replayers), "a replayed hello was welcomed"
    finally:
        ctx.destroy(linger=0)
