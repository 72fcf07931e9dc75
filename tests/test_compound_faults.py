"""Compound faults on a local block (issue 20: nothing lost under compound faults).

A connection reset (``ss -K`` destroys the manager's TCP socket, so the driver
gets a RST, as from a flapping link), a manager that cannot come back, and the
executor's own shutdown, against a real Flux. The 2-node cases (a node lost
mid-MPI-job, a partition) are in ``tests/test_cluster.py``.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import cloudpickle
import pytest

from conftest import wait_for
from parsl_flux.errors import BlockLost, ExecutorShutdown

pytestmark = pytest.mark.flux
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # jobs cannot import this test module

needs_ss_kill = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ss") is None,
                                   reason="needs root and ss(8) to reset the manager's connection (ss -K)")


def nap_and_log(seconds, tag, log):
    """Sleep, then append ``tag`` to ``log``: each line is one run of the app."""
    import time

    time.sleep(seconds)
    with open(log, "a") as f:
        f.write(f"{tag}\n")
    return tag


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def _driver_port(ex):
    return int(ex.url.rsplit(":", 1)[1])


def _reset_manager_connection(ex):
    """Destroy the manager's end of its connection to the driver: both see a reset."""
    port = _driver_port(ex)
    subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"], check=True,
                   capture_output=True, timeout=10)


def _running(ex, n, block_id="0"):
    return len(ex.blocks[block_id].in_flight) >= n


@needs_ss_kill
def test_a_connection_reset_resumes_the_session_and_loses_nothing(make_executor, tmp_path):
    """Three resets while 6 tasks run and finish: the manager resumes its session on
    the new connection, the block survives, every future gets its own value, and
    no app ran twice."""
    ex = make_executor(heartbeat_threshold=10.0)
    log = tmp_path / "runs.log"
    futures = [ex.submit(nap_and_log, {}, 1.0 + 0.4 * i, i, str(log)) for i in range(6)]
    wait_for(lambda: _running(ex, 1), 60, "tasks to reach the block")
    for _ in range(3):
        time.sleep(0.8)
        _reset_manager_connection(ex)
    assert [f.result(timeout=60) for f in futures] == list(range(6))
    block = ex.blocks["0"]
    assert block.live and not block.closed, "the block was lost to a connection reset"
    assert sorted(int(line) for line in log.read_text().split()) == list(range(6)), "an app ran twice or not at all"
    assert ex.submit(nap, {}, 0).result(timeout=60) == 0, "the block does not serve after resuming"
    manager_log = (tmp_path / "run0" / ex.label / "block-0" / "manager.log").read_text()
    assert "resumed" in manager_log


@needs_ss_kill
def test_an_unreachable_manager_is_lost_fast_and_logged_once(make_executor, tmp_path, caplog):
    """A reset while the manager is stopped (it cannot reconnect): the driver knows
    the route is gone and loses the block within a few seconds, not the 30 s
    heartbeat threshold, saying so once."""
    ex = make_executor(heartbeat_threshold=30.0)
    doomed = ex.submit(nap, {}, 60)
    wait_for(lambda: _running(ex, 1), 60, "the task to reach the block")
    manager = ex.blocks["0"].info["pid"]
    os.kill(manager, signal.SIGSTOP)
    try:
        _reset_manager_connection(ex)
        start = time.monotonic()
        with pytest.raises(BlockLost, match="unreachable"):
            doomed.result(timeout=25)
        assert time.monotonic() - start < 8, "the driver waited for the heartbeat threshold"
    finally:
        os.kill(manager, signal.SIGCONT)
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage() and r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_shutdown_fails_running_tasks_with_executor_shutdown(make_executor):
    """What the README and ``shutdown``'s docstring promise: a task still running at
    shutdown fails with ExecutorShutdown, not BlockLost('scaled in')."""
    ex = make_executor()
    running = ex.submit(nap, {}, 60)
    wait_for(lambda: _running(ex, 1), 60, "the task to reach the block")
    time.sleep(1)
    ex.shutdown()
    with pytest.raises(ExecutorShutdown):
        running.result(timeout=5)


TWO_BROKERS = ("{flux} start --test-size=2 {flux} env {python} -m parsl_flux.allocation.manager --url {url} "
               "--block-id {block_id} --workdir {workdir} --heartbeat-period {heartbeat_period} "
               "--driver-timeout {heartbeat_threshold}")


def _rank1_broker_pid(flux_path, block):
    out = subprocess.run([flux_path, "proxy", block.info["flux_uri"], "flux", "exec", "-r", "1", "flux",
                          "getattr", "broker.pid"], capture_output=True, text=True, timeout=30, check=True)
    return int(out.stdout.strip())


def test_a_lost_node_fails_its_job_as_a_lost_block_and_retires_the_block(make_executor, flux_path, caplog):
    """SIGKILL of broker rank 1 while a 2-node job runs: that task fails with
    NodeLost (a BlockLost, so Parsl retries it), the block reports itself
    degraded and gets no new 2-node work (no 'unsatisfiable' job), it is retired
    once idle, and the next 2-node app runs on a healthy block."""
    from parsl_flux.errors import NodeLost

    ex = make_executor(launch_cmd=TWO_BROKERS, heartbeat_threshold=30.0)
    two_nodes = {"num_tasks": 2, "num_nodes": 2}
    doomed = ex.submit(nap, two_nodes, 60)
    wait_for(lambda: _running(ex, 1), 60, "the 2-node task to reach the block")
    time.sleep(3)  # it runs on both brokers
    os.kill(_rank1_broker_pid(flux_path, ex.blocks["0"]), signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(NodeLost):
        doomed.result(timeout=30)
    assert isinstance(doomed.exception(), BlockLost)
    retry = ex.submit(nap, two_nodes, 0)
    wait_for(lambda: ex.blocks["0"].closed, 20, "the degraded block to be retired")
    assert time.monotonic() - start < 20
    assert not retry.done(), f"the retry was not kept for a healthy block: {retry.exception()!r}"
    assert any("degraded" in r.getMessage() for r in caplog.records)
    ex.scale_out_facade(1)
    assert retry.result(timeout=90) == 0
