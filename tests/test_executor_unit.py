"""Executor behaviour that needs no Flux: validation, serialization, the socket."""

import pickle
import shlex
import socket
import threading
import time

import pytest
import zmq
from parsl.providers import LocalProvider
from parsl.serialize.errors import SerializationError

from parsl_flux import FluxExecutor, protocol
from parsl_flux.errors import ExecutorShutdown, InvalidResourceSpecification
from parsl_flux.executor import _unwrap_parsl_error_wrapper


@pytest.fixture
def executor(tmp_path):
    ex = FluxExecutor(provider=LocalProvider(init_blocks=0), heartbeat_threshold=3)
    ex.run_dir = str(tmp_path)
    ex.start()
    yield ex
    if ex._io_thread is not None:
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


def test_secret_never_shown_in_repr():
    secret = "ab" * 32
    assert secret not in repr(FluxExecutor(secret=secret))


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


def test_launch_command_carries_key_url_and_block(executor):
    cmd = executor._get_launch_command("7")
    argv = shlex.split(cmd)
    key = protocol.block_key(executor._master, "7").hex()
    assert argv[0] == f"{protocol.KEY_ENV}={key}"
    assert argv[1:3] == ["flux", "start"]
    assert argv[argv.index("--url") + 1] == executor.url
    assert argv[argv.index("--block-id") + 1] == "7"


def test_stranger_on_the_port_gets_nothing_and_breaks_nothing(executor, tmp_path):
    """Raw bytes, forged zmq messages with a guessed block id, and a pickle bomb:
    all dropped without unpickling; the executor keeps serving."""
    executor._get_launch_command("0")  # block 0 exists and waits for its manager
    host, port = executor.url[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"\x00" * 1000)
        raw.settimeout(1)
        try:
            assert raw.recv(4096)[:1] in (b"\xff", b"")  # at most the ZMTP greeting, never data
        except socket.timeout:
            pass
    bomb_target = tmp_path / "unpickled"

    class Bomb:
        def __reduce__(self):
            return (open, (str(bomb_target), "w"))

    ctx = zmq.Context()
    stranger = ctx.socket(zmq.DEALER)
    stranger.setsockopt(zmq.IDENTITY, b"0")
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect(executor.url)
    forged = protocol.encode(protocol.new_secret(), protocol.Kind.REGISTER,
                             {"resources": {"nodes": 1, "cores_per_node": 1, "gpus_per_node": 0}})
    stranger.send_multipart(forged)
    stranger.send_multipart([protocol.VERSION, b"register", pickle.dumps(Bomb()), b"x" * 32])
    stranger.send_multipart([b"garbage"])
    time.sleep(0.5)
    assert not stranger.poll(500), "the executor answered a stranger"
    stranger.close()
    ctx.term()
    assert not bomb_target.exists()
    assert not executor._blocks["0"].live, "a forged registration was accepted"
    # the real key still works afterwards
    real = zmq.Context().socket(zmq.DEALER)
    real.setsockopt(zmq.IDENTITY, b"0")
    real.setsockopt(zmq.LINGER, 0)
    real.connect(executor.url)
    real.send_multipart(protocol.encode(protocol.block_key(executor._master, "0"), protocol.Kind.REGISTER,
                                        {"resources": {"nodes": 1, "cores_per_node": 2, "gpus_per_node": 0}}))
    deadline = time.monotonic() + 5
    while not executor._blocks["0"].live and time.monotonic() < deadline:
        time.sleep(0.05)
    assert executor._blocks["0"].live
    real.close()


def test_request_larger_than_live_instance_fails_at_once(executor):
    executor._get_launch_command("0")
    block = executor._blocks["0"]
    from parsl_flux.resources import InstanceResources
    block.resources = InstanceResources(1, 2, 0)
    with pytest.raises(InvalidResourceSpecification, match="num_nodes"):
        executor.submit(print, {"num_nodes": 2, "num_tasks": 2})
    with pytest.raises(InvalidResourceSpecification, match="gpus_per_task"):
        executor.submit(print, {"gpus_per_task": 1})
