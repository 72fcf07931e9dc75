"""A provider for blocks that are started outside Parsl.

Used when something else starts the Flux instance and its manager, such as the
Helm chart in ``charts/parsl-flux`` (a Flux Operator MiniCluster whose initial
program is ``python -m parsl_flux.allocation.manager --block-id 0 ...``). ``submit`` starts
nothing: it records the block, logs the manager command (without its key) and
the executor then waits for that manager to dial in, as it would wait for a
batch job to leave the queue.
"""

from __future__ import annotations

import logging
import re
from typing import Dict, List, Sequence

from parsl.jobs.states import JobState, JobStatus
from parsl.providers.base import ExecutionProvider
from parsl.utils import RepresentationMixin

logger = logging.getLogger(__name__)


class ExternalProvider(ExecutionProvider, RepresentationMixin):
    """Blocks whose Flux instance is run by someone else (a Helm release, a person).

    Parameters
    ----------
    init_blocks, min_blocks, max_blocks : int
        As for any provider; each block id ("0", "1", ...) must be served by one
        externally started manager.
    nodes_per_block : int
        Nodes of each external Flux instance, for Parsl's scaling arithmetic.
    """

    def __init__(self, init_blocks: int = 1, min_blocks: int = 0, max_blocks: int = 1,
                 nodes_per_block: int = 1) -> None:
        self.init_blocks = init_blocks
        self.min_blocks = min_blocks
        self.max_blocks = max_blocks
        self.nodes_per_block = nodes_per_block
        self.parallelism = 1.0
        self.script_dir = None
        self.resources: Dict[object, JobStatus] = {}
        self.cores_per_node = None
        self.mem_per_node = None

    @property
    def label(self) -> str:
        return "external"

    @property
    def status_polling_interval(self) -> int:
        return 5

    def submit(self, command: str, tasks_per_node: int, job_name: str = "parsl.auto") -> str:
        job_id = f"external-{len(self.resources)}"
        self.resources[job_id] = JobStatus(JobState.PENDING, "waiting for an external manager to connect")
        shown = re.sub(r"PARSL_FLUX_KEY=\S+", "PARSL_FLUX_KEY=<secret>", command)
        logger.info("block %s must be started outside Parsl; its manager command is: %s", job_name, shown)
        return job_id

    def status(self, job_ids: Sequence[object]) -> List[JobStatus]:
        return [self.resources.get(j, JobStatus(JobState.MISSING)) for j in job_ids]

    def cancel(self, job_ids: Sequence[object]) -> List[bool]:
        for j in job_ids:
            self.resources[j] = JobStatus(JobState.CANCELLED)
        return [True] * len(job_ids)
