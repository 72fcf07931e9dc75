"""Executor behaviour that needs no Flux: validation, serialization, the socket."""

import os
import pickle
import shlex
import socket
import threading
import time

import pytest
import zmq
from zmq.utils import z85
from parsl.providers import LocalProvider
from parsl.serialize.errors import SerializationError

from conftest import wait_for
from parsl_flux import FluxExecutor
from parsl_flux.driver.executor import _unwrap_parsl_error_wrapper
from parsl_flux.driver import options
from parsl_flux.errors import ExecutorShutdown, InvalidResourceSpecification
from parsl_flux.wire import launch, protocol, versions, zap


@pytest.fixture
def executor(tmp_path, monkeypatch):
    # these tests drive the socket by hand: no block is started, so whether Flux is installed does not matter
    monkeypatch.setattr("parsl_flux.fluxpath.check_flux", lambda path, run=True: path)
    ex = FluxExecutor(provider=LocalProvider(init_blocks=0), heartbeat_threshold=3)
    ex.run_dir = str(tmp_path)
    ex.start()
    yield ex
    if ex._driver.running:
        ex.shutdown(wait=False)


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="nope"):
        FluxExecutor(flux_executor_kwargs={"nope": 1})
    with pytest.raises(ValueError, match="hostname"):
        FluxExecutor(launch_cmd="{flux} start {hostname}")
    with pytest.raises(ValueError, match="heartbeat"):
        FluxExecutor(heartbeat_period=5, heartbeat_threshold=1)
    with pytest.raises(ValueError, match="hex"):
        FluxExecutor(secret="not-hex")


@pytest.mark.parametrize("kwargs, error, says", [
    ({"container": "docker"}, TypeError, "container='docker' must be a parsl_flux.Container"),
    ({"address": "login 1"}, ValueError, "address='login 1' is not a host name or IPv4 address"),
    ({"address": "-bad.example"}, ValueError, "address='-bad.example'"),
    ({"address": "::1"}, ValueError, "address='::1' is not a host name or IPv4 address"),
    ({"port": 70000}, ValueError, "port=70000 must be a port number"),
    ({"port": True}, ValueError, "port=True"),
    ({"port_range": (55000, 54000)}, ValueError, r"port_range=\(55000, 54000\)"),
    ({"port_range": (1,)}, ValueError, r"port_range=\(1,\)"),
    ({"working_dir": 5}, TypeError, "working_dir=5 must be a path"),
    ({"python": ["python3"]}, TypeError, r"python=\['python3'\]"),
    ({"label": ""}, ValueError, "label='' must be a non-empty name"),
    ({"label": "a/b"}, ValueError, "label='a/b'"),
    ({"launch_cmd": "echo hi"}, ValueError, r"launch_cmd 'echo hi' lacks placeholder\(s\) \['block_id', 'url'\]"),
])
def test_a_bad_argument_fails_at_construction_naming_itself(kwargs, error, says):
    """Each of these once surfaced only when a block ran, as an error that did not name it
    (container='docker': "'str' object has no attribute 'wrap'"; a bad address: a ZMQ error
    in the block's stderr; a launch_cmd without {url}: a block that never connected)."""
    with pytest.raises(error, match=says):
        FluxExecutor(**kwargs)


@pytest.mark.parametrize("address", ["127.0.0.1", "login1", "login1.cluster.example.org", "nid00012",
                                     "node-7.", "10.1.2.3"])
def test_good_addresses_are_accepted(address):
    assert options.is_host(address)


def test_an_encrypted_connection_needs_the_server_key_in_a_launch_cmd():
    template = "{flux} start {flux} env {python} -m parsl_flux.allocation.manager --url {url} --block-id {block_id}"
    launch.check_template(template)  # loopback: not encrypted, no server key needed
    with pytest.raises(ValueError, match=r"lacks placeholder\(s\) \['server_key'\].*encrypted"):
        launch.check_template(template, encrypted=True)
    launch.check_template(launch.START_CMD, encrypted=True)


def test_secret_never_shown_in_repr():
    secret = "ab" * 32
    ex = FluxExecutor(secret=secret)
    assert secret not in repr(ex) and "secret=<secret hidden>" in repr(ex)
    # The attribute holds the value it names: a copy of the config gets the same keys.
    assert ex.secret == secret and FluxExecutor(secret=ex.secret)._master == ex._master
    assert FluxExecutor().secret is None


