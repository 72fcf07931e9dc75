"""Packing mode against a real Flux: small apps on worker jobs, large apps as their own jobs."""

import os
import signal
import sys
import time
from concurrent.futures import CancelledError
from pathlib import Path

import cloudpickle
import pytest

from conftest import wait_for
from parsl_flux.errors import FluxJobFailed

pytestmark = pytest.mark.flux
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def where(x):
    return x, os.environ.get("FLUX_JOB_ID"), os.environ.get("PARSL_FLUX_TASK")


def fail():
    raise RuntimeError("packed failure")


def nap(seconds, marker=None):
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds


def two_ranks():
    return os.environ["FLUX_JOB_SIZE"], time.monotonic()


def test_small_apps_share_worker_jobs(make_executor):
    ex = make_executor(packing=True)
    results = [f.result(timeout=120) for f in [ex.submit(where, {}, i) for i in range(300)]]
    assert [r[0] for r in results] == list(range(300))
    jobs = {r[1] for r in results}
    assert 1 <= len(jobs) <= 2, "packed apps should run on at most one worker per core"
    assert all(r[2] is None for r in results)
    # a two-rank app in the same executor is a Flux job of its own
    size, _ = ex.submit(two_ranks, {"num_tasks": 2}).result(timeout=120)
    assert size == "2"


def test_packed_exception_and_result_mix(make_executor):
    ex = make_executor(packing=True)
    good = ex.submit(where, {}, 1)
    with pytest.raises(RuntimeError, match="packed failure"):
        ex.submit(fail, {}).result(timeout=60)
    assert good.result(timeout=60)[0] == 1


def test_cancel_queued_and_running_packed_tasks(make_executor, tmp_path):
    ex = make_executor(packing=True, packing_workers=1)
    marker = tmp_path / "running"
    running = ex.submit(nap, {}, 60, str(marker))
    queued = ex.submit(nap, {}, 0.1)
    wait_for(marker.exists, 60, "the packed task to start")
    assert queued.cancel()
    assert running.cancel()
    with pytest.raises(CancelledError):
        running.result(timeout=1)
    assert ex.submit(where, {}, 7).result(timeout=60)[0] == 7
    wait_for(lambda: ex.outstanding() == 0, 30, "cancelled tasks to be cleaned up")


def test_worker_killed_mid_task_fails_the_task_not_loses_it(make_executor, tmp_path):
    ex = make_executor(packing=True)
    marker = tmp_path / "pid"
    victim = ex.submit(nap, {}, 60, str(marker))
    wait_for(lambda: marker.exists() and marker.read_text(), 60, "the packed task to start")
    os.kill(int(marker.read_text()), signal.SIGKILL)
    with pytest.raises(FluxJobFailed, match="packing worker"):
        victim.result(timeout=30)
    assert ex.submit(where, {}, 3).result(timeout=60)[0] == 3


def test_pool_yields_cores_to_a_waiting_mpi_job(make_executor):
    """A 2-core job must not wait for a long queue of packed apps to drain."""
    ex = make_executor(packing=True, packing_idle_timeout=1)
    small = [ex.submit(nap, {}, 0.2) for _ in range(60)]  # ~6 s of work on 2 workers
    time.sleep(1.5)
    big = ex.submit(two_ranks, {"num_tasks": 2})
    big.result(timeout=60)
    finished_before_big = sum(1 for f in small if f.done())
    assert finished_before_big < len(small), "the MPI job waited for every packed app"
    assert [f.result(timeout=120) for f in small] == [0.2] * 60


def noop():
    return None


def test_no_per_task_state_after_futures_resolve(make_executor):
    """Driver memory stays flat with N: once 3000 futures resolved and the
    caller dropped them, no task record, future or payload of theirs is alive
    in the driver (the executor's dicts keep only their table capacity)."""
    import gc

    from parsl_flux.driver.io_loop import Task, TaskFuture

    ex = make_executor(packing=True)
    futures = [ex.submit(noop, {}) for _ in range(3000)]
    for f in futures:
        f.result(timeout=120)
    assert not ex.tasks and not ex._driver.live_tasks and not ex._driver.pending
    assert all(not b.in_flight for b in ex.blocks.values())
    del futures, f
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, (Task, TaskFuture))]
    assert alive == [], f"{len(alive)} task objects outlived their futures"
