"""What a task used, measured by its own process, as columns of Parsl's ``resource`` table.

Parsl's resource monitor forks a process per task that samples the task's
process tree with psutil. A Flux job cannot usefully do that (the fork would
keep its own copy of the radio's outbox, and psutil is not a dependency of the
job side), but the job's process knows its own counters: ``getrusage`` of
itself and of the children it waited for (a bash app's command) gives CPU time,
peak memory and context switches, and a monotonic clock the wall time.

:class:`TaskUsage` takes those counters when a task starts and turns the
difference into the ``psutil_*`` columns Parsl's monitor fills, so the rows
sit in the same table and ``parsl-visualize`` plots them. Standard library
only (``resource`` is a C module).
"""

from __future__ import annotations

import os
import resource
import time
from typing import Dict, Optional


def _both() -> tuple:
    return resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)


class TaskUsage:
    """The process's counters at a task's start; :meth:`row` is what the task used since.

    In a packing worker one process runs task after task: CPU time, context
    switches and wall time are differences, so each task gets its own; peak
    memory cannot be reset, so it is the process's peak so far.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.at_start = _both()

    def row(self, final: bool) -> Dict[str, Optional[float]]:
        """The ``resource`` table's measured columns for this task.

        Parameters
        ----------
        final : bool
            The row for the task's end: ``resource_monitoring_interval`` is
            then the task's wall time (the span since the start row, as
            Parsl's monitor records the time between its samples); for the
            start row it is None.

        Notes
        -----
        ``psutil_process_memory_resident`` is the peak resident size in bytes
        of this process plus that of its largest waited-for child (Linux
        reports ``ru_maxrss`` in KiB), an upper bound of what Parsl's monitor,
        which sums the current sizes of the process and its children, would
        have seen at the peak.
        """
        now = _both()

        def used(field: str) -> float:
            return sum(getattr(n, field) - getattr(s, field) for n, s in zip(now, self.at_start))

        return {
            "psutil_process_pid": os.getpid(),
            "psutil_process_time_user": used("ru_utime"),
            "psutil_process_time_system": used("ru_stime"),
            "psutil_process_memory_resident": float(sum(n.ru_maxrss for n in now) * 1024),
            "psutil_process_num_ctx_switches_voluntary": used("ru_nvcsw"),
            "psutil_process_num_ctx_switches_involuntary": used("ru_nivcsw"),
            "resource_monitoring_interval": time.monotonic() - self.started if final else None,
        }
