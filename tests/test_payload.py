"""Task payloads (pure): cloudpickle semantics, without cloudpickle in the runner."""

import json
import math
import os.path
import pickle
import subprocess
import sys

import cloudpickle
import pytest

from parsl_flux.wire import payload

OFFSET = 10


def _helper(x):
    return x + OFFSET


def _factorial(n):
    return 1 if n <= 1 else n * _factorial(n - 1)


def _uses_everything(a, b=2, *, c=3):
    """Defaults, keyword defaults, a closure, a recursive global, a module and a submodule."""
    y = 5

    def inner():
        return a + y

    return _helper(a) + int(math.sqrt(b * b)) + c + inner() + len(os.path.sep) + _factorial(4)


class _Point:
    def __init__(self, x):
        self.x = x


# pickle this module's functions by value, as a workflow script's __main__ is
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _load_in_fresh_runner(blob: list, code: str) -> dict:
    """Load ``blob`` in a ``python -S`` interpreter, as a runner does; run ``code``."""
    script = ("import _pickle, json, sys\nfrom parsl_flux.wire.payload import loads\n"
              f"func, args, kwargs = loads(_pickle.loads(sys.stdin.buffer.read()))\n{code}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-S", "-c", script], input=pickle.dumps(blob), capture_output=True, env=env,
                         check=True)
    return json.loads(out.stdout)


def test_by_value_function_loads_without_cloudpickle():
    data = payload.dumps((_uses_everything, (1,), {"c": 4}))
    out = _load_in_fresh_runner(data, "print(json.dumps({'value': func(*args, **kwargs), "
                                      "'cloudpickle': 'cloudpickle' in sys.modules}))")
    assert out == {"value": _uses_everything(1, c=4), "cloudpickle": False}


def test_a_task_payload_carries_its_function_s_own_pickle_and_its_arrays_out_of_band():
    """What the executor sends: the function pickled once (``dump_function``,
    cached by the executor), inside the call's pickle; the arguments' arrays
    are parts of their own; a fresh runner loads it without cloudpickle."""
    import numpy

    function_pickle = payload.dump_function(_uses_everything)
    arr = numpy.arange(1 << 16, dtype=numpy.float64)
    blob = payload.dumps_task(function_pickle, (1, arr), {"c": 4})
    assert len(blob) == 2 and memoryview(blob[1]).nbytes == arr.nbytes
    func, (a, back), kwargs = payload.loads_task(blob)
    assert func(a, **kwargs) == _uses_everything(1, c=4) and numpy.array_equal(back, arr)
    script = ("import _pickle, json, sys\nfrom parsl_flux.wire.payload import loads_task\n"
              "func, args, kwargs = loads_task(_pickle.loads(sys.stdin.buffer.read()))\n"
              "print(json.dumps({'value': func(args[0], **kwargs), 'cloudpickle': 'cloudpickle' in sys.modules}))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-S", "-c", script], input=pickle.dumps(blob), capture_output=True, env=env,
                         check=True)
    assert json.loads(out.stdout) == {"value": _uses_everything(1, c=4), "cloudpickle": False}


def test_class_by_value_still_loads_through_cloudpickle():
    data = payload.dumps((lambda: _Point(7).x, (), {}))
    out = _load_in_fresh_runner(data, "print(json.dumps({'value': func(), 'cloudpickle': 'cloudpickle' in sys.modules}))")
    assert out == {"value": 7, "cloudpickle": True}


def test_round_trip_keeps_attributes_and_empty_cells():
    def outer():
        def f():
            return late

        f.tag = "kept"
        before = payload.dumps(f)  # the cell of `late` is still empty here
        late = 3
        return f, before, payload.dumps(f)

    func, before, after = outer()
    back = payload.loads(after)
    assert back() == 3 and back.tag == "kept" and back.__name__ == "f"
    assert back.__qualname__ == func.__qualname__ and back.__module__ == func.__module__
    with pytest.raises(NameError, match="late"):
        payload.loads(before)()


def test_plain_cloudpickle_payloads_still_load():
    assert payload.loads([cloudpickle.dumps((_helper, (1,), {}))])[0](1) == 11


def test_unknown_persistent_id_is_refused():
    class Bad(pickle.Pickler):
        def persistent_id(self, obj):
            return "os.system" if obj == "x" else None

    import io

    buf = io.BytesIO()
    Bad(buf).dump(["x"])
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        payload.loads([buf.getvalue()])


def test_self_check_guards_the_lean_reconstructors():
    class Broken(cloudpickle.Pickler):
        def persistent_id(self, obj):
            return "parsl_flux.wire.payload.nope" if obj is sys else None

    assert not payload._self_check(Broken)
    assert payload._self_check(payload._lean_pickler_class())
    assert payload._lean_pickler_class() is not cloudpickle.Pickler  # cloudpickle 3 here: the lean path is on


def test_arrays_travel_out_of_band_as_they_were_at_submit():
    """An array's data is a part of its own, copied once (not into the pickle);
    the copy is the argument as it was when the payload was made, and the app
    gets a writable array on the part's buffer."""
    import numpy

    arr = numpy.arange(1 << 18, dtype=numpy.float64)
    blob = payload.dumps((_helper, (arr,), {}))
    assert len(blob) == 2 and memoryview(blob[1]).nbytes == arr.nbytes and len(blob[0]) < 4096
    arr += 1  # the user's script goes on with its array
    _, (back,), _ = payload.loads(blob)
    assert back[0] == 0 and back[-1] == (1 << 18) - 1
    back += 1  # an app may work in place, as under HTEX
    assert numpy.shares_memory(back, numpy.frombuffer(blob[1], dtype=numpy.float64))
