"""The runner's payload handling (pure: no Flux, no sockets)."""

import sys

import cloudpickle

from parsl_flux.job.runner import dump_value, run_payload
from parsl_flux.wire.payload import dump_function, dumps_task


def _payload(func, *args, **kwargs):
    return dumps_task(dump_function(func), args, kwargs)


def _value(outcome):
    stream, *buffers = outcome["value"]
    return cloudpickle.loads(stream, buffers=buffers)


def test_result_is_returned():
    out = run_payload(_payload(lambda a, b=0: a + b, 2, b=3))
    assert out["outcome"] == "value" and _value(out) == 5


def test_an_array_result_is_sent_from_where_the_app_left_it():
    """No copy of a result's array on the way out: its out-of-band part is the array's memory."""
    import numpy

    arr = numpy.ones(1 << 16)
    blob = dump_value({"result": arr})
    assert len(blob) == 2 and numpy.shares_memory(numpy.frombuffer(blob[1]), arr)
    assert (cloudpickle.loads(blob[0], buffers=blob[1:])["result"] == arr).all()


def test_exception_keeps_type_message_and_traceback():
    def fails():
        raise KeyError("missing-thing")

    out = run_payload(_payload(fails))
    assert out["outcome"] == "raised"
    assert out["type"] == "KeyError" and "missing-thing" in out["message"]
    assert "fails" in out["traceback"]
    exc = cloudpickle.loads(out["exception"])
    assert isinstance(exc, KeyError)
    assert exc.__traceback__ is not None


def test_unpicklable_result_is_an_error_not_a_crash():
    import threading

    out = run_payload(_payload(threading.Lock))
    assert out["outcome"] == "raised" and "cannot be serialized" in out["message"]


def test_sys_exit_in_app_is_an_app_failure():
    out = run_payload(_payload(sys.exit, 3))
    assert out["outcome"] == "raised" and out["type"] == "SystemExit"