def test_page_interface_is_present():
    ex = FluxExecutor()
    for name in ("provider", "managed", "working_dir", "label", "flux_executor_kwargs", "flux_path",
                 "launch_cmd", "DEFAULT_LAUNCH_CMD", "start", "submit", "shutdown", "scale_out", "scale_out_facade",
                 "scale_in", "scaling_enabled", "status", "create_monitoring_info", "handle_errors",
                 "monitor_resources", "set_bad_state_and_fail_all", "bad_state_is_set",
                 "executor_exception", "error_management_enabled", "run_dir", "status_polling_interval",
                 "tasks"):
        assert hasattr(ex, name), name
    assert ex.label == "FluxExecutor" and isinstance(ex.provider, LocalProvider)
    assert ex.monitor_resources() is False
    assert ex.scaling_enabled() and ex.error_management_enabled


def test_bad_spec_fails_at_submit(executor):
    with pytest.raises(InvalidResourceSpecification, match="num_tasks"):
        executor.submit(print, {"num_tasks": -1})
    assert executor.outstanding() == 0


def test_unpicklable_function_or_argument_fails_at_submit(executor):
    lock = threading.Lock()
    with pytest.raises(SerializationError):
        executor.submit(print, {}, lock)
    with pytest.raises(SerializationError):
        executor.submit(lambda: lock, {})
    assert executor.outstanding() == 0


class _Unhashable:
    """A callable whose class defines equality, so instances are unhashable."""

    def __eq__(self, other):
        return isinstance(other, _Unhashable)

    def __call__(self, x):
        return x


def test_an_app_s_function_is_pickled_once_as_parsl_s_serializer_does(executor):
    """Parsl's serializer caches a callable's pickle (functools.lru_cache); so does
    this executor: the later tasks of an app reuse its first task's function pickle,
    and an unhashable callable is pickled at every submit."""
    def app(x):
        return x

    before = executor._function_pickles.cache_info()
    for i in range(3):
        executor.submit(app, {}, i)
    after = executor._function_pickles.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)
    executor.submit(_Unhashable(), {}, 1)
    assert executor._function_pickles.cache_info().currsize == after.currsize


def test_cancel_before_dispatch_and_wait_false_shutdown(executor):
    queued = executor.submit(print, {}, "never runs: no block")
    other = executor.submit(print, {}, "neither")
    assert executor.outstanding() == 2
    assert queued.cancel() and queued.cancelled()
    assert executor.outstanding() == 1
    executor.shutdown(wait=False)
    with pytest.raises(ExecutorShutdown):
        other.result(timeout=5)
    with pytest.raises(ExecutorShutdown):
        executor.submit(print, {})


def test_parsl_wrap_error_is_stripped_so_runners_skip_parsl():
    from parsl.app.errors import wrap_error

    def f(x):
        return x

    assert _unwrap_parsl_error_wrapper(wrap_error(f)) is f
    assert _unwrap_parsl_error_wrapper(f) is f


def test_launch_command_carries_the_key_file_url_and_block(executor):
    cmd = executor._get_launch_command("7")
    argv = shlex.split(cmd)
    key = protocol.block_key(executor._master, "7").hex()
    assert key not in cmd, "the key itself never appears on a command line or in a submit script"
    name, path = argv[0].split("=", 1)
    assert name == protocol.KEY_FILE_ENV
    assert open(path).read() == key
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert argv[2:4] == ["-m", "parsl_flux.allocation.rundir_guard"]
    assert argv[4].endswith("flux") and argv[5] == "start"
    assert argv[argv.index("--url") + 1] == executor.url
    assert argv[argv.index("--block-id") + 1] == "7"
    assert argv[argv.index("--server-key") + 1] == "none", "loopback blocks need no encryption"


