"""Exceptions users get back survive pickling (Parsl pickles them: retries, monitoring, checkpoints)."""

import pickle

import pytest

from parsl_flux.errors import (BlockLost, ExecutorShutdown, FluxJobFailed, InvalidResourceSpecification,
                               PayloadTooLarge, RemoteTaskError)


@pytest.mark.parametrize("exc", [
    RemoteTaskError("ValueError", "bad value", "Traceback ...\nValueError: bad value"),
    BlockLost("3", "no heartbeat for 10.2s"),
    ExecutorShutdown("executor shut down before the task finished"),
    FluxJobFailed(7, "ƒABC", "exit code 3", "disk quota exceeded"),
    InvalidResourceSpecification("num_tasks", "two", "must be an integer"),
    PayloadTooLarge("f", 300, 200),
])
def test_round_trip_through_pickle(exc):
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc)
    assert str(again) == str(exc)
    assert vars(again) == vars(exc)  # the fields handlers read (type_name, jobid, ...) come back too


def test_remote_task_error_keeps_the_remote_details():
    again = pickle.loads(pickle.dumps(RemoteTaskError("KeyError", "'x'", "Traceback ...\nKeyError: 'x'\n")))
    assert (again.type_name, again.message) == ("KeyError", "'x'")
    assert str(again) == "KeyError: 'x'\n--- remote traceback ---\nTraceback ...\nKeyError: 'x'"
