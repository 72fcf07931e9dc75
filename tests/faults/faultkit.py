"""What the fault-sweep workflows (``tests/faults/wf_*.py``) import to report on their futures.

Nothing here touches the executor: a workflow stays what a user writes (apps
in the script, ``Config(executors=[FluxExecutor()])``, the default
LocalProvider and run_dir), plus a few lines that tell the sweep
(``tests/faults/sweep.py``) what happened, as ``@@faults {json}`` lines on
stdout:

* ``say(event, **fields)``: a milestone (``loaded``, ``submitted``, ``raising``, ...);
* ``Tracker``: every tracked future reports when it resolves (its exception
  type, or ``value``), and at interpreter exit a summary says how many of
  the submitted futures are resolved, so a script that ends with an
  exception (user error, Ctrl-C) still reports. Register it *before*
  ``parsl.load`` so its exit hook runs after Parsl's.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import time

PREFIX = "@@faults "
_lock = threading.Lock()


def say(event: str, **fields) -> None:
    line = PREFIX + json.dumps({"event": event, "t": time.time(), **fields})
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def describe(fut) -> str:
    """``value``, or the name of the exception type the future failed with."""
    if fut.cancelled():
        return "CancelledError"
    exc = fut.exception(timeout=0)
    return "value" if exc is None else type(exc).__name__


class Tracker:
    def __init__(self) -> None:
        self.futures: list = []
        self.values: dict = {}
        atexit.register(self.summary)

    def __call__(self, fut, name: str = ""):
        index = len(self.futures)
        self.futures.append((name or str(index), fut))
        fut.add_done_callback(lambda f, i=index, n=name: self._done(i, n, f))
        return fut

    def _done(self, index: int, name: str, fut) -> None:
        outcome = describe(fut)
        detail = "" if outcome in ("value", "CancelledError") else str(fut.exception(timeout=0))[:300]
        say("resolved", index=index, name=name, outcome=outcome, detail=detail)

    def wait(self, timeout: float) -> None:
        """Wait for every tracked future (any outcome), at most ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        for _, fut in self.futures:
            try:
                fut.exception(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                pass

    def summary(self) -> None:
        outcomes = {}
        for name, fut in self.futures:
            outcomes[name] = describe(fut) if fut.done() else "UNRESOLVED"
        say("summary", submitted=len(self.futures), resolved=sum(f.done() for _, f in self.futures),
            outcomes=outcomes)