def _dealer(url, block=None, server_public=None):
    """A DEALER to the driver; with ``block`` ``(block_id, key)``, it
    authenticates as that block's manager does (:mod:`parsl_flux.wire.zap`)."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if block is not None:
        zap.configure_client(sock, block[0], block[1], server_public)
    sock.connect(url)
    return sock


def _manager_handshake(sock, key, block_id="0"):
    """What a real manager does on loopback: hello, welcome, REGISTER on the new session."""
    nonce = os.urandom(protocol.NONCE_BYTES)
    sock.send_multipart(protocol.hello(key, block_id, nonce))
    assert sock.poll(5000), "no welcome from the driver"
    session = protocol.manager_session(key, nonce, protocol.open_welcome(key, nonce, sock.recv_multipart()),
                                       mac_buffers=False)
    sock.send_multipart(session.seal(protocol.Kind.REGISTER, protocol.register_body(
        {"nodes": 1, "cores_per_node": 2, "gpus_per_node": 0}, "host", 1, "local://x", "0.88.0", versions.this_side())))
    return session


def _wait_live(executor, block_id="0", timeout=5.0):
    deadline = time.monotonic() + timeout
    while not executor.blocks[block_id].live and time.monotonic() < deadline:
        time.sleep(0.05)
    return executor.blocks[block_id].live


def test_stranger_on_the_port_gets_nothing_and_breaks_nothing(executor, tmp_path):
    """Raw bytes, forged hellos, a pickle bomb: all dropped without unpickling
    and unanswered; the executor keeps serving the real manager."""
    executor._get_launch_command("0")  # block 0 exists and waits for its manager
    host, port = executor.url[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"\x00" * 1000)
        raw.settimeout(1)
        try:
            assert raw.recv(4096)[:1] in (b"\xff", b"")  # at most the ZMTP greeting, never data
        except (socket.timeout, ConnectionResetError):  # silence, or dropped at once
            pass
    bomb_target = tmp_path / "unpickled"

    class Bomb:
        def __reduce__(self):
            return (open, (str(bomb_target), "w"))

    stranger = _dealer(executor.url, block=("0", protocol.new_secret()))  # a guessed key
    stranger.send_multipart(protocol.hello(protocol.new_secret(), "0", b"n" * 16))
    stranger.send_multipart([protocol.VERSION, b"register", b"\0" * 8, pickle.dumps(Bomb()), b"x" * 32])
    stranger.send_multipart([b"garbage"])
    assert not stranger.poll(1000), "the executor answered a stranger"
    assert not bomb_target.exists()
    assert not executor.blocks["0"].live, "a forged registration was accepted"
    real = _dealer(executor.url, block=("0", protocol.block_key(executor._master, "0")))
    _manager_handshake(real, protocol.block_key(executor._master, "0"))
    assert _wait_live(executor)
    stranger.close()
    real.close()


def test_a_replayed_hello_cannot_squat_or_take_over_a_block(executor):
    """Whoever replays a captured hello gets a welcome it cannot use: without the
    key it cannot open the session, so the block is bound only to the real
    manager. Once bound, a hello is still answered (a manager that reconnected
    resumes its session that way), but a RESUME the replayer forges does not
    move the block to its connection."""
    executor._get_launch_command("0")
    key = protocol.block_key(executor._master, "0")
    nonce = os.urandom(protocol.NONCE_BYTES)
    captured = protocol.hello(key, "0", nonce)
    attacker = _dealer(executor.url, block=("0", key))  # one who saw the connection's credentials too
    attacker.send_multipart(captured)  # first come ...
    assert attacker.poll(5000)
    attacker.recv_multipart()
    forged = protocol.manager_session(protocol.new_secret(), nonce, b"d" * 16)
    attacker.send_multipart(forged.seal(protocol.Kind.REGISTER, {"resources": {}}))
    real = _dealer(executor.url, block=("0", key))
    _manager_handshake(real, key)  # ... is not first served
    assert _wait_live(executor)
    assert executor.blocks["0"].route is not None
    bound = executor.blocks["0"].route
    attacker.send_multipart(captured)
    if attacker.poll(2000):
        attacker.recv_multipart()
    attacker.send_multipart(forged.seal(protocol.Kind.RESUME, protocol.resume_body([], [])))
    time.sleep(0.5)
    assert executor.blocks["0"].route == bound and executor.blocks["0"].live, "a forged resume took the block"
    attacker.close()
    real.close()


def test_blocks_on_other_hosts_get_an_encrypted_channel(tmp_path, monkeypatch):
    monkeypatch.setattr("parsl_flux.fluxpath.check_flux", lambda path, run=True: path)
    ex = FluxExecutor(provider=LocalProvider(init_blocks=0), address="127.0.0.1", encrypt=True)
    ex.run_dir = str(tmp_path)
    ex.start()
    try:
        argv = shlex.split(ex._get_launch_command("0"))
        server_key = argv[argv.index("--server-key") + 1]
        assert len(server_key) == 64 and set(server_key) <= set("0123456789abcdef")  # no '$' for a shell to eat
        plain = _dealer(ex.url)  # a peer without the server's public key cannot even talk
        plain.send_multipart(protocol.hello(protocol.block_key(ex._master, "0"), "0", b"n" * 16))
        assert not plain.poll(1000)
        public, secret = zmq.curve_keypair()
        stranger = zmq.Context.instance().socket(zmq.DEALER)
        stranger.setsockopt(zmq.LINGER, 0)
        stranger.curve_serverkey = z85.encode(bytes.fromhex(server_key))
        stranger.curve_publickey, stranger.curve_secretkey = public, secret  # a key pair of no block
        stranger.connect(ex.url)
        stranger.send_multipart(protocol.hello(protocol.block_key(ex._master, "0"), "0", b"n" * 16))
        assert not stranger.poll(1000), "a CurveZMQ client key of no block was admitted"
        real = _dealer(ex.url, block=("0", protocol.block_key(ex._master, "0")),
                       server_public=z85.encode(bytes.fromhex(server_key)))
        _manager_handshake(real, protocol.block_key(ex._master, "0"))
        assert _wait_live(ex)
        plain.close()
        stranger.close()
        real.close()
    finally:
        ex.shutdown()
    assert FluxExecutor(provider=LocalProvider(), address="10.0.0.1").encrypt is None  # auto: decided at start


def test_payload_over_the_limit_is_refused_at_submit(executor):
    from parsl_flux.errors import PayloadTooLarge

    with pytest.raises(PayloadTooLarge, match="max_message_bytes"):
        executor.submit(len, {}, b"x" * (executor.max_message_bytes + 1))


def test_request_larger_than_live_instance_fails_at_once(executor):
    executor._get_launch_command("0")
    block = executor.blocks["0"]
    from parsl_flux.driver.resources import InstanceResources
    block.resources = InstanceResources(1, 2, 0)
    with pytest.raises(InvalidResourceSpecification, match="num_nodes"):
        executor.submit(print, {"num_nodes": 2, "num_tasks": 2})
    with pytest.raises(InvalidResourceSpecification, match="gpus_per_task"):
        executor.submit(print, {"gpus_per_task": 1})


def test_each_executor_logs_to_its_own_file_and_leaves_the_package_logger_alone(tmp_path, monkeypatch):
    import logging

    monkeypatch.setattr("parsl_flux.fluxpath.check_flux", lambda path, run=True: path)
    package_level = logging.getLogger("parsl_flux").level
    made = []
    for label in ("A", "B"):
        ex = FluxExecutor(provider=LocalProvider(init_blocks=0), label=label)
        ex.run_dir = str(tmp_path)
        ex.start()
        made.append(ex)
    try:
        made[1]._get_launch_command("0")
        made[0]._get_launch_command("5")
    finally:
        for ex in made:
            ex.shutdown()
    a, b = ((tmp_path / label / "executor.log").read_text() for label in ("A", "B"))
    assert "A listening" in a and "B listening" not in a
    assert "B listening" in b and "A listening" not in b
    assert logging.getLogger("parsl_flux").level == package_level
    assert not logging.getLogger("parsl_flux").handlers


def test_scale_in_picks_by_idle_time_not_launch_time():
    """A block that just finished work is not 'idle for max_idletime'; the longest idle goes first."""
    from parsl_flux.driver.executor import pick_scale_in
    from parsl_flux.driver.io_loop import BlockView

    def block(name, idle_since=None, busy=0, registered=True):
        return BlockView(name, registered, registered, False, idle_since, busy)

    now = 1000.0
    just_done = block("just-done", idle_since=999.5)  # launched long ago, idle for 0.5 s
    long_idle = block("long-idle", idle_since=900.0)
    idle = block("idle", idle_since=990.0)
    starting = block("starting", registered=False)
    busy = block("busy", busy=3)
    all_blocks = [busy, just_done, starting, idle, long_idle]
    assert [b.block_id for b in pick_scale_in(all_blocks, 5, None, now)] == \
        ["long-idle", "idle", "just-done", "starting", "busy"]
    assert [b.block_id for b in pick_scale_in(all_blocks, 5, 5.0, now)] == ["long-idle", "idle"]
    assert pick_scale_in(all_blocks, 1, 200.0, now) == []


def test_a_loopback_address_for_remote_blocks_is_warned_about(monkeypatch, caplog):
    import logging

    from parsl.providers import SlurmProvider

    monkeypatch.setattr("parsl_flux.driver.executor.address_by_hostname", lambda: "127.0.1.1")
    with caplog.at_level(logging.WARNING):
        assert FluxExecutor(provider=SlurmProvider()).default_address() == "127.0.1.1"
    assert "127.0.1.1, which compute nodes cannot reach" in caplog.text
    caplog.clear()
    monkeypatch.setattr("parsl_flux.driver.executor.address_by_hostname", lambda: "10.1.2.3")
    with caplog.at_level(logging.WARNING):
        assert FluxExecutor(provider=SlurmProvider()).default_address() == "10.1.2.3"
        assert FluxExecutor(provider=LocalProvider()).default_address() == "127.0.0.1"
    assert "cannot reach" not in caplog.text


def test_the_console_shows_no_more_than_the_user_asked_for_while_the_log_file_gets_everything(tmp_path):
    """Under ``logging.basicConfig(level=WARNING)`` the root's console handler
    gets the executor's warnings only; its run-dir log gets DEBUG and INFO too."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "workflow.py"
    script.write_text(textwrap.dedent(f"""
        import logging
        logging.basicConfig(level=logging.WARNING, format="CONSOLE %(levelname)s %(name)s %(message)s")
        from parsl.providers import LocalProvider
        from parsl_flux import FluxExecutor

        ex = FluxExecutor(provider=LocalProvider(init_blocks=0), label="quiet")
        ex.run_dir = {str(tmp_path)!r}
        ex.start()
        ex._logger.debug("a debug line")
        ex._logger.warning("a warning line")
        ex.shutdown()
        ex._logger.info("after shutdown the logger is the user's again")
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    console = [line for line in proc.stderr.splitlines() if line.startswith("CONSOLE")]
    assert console == ["CONSOLE WARNING parsl_flux.driver.executor.quiet a warning line"]
    log = (tmp_path / "quiet" / "executor.log").read_text()
    assert "INFO" in log and "quiet listening on tcp://127.0.0.1:" in log
    assert "DEBUG" in log and "a debug line" in log
    assert "a warning line" in log and "after shutdown" not in log


def test_the_executor_log_gives_the_logger_back_as_it_found_it(tmp_path, caplog):
    import logging

    from parsl_flux.driver.logfile import ExecutorLog

    logger = logging.getLogger("test.executor_log.child")
    log = ExecutorLog(logger, str(tmp_path / "x.log"))
    assert logger.level == logging.DEBUG and not logger.propagate
    with caplog.at_level(logging.INFO):  # an ancestor enabled for INFO still gets INFO
        logger.info("seen by caplog")
        logger.debug("not seen by caplog")
    log.close()
    assert logger.level == logging.NOTSET and logger.propagate and not logger.handlers
    assert "seen by caplog" in caplog.text and "not seen" not in caplog.text
    assert "not seen by caplog" in (tmp_path / "x.log").read_text()


def _next(sock, session, kind):
    """The next message of ``kind`` from the driver (heartbeats and others skipped)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sock.poll(500):
            got, data = session.open(sock.recv_multipart())
            if got == kind:
                return data
    raise AssertionError(f"no {kind} from the driver")


def test_the_driver_drops_a_payload_once_the_manager_holds_it(executor):
    """A payload is kept to be sent again after a broken connection only until
    the manager acknowledges it: then the manager holds it, not both."""
    executor._get_launch_command("0")
    key = protocol.block_key(executor._master, "0")
    manager = _dealer(executor.url, block=("0", key))
    session = _manager_handshake(manager, key)
    _next(manager, session, protocol.Kind.CONFIG)
    assert _wait_live(executor)
    fut = executor.submit(len, {}, bytearray(1 << 20))
    (task,) = _next(manager, session, protocol.Kind.TASKS)
    assert protocol.blob_size(task["payload"]) > 1 << 20
    assert executor._driver.live_tasks[task["id"]].payload is not None
    manager.send_multipart(session.seal(protocol.Kind.ACK, [task["id"]]))
    wait_for(lambda: executor._driver.live_tasks[task["id"]].payload is None, 5, "the payload dropped")
    manager.send_multipart(session.seal(protocol.Kind.RESULTS, [
        protocol.result(task["id"], protocol.outcome_value([pickle.dumps(1 << 20)]))]))
    assert fut.result(timeout=5) == 1 << 20
    manager.close()


def test_an_admitted_peer_sending_garbage_is_named_dropped_and_the_loop_goes_on(executor, monkeypatch):
    """A connection that passed the gate but sends no hello: its message is
    dropped and logged with the peer's routing id; the I/O loop keeps serving."""
    executor._get_launch_command("0")
    key = protocol.block_key(executor._master, "0")
    rejected = []
    real = executor._driver._rejects.reject
    monkeypatch.setattr(executor._driver._rejects, "reject", lambda msg, *args: (rejected.append(msg % args),
                                                                              real(msg, *args)))
    peer = _dealer(executor.url, block=("0", key))
    peer.send_multipart([b"not", b"a", b"hello"])
    wait_for(lambda: any("dropped a message from peer" in r for r in rejected), 5, "the message rejected")
    _manager_handshake(peer, key)
    assert _wait_live(executor)
    peer.close()
