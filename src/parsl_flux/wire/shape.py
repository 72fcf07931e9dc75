"""The shape of a task's Flux job and of a block's Flux instance: plain values.

Both sides use them: the driver validates a ``resource_specification`` into a
:class:`JobShape` (:mod:`parsl_flux.driver.resources`, which raises Parsl's error
types), the manager turns one into a jobspec. This module imports nothing but
the standard library, so the allocation side (manager, Flux backend) never
imports Parsl through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class JobShape:
    """The shape of one task's Flux job, validated."""

    num_tasks: int = 1
    cores_per_task: int = 1
    gpus_per_task: int = 0
    num_nodes: int = 0
    exclusive: bool = False
    walltime: Optional[float] = None
    env: Dict[str, str] = field(default_factory=dict)
    ranks_per_node: int = 0
    """> 0 in Parsl's MPI model: the job is an allocation of ``num_nodes`` x
    ``ranks_per_node`` slots (``num_tasks`` of them) and the app runs once in it."""
    launcher_options: str = ""
    """Parsl's ``launcher_options``: appended to ``$PARSL_MPI_PREFIX`` (options of ``flux run``)."""

    @property
    def allocation(self) -> bool:
        """True in Parsl's MPI model: one app in an allocation that it launches ranks into."""
        return self.ranks_per_node > 0

    @property
    def packable(self) -> bool:
        """True if the task fits one core of a long-lived worker (packing mode)."""
        return (self.num_tasks == 1 and self.cores_per_task == 1 and self.gpus_per_task == 0
                and self.num_nodes <= 1 and not self.exclusive and not self.env
                and self.walltime is None and not self.allocation)

    @classmethod
    def from_wire(cls, wire: Dict[str, Any]) -> "JobShape":
        """The shape :meth:`to_wire` sent (already validated by the driver)."""
        return cls(**wire)

    def to_wire(self) -> Dict[str, Any]:
        """Plain dict sent to the manager."""
        return {
            "num_tasks": self.num_tasks, "cores_per_task": self.cores_per_task,
            "gpus_per_task": self.gpus_per_task, "num_nodes": self.num_nodes,
            "exclusive": self.exclusive, "walltime": self.walltime, "env": dict(self.env),
            "ranks_per_node": self.ranks_per_node, "launcher_options": self.launcher_options,
        }


DEFAULT_SHAPE = JobShape()


@dataclass(frozen=True)
class InstanceResources:
    """What one Flux instance (block) has, as reported by its manager."""

    nodes: int
    cores_per_node: int
    gpus_per_node: int = 0

    @property
    def cores(self) -> int:
        return self.nodes * self.cores_per_node

    @classmethod
    def from_wire(cls, wire: Dict[str, Any]) -> "InstanceResources":
        return cls(int(wire["nodes"]), int(wire["cores_per_node"]), int(wire.get("gpus_per_node", 0)))

    def to_wire(self) -> Dict[str, int]:
        return {"nodes": self.nodes, "cores_per_node": self.cores_per_node, "gpus_per_node": self.gpus_per_node}


def block_window(cores: int) -> int:
    """Tasks the driver keeps in flight on a block of ``cores`` cores.

    Deep enough that Flux schedules and starts jobs in bulk (measured on 2
    cores: 36 in flight gave 12 jobs/s, 236 gave 16), bounded so that other
    blocks get work and a lost block loses a bounded number of tasks. The
    manager refills Flux's queue in batches from half of it (see
    ``Manager._release_held``)."""
    return 4 * cores + 256
