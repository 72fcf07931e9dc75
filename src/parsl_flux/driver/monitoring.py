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

Resource usage: the executor's ``monitor_resources()`` is False, so the wrapper
starts no psutil process in the job. Instead the sender measures the task
itself (:class:`~parsl_flux.job.usage.TaskUsage`) between the wrapper's first and
last message, and adds ``RESOURCE_INFO`` messages, one at the start and one at
the end, with the ids of the wrapper's messages: the ``resource`` table gets
rows as it does under Parsl's HighThroughputExecutor. The manager sets
``PARSL_WORKER_BLOCK_ID`` in every job, which the wrapper's messages carry into
the ``try`` table, as HTEX's workers do.
"""

from __future__ import annotations

import datetime
import pickle
from multiprocessing.queues import Queue
from typing import Any, Dict, List, Optional, Tuple

from parsl.monitoring.message_type import MessageType
from parsl.monitoring.radios.base import MonitoringRadioReceiver, MonitoringRadioSender, RadioConfig
from parsl.utils import RepresentationMixin

from parsl_flux.job.usage import TaskUsage

OUTBOX: List[bytes] = []
"""Pickled messages sent by this process's monitoring wrapper, not yet shipped."""

_measuring: Optional[Tuple[Dict[str, Any], TaskUsage]] = None
"""The ids of the task whose wrapper sent its first message, and its usage counters."""

ROW_FIELDS = ("run_id", "try_id", "task_id", "hostname")
"""Fields of the wrapper's messages copied into the resource rows (the ``resource`` table's key, and the host)."""


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
        _measure(message)


def _measure(message: object) -> None:
    """Start measuring at the wrapper's first message of a task, and queue a
    resource row at it and at the task's last message."""
    global _measuring
    if not (isinstance(message, tuple) and len(message) == 2 and message[0] == MessageType.WORKER_TASK_INFO):
        return
    info = message[1]
    if info.get("first_msg"):
        _measuring = ({k: info.get(k) for k in ROW_FIELDS}, TaskUsage())
        _queue_row(*_measuring, final=False)
    elif info.get("last_msg") and _measuring is not None:
        _queue_row(*_measuring, final=True)
        _measuring = None


def _queue_row(fields: Dict[str, Any], usage: TaskUsage, final: bool) -> None:
    """Queue the ``RESOURCE_INFO`` message Parsl's resource monitor would send for this task now."""
    row = {**fields, **usage.row(final), "timestamp": datetime.datetime.now()}
    OUTBOX.append(pickle.dumps((MessageType.RESOURCE_INFO, row)))


class _NoReceiver(MonitoringRadioReceiver):
    """Nothing to receive separately: messages arrive with the results."""

    def shutdown(self) -> None:
        pass


def drain() -> List[bytes]:
    """Take the messages collected so far (called by the runner after each app)."""
    taken = OUTBOX[:]
    del OUTBOX[:]
    return taken
