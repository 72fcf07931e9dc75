"""The manager's watch on its Flux instance's nodes (broker ranks).

When a node of a multi-node block dies or is cut off, Flux marks its broker
rank offline (``resource.status``) and fails the jobs that used it. The block
is then smaller than the driver thinks: work it can no longer run must go
elsewhere. This thread polls ``resource.status`` and reports, once per new
loss, which ranks went offline and on which hosts, so the manager can tell the
driver its block is degraded.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, List, Optional, Set

from parsl_flux.allocation.events import Event, RanksLost

logger = logging.getLogger(__name__)

NODE_FAILURE_MARKS = ("node failure", "node-failure")
"""Words in Flux's job exception when a job died with a broker rank (``exec node failure on HOST (rank N)``)."""


def died_with_a_node(errstr: str) -> bool:
    """Whether Flux ended a failed job because one of its nodes died (its
    exception says so), which is no fault of the app."""
    text = errstr.lower()
    return any(mark in text for mark in NODE_FAILURE_MARKS)


def offline_ranks(status: dict) -> Set[int]:
    """Broker ranks ``resource.status`` reports offline or torpid (unresponsive)."""
    from flux.idset import IDset

    ranks: Set[int] = set()
    for key in ("offline", "torpid"):
        if status.get(key):
            ranks.update(IDset(status[key]))
    return ranks


def hosts_of(status: dict, ranks: Set[int]) -> List[str]:
    """Host names of ``ranks`` from the instance's R (empty when R does not name them)."""
    from flux.idset import IDset
    from flux.resource import ResourceSet

    try:
        return list(ResourceSet(status["R"]).copy_ranks(str(IDset(sorted(ranks)))).nodelist)
    except Exception:  # R without a nodelist (a test instance): ranks alone say enough
        return []


class NodeWatch:
    """A thread polling ``resource.status`` on its own Flux handle.

    Parameters
    ----------
    emit : callable
        Called with a :class:`~parsl_flux.allocation.events.RanksLost` for each new loss.
    handle_factory : callable
        Makes the thread's Flux handle (handles are not shared between threads).
    period : float
        Seconds between polls.
    """

    def __init__(self, emit: Callable[[Event], None], handle_factory: Callable[[], Any], period: float) -> None:
        self._emit, self._factory, self._period = emit, handle_factory, period
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flux-nodes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from flux.idset import IDset

        known: Set[int] = set()
        try:
            handle = self._factory()
            while not self._stop.wait(self._period):
                status = handle.rpc("resource.status", nodeid=0).wait_for(self._period * 5).get()
                lost = offline_ranks(status) - known
                if lost:
                    known |= lost
                    self._emit(RanksLost(str(IDset(sorted(lost))), hosts_of(status, lost)))
        except Exception as exc:  # the broker ping (flux_backend) reports a dead broker; this only watches
            logger.warning("node watch stopped: %s: %s", type(exc).__name__, exc)
