"""Parsl's SlurmProvider, reporting failed blocks on clusters without accounting.

Where ``sacct`` is disabled (no slurmdbd: small clusters, CI), Parsl falls
back to ``squeue --job IDS``, which lists only pending and running jobs, so a
block whose job failed at once (say, ``flux`` missing on the nodes) vanishes
and is taken as COMPLETED. Parsl's block error handler then never sees a
failure, keeps submitting new blocks, and the tasks wait forever.
``squeue --states=all`` also lists jobs that ended, with their real state
(``F``, ``CA``, ``TO``, ...), for as long as the controller keeps them
(``MinJobAge``, 300 s by default): long enough for the next status poll.

A block is also never requeued (``--no-requeue``, unless the user's
``scheduler_options`` say otherwise): Slurm requeues a batch job whose node
failed, and the requeued block would start later for a driver that has already
counted it lost and started another (or is gone), holding nodes until its
manager gives up; its one-time key file is consumed, so it could not even
register.
"""

from __future__ import annotations

import logging
from typing import Any

from parsl.providers import SlurmProvider as _ParslSlurmProvider

logger = logging.getLogger(__name__)

_SQUEUE = "squeue "


NO_REQUEUE = "#SBATCH --no-requeue\n"


class SlurmProvider(_ParslSlurmProvider):
    """:class:`parsl.providers.SlurmProvider` whose ``squeue`` fallback also
    reports ended jobs (``--states=all``) and whose blocks are not requeued;
    takes the same arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "requeue" not in self.scheduler_options:
            self.scheduler_options = NO_REQUEUE + self.scheduler_options
        # Parsl keeps the status command in ``_cmd``; test_slurm checks it still does.
        if self._cmd.startswith(_SQUEUE) and "--states" not in self._cmd:
            self._cmd = _SQUEUE + "--states=all " + self._cmd[len(_SQUEUE):]
            logger.debug("sacct unavailable; block status from: %s", self._cmd)
