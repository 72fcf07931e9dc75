"""What the manager's threads tell each other: typed requests and events.

The manager's main loop owns every piece of task state; the Flux threads
(:mod:`parsl_flux.allocation.flux_backend`), the node watch and the task
server own their sockets and handles. They meet only through two queues: the
main loop puts a :data:`FluxRequest` on the Flux threads' queue, and the other
threads put an :data:`Event` on the main loop's. One frozen value per kind, so
a field is named where it is made and where it is read, and the main loop
dispatches on the type (``Manager._on``) rather than decoding positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Union


# ------------------------------------------------ main loop -> Flux threads
@dataclass(frozen=True)
class Submit:
    """Submit ``jobspec``: a task's job (``task_id``) or a packing worker's (None)."""

    task_id: Optional[int]
    jobspec: Any


@dataclass(frozen=True)
class Cancel:
    """Cancel Flux job ``jobid``."""

    jobid: int


@dataclass(frozen=True)
class CancelNamed:
    """Cancel every pending or running job called ``name`` (ranks an MPI-model app started)."""

    name: str


FluxRequest = Union[Submit, Cancel, CancelNamed]


# -------------------------------------------- other threads -> main loop
@dataclass(frozen=True)
class Submitted:
    """Flux accepted a :class:`Submit` and gave it ``jobid``."""

    task_id: Optional[int]
    jobid: int


@dataclass(frozen=True)
class SubmitFailed:
    """Flux refused a :class:`Submit` (the job's fault, not the broker's)."""

    task_id: Optional[int]
    reason: str


@dataclass(frozen=True)
class JobDone:
    """Flux job ``jobid`` ended; ``errstr`` says how when it did not succeed."""

    jobid: int
    success: bool
    errstr: str


@dataclass(frozen=True)
class BrokerLost:
    """The broker stopped answering or a Flux thread failed: the block ends."""

    reason: str


@dataclass(frozen=True)
class RanksLost:
    """Broker ranks ``ranks`` (an idset) on ``hosts`` went offline."""

    ranks: str
    hosts: List[str]


@dataclass(frozen=True)
class PackedDone:
    """A packing worker sent the outcome of task ``task_id``."""

    task_id: int
    outcome: dict


@dataclass(frozen=True)
class PackedLost:
    """The packing worker running ``task_id`` went away before its outcome."""

    task_id: int
    worker_job: Optional[str]  # the worker's Flux job id as it gave it (any encoding)
    reason: str


@dataclass(frozen=True)
class ResultIn:
    """Rank 0 of task ``task_id``'s own job sent its outcome (its job may still be ending)."""

    task_id: int


Event = Union[Submitted, SubmitFailed, JobDone, BrokerLost, RanksLost, PackedDone, PackedLost, ResultIn]
