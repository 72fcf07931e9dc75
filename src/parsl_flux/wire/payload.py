"""Task payloads: how ``(func, args, kwargs)`` travels from the driver to a runner.

The driver pickles with cloudpickle, so everything cloudpickle handles works.
A workflow script's apps live in ``__main__``, so cloudpickle pickles them *by
value*, and its pickle then names cloudpickle's reconstructors
(``cloudpickle.cloudpickle._make_function`` and a few more). Unpickling such a
payload with plain ``pickle`` imports cloudpickle, and with it ``inspect``,
``typing``, ``logging``, ``platform``, ...: 40-80 ms of CPU in every Flux job
on a 2-core machine, more than the rest of the runner together.

So :func:`dumps` writes the six reconstructors that a by-value *function*
needs as persistent ids, and :func:`loads` (which runs in the runner and
imports nothing beyond what ``_pickle`` itself loads) resolves them to the
small equivalents below. Anything else cloudpickle reconstructs (classes or
enums defined in ``__main__``, dynamic modules, ...) keeps its reference to
cloudpickle, which the runner then imports as it always would. The mapping is
made only for the cloudpickle major version whose reconstructors these copies
mirror; with any other version payloads are plain cloudpickle pickles.
"""

import _pickle
import io
import sys
import types  # already loaded by _pickle (through functools): free in the runner

from parsl_flux.wire.protocol import PICKLE_PROTOCOL

_PID_PREFIX = "parsl_flux.wire.payload."
_MIRRORED_CLOUDPICKLE_MAJOR = "3"


def _make_function(code: types.CodeType, globals_: dict, name: str, argdefs: "tuple | None",
                   closure: "tuple | None") -> types.FunctionType:
    """An empty-bodied function skeleton; its state arrives through :func:`_function_setstate`."""
    globals_["__builtins__"] = __builtins__
    return types.FunctionType(code, globals_, name, argdefs, closure)


def _function_setstate(func: types.FunctionType, state: "tuple[dict, dict]") -> None:
    """Fill in a skeleton: ``__dict__``, referenced globals, closure cells, other slots.

    ``__globals__`` and ``__closure__`` are read-only attributes, so they are
    updated in place; ``_cloudpickle_submodules`` only kept the submodules the
    function uses alive during unpickling (they are imported by now)."""
    attrs, slots = state
    func.__dict__.update(attrs)
    func.__globals__.update(slots.pop("__globals__"))
    func.__globals__["__builtins__"] = __builtins__
    closure = slots.pop("__closure__")
    slots.pop("_cloudpickle_submodules", None)
    if closure is not None:
        for target, source in zip(func.__closure__, closure):
            try:
                target.cell_contents = source.cell_contents
            except ValueError:  # an empty cell stays empty
                pass
    for name, value in slots.items():
        setattr(func, name, value)


def _make_empty_cell() -> types.CellType:
    return types.CellType()


def _make_cell(value: object) -> types.CellType:
    return types.CellType(value)


def _builtin_type(name: str) -> type:
    """A type of the ``types`` module by name (``CodeType``, ``CellType``, ...)."""
    return getattr(types, name)


def _subimport(name: str) -> types.ModuleType:
    """Module ``name``, imported if needed (``__import__`` returns the top package)."""
    __import__(name)
    return sys.modules[name]


_LEAN = {
    "_make_function": _make_function,
    "_function_setstate": _function_setstate,
    "_make_empty_cell": _make_empty_cell,
    "_make_cell": _make_cell,
    "_builtin_type": _builtin_type,
    "subimport": _subimport,
}


class _Unpickler(_pickle.Unpickler):
    def persistent_load(self, pid: object) -> object:
        name = pid[len(_PID_PREFIX):] if isinstance(pid, str) and pid.startswith(_PID_PREFIX) else None
        if name not in _LEAN:
            raise _pickle.UnpicklingError(f"unknown persistent id in task payload: {pid!r}")
        return _LEAN[name]


def loads(blob: list) -> object:
    """Unpickle a payload made by :func:`dumps` (runs in every Flux job): its
    arrays are made on the buffers the payload arrived in, without a copy."""
    return _Unpickler(io.BytesIO(blob[0]), buffers=blob[1:]).load()


