"""Parsl's monitoring wrapper with the executor's radio, in this process (no Flux):
the messages a Flux job sends back, resource rows included."""

import pickle
import subprocess
import sys

from parsl.monitoring.message_type import MessageType
from parsl.monitoring.remote import monitor_wrapper

from parsl_flux.driver import monitoring
from parsl_flux.driver.monitoring import FluxRadio


BURN = "import time\nend = time.process_time() + {0}\nwhile time.process_time() < end: pass\n"


def busy(seconds):
    """Burn ``seconds`` of CPU in this process, then as much in a waited-for child (a bash app's command)."""
    exec(BURN.format(seconds))
    subprocess.run([sys.executable, "-c", BURN.format(seconds)], check=True)
    return "done"


def _run_wrapped(func, *args, task_id=7, try_id=0):
    wrapped, args, kwargs = monitor_wrapper(f=func, args=args, kwargs={}, x_try_id=try_id, x_task_id=task_id,
                                            radio_config=FluxRadio(), run_id="run-1", logging_level=20,
                                            sleep_dur=5, monitor_resources=False, run_dir="/nonexistent")
    value = wrapped(*args, **kwargs)
    return value, [pickle.loads(m) for m in monitoring.drain()]


def test_a_wrapped_task_reports_its_block_and_two_resource_rows(monkeypatch):
    monkeypatch.setenv("PARSL_WORKER_BLOCK_ID", "3")
    value, messages = _run_wrapped(busy, 0.3)
    assert value == "done"
    kinds = [kind for kind, _ in messages]
    assert kinds == [MessageType.WORKER_TASK_INFO, MessageType.RESOURCE_INFO,
                     MessageType.WORKER_TASK_INFO, MessageType.RESOURCE_INFO]
    first, start, last, end = (body for _, body in messages)
    assert first["block_id"] == "3" and last["block_id"] == "3"
    for row in (start, end):
        assert (row["run_id"], row["task_id"], row["try_id"]) == ("run-1", 7, 0)
        assert row["psutil_process_memory_resident"] > 1 << 20
    assert start["timestamp"] < end["timestamp"]
    assert start["psutil_process_time_user"] < 0.05 and start["resource_monitoring_interval"] is None
    cpu = end["psutil_process_time_user"] + end["psutil_process_time_system"]
    assert cpu >= 0.6, f"the app's own 0.3 s of CPU and its child's 0.3 s, got {cpu}"
    assert end["resource_monitoring_interval"] >= 0.6  # the task's wall time


def test_each_task_of_a_long_lived_process_gets_its_own_usage():
    """A packing worker runs task after task in one process: CPU time is per task."""
    _run_wrapped(busy, 0.3, task_id=1)
    _, messages = _run_wrapped(len, "x", task_id=2)
    rows = [body for kind, body in messages if kind == MessageType.RESOURCE_INFO]
    assert [r["task_id"] for r in rows] == [2, 2]
    assert rows[1]["psutil_process_time_user"] + rows[1]["psutil_process_time_system"] < 0.2
