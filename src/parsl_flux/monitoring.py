"""Parsl monitoring over the executor's own channel: no extra port, no shared files.

When the DFK's ``MonitoringHub`` has resource monitoring on, Parsl wraps each
app in ``monitor_wrapper``, which runs inside the Flux job and reports the
task's start and end through the executor's ``remote_monitoring_radio``.
:class:`FluxRadio` is that radio: its sender keeps the messages in this
process (:data:`OUTBOX`), the runner sends them to the manager with the task's
outcome, and the executor puts them on the DFK's monitoring queue. The runner
looks for this module only in ``sys.modules``: a job that was not wrapped
imports nothing for monitoring.

Giving the executor a radio also makes the DFK hand it its monitoring queue,
so block status changes reach the monitoring database as with Parsl's own
executors.
"""

from __future__ import annotations

import pickle
from multiprocessing.queues import Queue
from typing import List

from parsl.monitoring.radios.base import MonitoringRadioReceiver, MonitoringRadioSender, RadioConfig
from parsl.utils import RepresentationMixin

OUTBOX: List[bytes] = []
"""Pickled messages sent by this process's monitoring wrapper, not yet shipped."""


class FluxRadio(RadioConfig, RepresentationMixin):
    """The default ``remote_monitoring_radio`` of :class:`parsl_flux.FluxExecutor`."""

    def create_sender(self) -> MonitoringRadioSender:
        return FluxRadioSender()

    def create_receiver(self, *, run_dir: str, resource_msgs: Queue) -> MonitoringRadioReceiver:
        return _NoReceiver()


class FluxRadioSender(MonitoringRadioSender):
    """Collects a job's monitoring messages; the runner ships them with the outcome."""

    def send(self, message: object) -> None:
        OUTBOX.append(pickle.dumps(message))


class _NoReceiver(MonitoringRadioReceiver):
    """Nothing to receive separately: messages arrive with the results."""

    def shutdown(self) -> None:
        pass


def drain() -> List[bytes]:
    """Take the messages collected so far (called by the runner after each app)."""
    taken = OUTBOX[:]
    del OUTBOX[:]
    return taken