_pickler_class: "type | None" = None


def _probe(seed: int) -> "types.FunctionType":
    """A closure with defaults, keyword defaults and a module global: what :func:`_self_check` ships."""
    offset = seed * 2

    def probe(x: int, y: int = 3, *, z: int = 4) -> int:
        return x + y + z + offset + len(sys.argv[:0])

    probe.tag = seed  # type: ignore[attr-defined]
    return probe


def _self_check(pickler_class: type) -> bool:
    """True if a by-value closure survives dumps/loads through the lean reconstructors."""
    buf = io.BytesIO()
    probe = _probe(5)
    try:
        pickler_class(buf, protocol=PICKLE_PROTOCOL).dump(probe)
        back = loads([buf.getvalue()])
        return back(1) == probe(1) == 18 and back.tag == 5 and back.__qualname__ == probe.__qualname__  # type: ignore[attr-defined]
    except Exception:
        return False


def _lean_pickler_class() -> type:
    """cloudpickle's Pickler, writing its function reconstructors as persistent ids.

    Built on first use, so that runners, which only call :func:`loads`, never
    import cloudpickle for it. Falls back to cloudpickle's own Pickler (plain
    pickles, still loadable by :func:`loads`) for another cloudpickle major
    version, or if a closure does not survive the round trip."""
    global _pickler_class
    if _pickler_class is None:
        import cloudpickle
        import cloudpickle.cloudpickle as cp

        ids = {id(obj): _PID_PREFIX + name for name in _LEAN if (obj := getattr(cp, name, None)) is not None}

        class LeanPickler(cloudpickle.Pickler):
            def persistent_id(self, obj: object) -> "str | None":
                return ids.get(id(obj))

        mirrored = cloudpickle.__version__.split(".")[0] == _MIRRORED_CLOUDPICKLE_MAJOR
        if mirrored and _self_check(LeanPickler):
            _pickler_class = LeanPickler
        else:
            import logging  # driver side only

            logging.getLogger(__name__).warning(
                "cloudpickle %s: payloads are plain cloudpickle pickles, and jobs import cloudpickle",
                cloudpickle.__version__)
            _pickler_class = cloudpickle.Pickler
    return _pickler_class


def dump_function(func: object) -> bytes:
    """Pickle an app's function on its own, all in band (no buffers), for
    :func:`dumps_task`. The executor caches this per function, as Parsl's own
    serializer does for callables (``functools.lru_cache``, "under the
    assumption that callables are immutable"): a function defined in the
    workflow script pickles by value (25 us for a small one, every submit
    otherwise), and is the same object for every task of an app."""
    buf = io.BytesIO()
    _lean_pickler_class()(buf, protocol=PICKLE_PROTOCOL).dump(func)
    return buf.getvalue()


def dumps_task(function_pickle: bytes, args: tuple, kwargs: dict) -> list:
    """A task's payload for :func:`loads_task`: the function's pickle
    (:func:`dump_function`) as a bytes object inside the pickle of the call,
    whose arrays travel out of band (:func:`dumps`)."""
    return dumps((function_pickle, args, kwargs))


def loads_task(blob: list) -> "tuple[object, tuple, dict]":
    """``(func, args, kwargs)`` of a payload made by :func:`dumps_task` (runs in every Flux job)."""
    function_pickle, args, kwargs = loads(blob)
    return loads([function_pickle]), args, kwargs


def dumps(obj: object) -> list:
    """Pickle ``obj`` (on the driver) with cloudpickle, for :func:`loads`: a blob
    (:func:`parsl_flux.wire.protocol.out_of_band`) whose buffers are the data of the
    arrays in ``obj`` (pickle protocol 5), each copied once, here, so that the
    task runs on the arguments as they were when it was submitted, as in Parsl's
    other executors, and a resent payload is the same. Copies are writable, so
    the app's arrays are too."""
    buf = io.BytesIO()
    buffers: list = []
    _lean_pickler_class()(buf, protocol=PICKLE_PROTOCOL, buffer_callback=buffers.append).dump(obj)
    return [buf.getvalue(), *(bytearray(b.raw()) for b in buffers)]
