"""FluxExecutor against a real Flux instance, through the executor API."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import CancelledError
from pathlib import Path

import cloudpickle
import pytest
from parsl.jobs.states import JobState
from parsl.providers import LocalProvider

from conftest import wait_for
from parsl_flux.errors import BlockLost, FluxJobFailed, InvalidResourceSpecification

pytestmark = pytest.mark.flux

# Jobs do not have tests/ on their path: ship this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def double(x):
    return 2 * x


def affinity():
    return len(os.sched_getaffinity(0))


def env_of(name):
    return os.environ.get(name)


def crash_with_signal():
    os.kill(os.getpid(), signal.SIGKILL)


def exit_with_stderr():
    sys.stderr.write("disk quota exceeded on /scratch\n")
    sys.stderr.flush()
    os._exit(3)


def fail():
    raise ValueError("bad input 42")


def nap(seconds):
    time.sleep(seconds)
    return seconds


def test_results_and_200_in_flight(make_executor):
    ex = make_executor()
    futures = [ex.submit(double, {}, i) for i in range(200)]
    assert [f.result(timeout=240) for f in futures] == [2 * i for i in range(200)]
    assert ex.outstanding() == 0 and not ex.tasks, "per-task state kept after completion"


def modules_loaded_in_job():
    return sorted(sys.modules)


def test_job_loads_a_by_value_app_with_the_standard_library_only(make_executor):
    loaded = make_executor().submit(modules_loaded_in_job, {}).result(timeout=60)
    heavy = {"cloudpickle", "parsl", "zmq", "typing", "logging", "re", "encodings.idna"}
    assert not heavy & set(loaded), heavy & set(loaded)


def test_app_exception_reraises_with_remote_traceback(make_executor):
    ex = make_executor()
    with pytest.raises(ValueError, match="bad input 42") as info:
        ex.submit(fail, {}).result(timeout=60)
    frames = [f.name for f in __import__("traceback").extract_tb(info.value.__traceback__)]
    assert "fail" in frames


def test_cores_per_task_and_env_seen_by_task(make_executor):
    ex = make_executor()
    assert ex.submit(affinity, {"cores_per_task": 2}).result(timeout=60) == 2
    assert ex.submit(affinity, {}).result(timeout=60) == 1
    assert ex.submit(env_of, {"env": {"PF_TEST": "yes"}}, "PF_TEST").result(timeout=60) == "yes"
    for secret in ("PARSL_FLUX_KEY", "PARSL_FLUX_KEY_FILE", "PARSL_FLUX_SECRET"):
        assert ex.submit(env_of, {}, secret).result(timeout=60) is None, f"{secret} leaked into jobs"
    assert not os.listdir(ex.key_dir), "the manager removes its key file once read"


def test_job_killed_or_failing_reports_status_and_stderr(make_executor):
    ex = make_executor()
    with pytest.raises(FluxJobFailed) as killed:
        ex.submit(crash_with_signal, {}).result(timeout=60)
    assert "signal" in killed.value.status.lower() or "killed" in killed.value.status.lower()
    with pytest.raises(FluxJobFailed) as failed:
        ex.submit(exit_with_stderr, {}).result(timeout=60)
    assert "exit code 3" in failed.value.status
    assert "disk quota exceeded" in failed.value.stderr_tail
    assert failed.value.jobid.startswith("ƒ")


def test_walltime_limits_the_job(make_executor):
    ex = make_executor()
    start = time.monotonic()
    with pytest.raises(FluxJobFailed):
        ex.submit(nap, {"walltime": 2}, 60).result(timeout=60)
    assert time.monotonic() - start < 30


def test_request_larger_than_instance_fails_at_once(make_executor):
    ex = make_executor()
    for spec, key in (({"num_nodes": 2, "num_tasks": 2}, "num_nodes"), ({"gpus_per_task": 1}, "gpus_per_task"),
                      ({"cores_per_task": 64}, "cores_per_task")):
        with pytest.raises(InvalidResourceSpecification, match=key):
            ex.submit(double, spec, 1)
    assert ex.submit(double, {}, 4).result(timeout=60) == 8


def test_cancel_running_task(make_executor):
    ex = make_executor()
    slow = ex.submit(nap, {}, 120)
    time.sleep(2)
    assert slow.cancel()
    with pytest.raises(CancelledError):
        slow.result(timeout=1)
    assert ex.submit(double, {}, 5).result(timeout=60) == 10
    wait_for(lambda: ex.outstanding() == 0, 30, "the cancelled job to be cleaned up")


def test_shutdown_waits_for_tasks_in_flight(make_executor):
    ex = make_executor()
    futures = [ex.submit(nap, {}, 1) for _ in range(6)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [1] * 6
    job_id = ex.blocks_to_job_id["0"]
    wait_for(lambda: ex.provider.status([job_id])[0].state in (JobState.COMPLETED, JobState.CANCELLED), 30,
             "the block's Flux instance to exit")


def _broker_pid(ex, block_id="0"):
    manager_pid = ex.blocks[block_id].info["pid"]
    return int(Path(f"/proc/{manager_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_instance_killed_mid_run_fails_futures_within_seconds(make_executor):
    ex = make_executor(heartbeat_period=0.5, heartbeat_threshold=3)
    futures = [ex.submit(nap, {}, 60) for _ in range(4)]
    time.sleep(2)
    os.kill(_broker_pid(ex), signal.SIGKILL)
    start = time.monotonic()
    for f in futures:
        with pytest.raises(BlockLost):
            f.result(timeout=30)
    assert time.monotonic() - start < 15
    assert ex.status()["0"].state in (JobState.FAILED, JobState.COMPLETED, JobState.CANCELLED)
    assert ex.blocks["0"].closed


def test_driver_gone_ends_the_instance(make_executor):
    ex = make_executor(heartbeat_period=0.5, heartbeat_threshold=3)
    ex.submit(nap, {}, 120)
    time.sleep(1)
    manager_pid = ex.blocks["0"].info["pid"]
    ex._driver._stop.set()  # the driver stops talking, as if it had died
    wait_for(lambda: not Path(f"/proc/{manager_pid}").exists(), 30, "the manager to notice the silent driver")


def test_two_blocks_share_the_work(make_executor):
    ex = make_executor(blocks=2, provider=LocalProvider(init_blocks=0, max_blocks=2))
    futures = [ex.submit(nap, {}, 0.5) for _ in range(8)]
    uris = {ex.submit(env_of, {}, "FLUX_URI") for _ in range(20)}
    [f.result(timeout=120) for f in futures]
    assert len({f.result(timeout=120) for f in uris}) == 2
    assert ex.scale_in(1) and sum(1 for b in ex.blocks.values() if b.live) == 1
    assert ex.submit(double, {}, 3).result(timeout=60) == 6


def test_multi_node_shape_on_test_instance(make_executor, flux_path, tmp_path):
    """num_nodes spreads tasks over brokers: a --test-size=2 instance has two."""
    ex = make_executor(launch_cmd="{flux} start --test-size=2 " + "{flux} env {python} -m parsl_flux.allocation.manager "
                       "--url {url} --block-id {block_id} --workdir {workdir}")
    assert ex.blocks["0"].resources.nodes == 2
    out = tmp_path / "ranks"
    cmd = f"echo $FLUX_TASK_RANK $(flux getattr rank) >> {out}"
    fut = ex.submit(subprocess.check_call, {"num_tasks": 4, "num_nodes": 2}, cmd, shell=True)
    assert fut.result(timeout=60) == 0
    lines = [line.split() for line in out.read_text().splitlines()]
    assert sorted(int(rank) for rank, _ in lines) == [0, 1, 2, 3]
    assert {broker for _, broker in lines} == {"0", "1"}


@pytest.fixture
def external_instance(flux_path, tmp_path):
    """A Flux instance started outside the executor; yields its URI."""
    uri_file = tmp_path / "uri"
    instance = subprocess.Popen([flux_path, "start", "bash", "-c", f'echo "$FLUX_URI" > {uri_file}; sleep 300'],
                                start_new_session=True)
    try:
        wait_for(lambda: uri_file.exists() and uri_file.read_text().strip(), 30, "the external instance")
        yield uri_file.read_text().strip(), instance
    finally:
        os.killpg(instance.pid, signal.SIGKILL)
        instance.wait()


def test_attach_mode_uses_existing_instance(make_executor, external_instance, flux_path):
    uri, instance = external_instance
    ex = make_executor(flux_uri=uri)
    assert ex.blocks["0"].info["flux_uri"] == uri
    assert ex.submit(env_of, {}, "FLUX_URI").result(timeout=60) == uri
    ex.shutdown()
    assert instance.poll() is None, "attach mode must not stop the instance it attached to"
    config = subprocess.run([flux_path, "config", "get"], env={**os.environ, "FLUX_URI": uri}, capture_output=True,
                            text=True, timeout=30, check=True).stdout
    assert json.loads(config) == {}, "attach mode must leave the instance's settings as they were"


def test_two_executors_on_one_instance_do_not_steal_job_ends(make_executor, external_instance):
    """Each manager waits for its own jobs: neither reaps the other's, nor the
    job a previous manager left behind when it was cancelled."""
    uri, _ = external_instance
    first = make_executor(flux_uri=uri)
    leftover = first.submit(nap, {}, 60)
    time.sleep(2)
    first.shutdown(wait=False)  # its manager cancels the job it leaves behind
    with pytest.raises(Exception):
        leftover.result(timeout=1)
    a, b = make_executor(flux_uri=uri), make_executor(flux_uri=uri)
    futures = [ex.submit(double, {}, i) for i in range(15) for ex in (a, b)]
    assert sorted(f.result(timeout=120) for f in futures) == sorted(2 * i for i in range(15) for _ in (a, b))
