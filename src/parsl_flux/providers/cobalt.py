"""A Parsl execution provider for the Cobalt batch system (``qsub``/``qstat``/``qdel``).

Parsl dropped its ``CobaltProvider`` in 2024.11 when ALCF retired Theta; this
one follows the same interface (a :class:`~parsl.providers.cluster_provider.ClusterProvider`)
so Theta-like systems keep working. What differs from Parsl's last version,
and why:

* ``qsub --mode script``: the batch script runs on the head (MOM) node and
  calls the launcher (``aprun``) itself; without it Cobalt would treat the
  script as the executable to run on every node.
* The job id is the last all-digit line of ``qsub``'s output: Theta's filters
  print notes ("Job routed to queue ...", "Memory mode set to ...") first.
* Status comes from ``qstat -u USER`` with the columns found by header name
  (``JobID`` and ``State``), not by position, and the user is quoted
  (``$USER`` may be unset under cron or a container).

Recorded outputs these parsers are tested on are in ``tests/data/cobalt/``
with their sources.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import stat
import time
from typing import Any, Dict, List, Mapping, Optional

from parsl.jobs.states import JobState, JobStatus
from parsl.launchers import AprunLauncher
from parsl.launchers.base import Launcher
from parsl.providers.cluster_provider import ClusterProvider
from parsl.providers.errors import SubmitException
from parsl.utils import RepresentationMixin, wtime_to_minutes

logger = logging.getLogger(__name__)

TEMPLATE = '''#!/bin/bash -el
${scheduler_options}

${worker_init}

export JOBNAME="${jobname}"
echo "Cobalt nodes: $$(sort -u $$COBALT_NODEFILE 2>/dev/null | tr '\\n' ' ')"

${user_script}
'''
"""Batch script; ``$$`` is a literal ``$`` for :class:`string.Template`."""

STATES: Dict[str, JobState] = {
    "queued": JobState.PENDING,
    "starting": JobState.PENDING,
    "user_hold": JobState.HELD,
    "admin_hold": JobState.HELD,
    "dep_hold": JobState.HELD,
    "maxrun_hold": JobState.HELD,
    "running": JobState.RUNNING,
    "exiting": JobState.RUNNING,
    "killing": JobState.CANCELLED,
    "dep_fail": JobState.FAILED,
}
"""Cobalt job states (as ``qstat`` prints them) to Parsl's.

``exiting`` is still RUNNING: the job's nodes are busy until it leaves the
queue, after which it is absent from ``qstat`` and becomes COMPLETED."""

_JOB_ID = re.compile(r"^\s*(\d+)\s*$")


def parse_qsub(stdout: str) -> Optional[str]:
    """The job id in ``qsub``'s output: its last line made of digits only."""
    ids = [m.group(1) for m in map(_JOB_ID.match, stdout.splitlines()) if m]
    return ids[-1] if ids else None


def parse_qstat(stdout: str) -> Dict[str, str]:
    """``{job id: state}`` from ``qstat`` table output.

    The first line holding both ``JobID`` and ``State`` is the header; the
    ``=====`` line under it is skipped. Columns are located by name, so
    ``qstat --header`` layouts and the default layout both parse.
    """
    states: Dict[str, str] = {}
    columns: Optional[List[str]] = None
    for line in stdout.splitlines():
        fields = line.split()
        if not fields or set(line.strip()) == {"="}:
            continue
        lowered = [f.lower() for f in fields]
        if columns is None:
            if "jobid" in lowered and "state" in lowered:
                columns = lowered
            continue
        if len(fields) < len(columns):
            logger.warning("ignored a short qstat line: %r", line)
            continue
        row = dict(zip(columns, fields))
        states[row["jobid"]] = row["state"].lower()
    return states


class CobaltProvider(ClusterProvider, RepresentationMixin):
    """Run blocks as Cobalt jobs.

    Parameters
    ----------
    account : str, optional
        Project to charge (``qsub -A``).
    queue : str, optional
        Queue (``qsub -q``).
    nodes_per_block : int
        Nodes per block (``qsub -n``).
    walltime : str
        ``HH:MM:SS``; passed to ``qsub -t`` in whole minutes.
    attrs : mapping, optional
        Cobalt job attributes (``qsub --attrs k=v:k2=v2``), e.g.
        ``{"filesystems": "home,grand", "mcdram": "cache", "numa": "quad"}``.
    scheduler_options : str
        Extra ``#COBALT`` lines for the top of the script.
    worker_init : str
        Shell lines run in the script before the launcher (``module load ...``).
    launcher : Launcher
        Default :class:`~parsl.launchers.AprunLauncher` (Cray XC).
    init_blocks, min_blocks, max_blocks, parallelism, cmd_timeout
        As for Parsl's other cluster providers.
    """

    def __init__(
        self,
        account: Optional[str] = None,
        queue: Optional[str] = None,
        nodes_per_block: int = 1,
        walltime: str = "00:10:00",
        attrs: Optional[Mapping[str, str]] = None,
        scheduler_options: str = "",
        worker_init: str = "",
        launcher: Launcher = AprunLauncher(),
        init_blocks: int = 1,
        min_blocks: int = 0,
        max_blocks: int = 1,
        parallelism: float = 1,
        cmd_timeout: int = 60,
    ) -> None:
        super().__init__("cobalt", nodes_per_block, init_blocks, min_blocks, max_blocks, parallelism, walltime,
                         launcher, cmd_timeout=cmd_timeout)
        wtime_to_minutes(walltime)  # reject a bad walltime now, not at the first submit
        for key, value in (attrs or {}).items():
            if not key or any(c in f"{key}{value}" for c in ":= \t\n"):
                raise ValueError(f"Cobalt attr {key!r}={value!r}: keys and values may not contain ':', '=' "
                                 "or whitespace (qsub --attrs joins them as k=v:k2=v2)")
        self.account = account
        self.queue = queue
        self.attrs = dict(attrs or {})
        self.scheduler_options = scheduler_options
        self.worker_init = worker_init

    def submit_command(self, script_path: str) -> str:
        """The ``qsub`` line for a script (also shown by ``parsl-flux sites show``)."""
        argv = ["qsub", "--mode", "script", "-n", str(self.nodes_per_block),
                "-t", str(wtime_to_minutes(self.walltime))]
        if self.queue:
            argv += ["-q", self.queue]
        if self.account:
            argv += ["-A", self.account]
        if self.attrs:
            argv += ["--attrs", ":".join(f"{k}={v}" for k, v in self.attrs.items())]
        argv += ["-O", script_path, script_path]
        return shlex.join(argv)

    def submit(self, command: str, tasks_per_node: int, job_name: str = "parsl.cobalt") -> str:
        """Write the batch script and ``qsub`` it.

        Returns
        -------
        str
            The Cobalt job id.

        Raises
        ------
        SubmitException
            ``qsub`` failed or printed no job id (its output is in the message).
        """
        assert self.script_dir, "script_dir must be set before submit()"
        job_name = f"{job_name}.{time.time()}"
        script_path = os.path.abspath(os.path.join(self.script_dir, job_name))
        user_script = self.launcher(command, tasks_per_node, self.nodes_per_block, self.script_dir)
        self._write_submit_script(TEMPLATE, script_path, job_name, {
            "scheduler_options": self.scheduler_options, "worker_init": self.worker_init, "user_script": user_script})
        os.chmod(script_path, os.stat(script_path).st_mode | stat.S_IXUSR)  # Cobalt runs the script itself

        cmd = self.submit_command(script_path)
        retcode, stdout, stderr = self.execute_wait(cmd)
        job_id = parse_qsub(stdout) if retcode == 0 else None
        if job_id is None:
            raise SubmitException(job_name, f"'{cmd}' failed (exit {retcode}) or printed no job id",
                                  stdout=stdout, stderr=stderr)
        # -O PREFIX: Cobalt writes PREFIX.output, PREFIX.error and PREFIX.cobaltlog
        self.resources[job_id] = {"job_id": job_id, "status": JobStatus(JobState.PENDING),
                                  "stdout": script_path + ".output", "stderr": script_path + ".error"}
        logger.debug("submitted Cobalt job %s: %s", job_id, cmd)
        return job_id

    def _status(self) -> None:
        """Update every tracked job from one ``qstat -u USER`` call.

        A job no longer listed has left the queue: COMPLETED (Cobalt keeps no
        record of finished jobs for ``qstat``). A failing ``qstat`` changes
        nothing, so one slow scheduler answer does not fail blocks.
        """
        active = [j for j, r in self.resources.items() if not r["status"].terminal]
        if not active:
            return
        cmd = f"qstat -u {shlex.quote(getpass.getuser())}"
        retcode, stdout, stderr = self.execute_wait(cmd)
        if retcode != 0:
            logger.warning("'%s' failed (exit %s): %s", cmd, retcode, stderr.strip())
            return
        listed = parse_qstat(stdout)
        for job_id in active:
            res = self.resources[job_id]
            state = listed.get(job_id)
            if state is None:
                parsl_state = JobState.COMPLETED
            else:
                parsl_state = STATES.get(state, JobState.UNKNOWN)
                if parsl_state is JobState.UNKNOWN:
                    logger.warning("unknown Cobalt state %r for job %s", state, job_id)
            res["status"] = JobStatus(parsl_state, stdout_path=res["stdout"], stderr_path=res["stderr"])

    def cancel(self, job_ids: List[Any]) -> List[bool]:
        """``qdel`` the jobs; all succeed or all fail, as qdel reports one exit code."""
        if not job_ids:
            return []
        retcode, _, stderr = self.execute_wait("qdel " + " ".join(shlex.quote(str(j)) for j in job_ids))
        if retcode != 0:
            logger.warning("qdel %s failed: %s", job_ids, stderr.strip())
            return [False] * len(job_ids)
        for job_id in job_ids:
            if job_id in self.resources:
                self.resources[job_id]["status"] = JobStatus(JobState.CANCELLED)
        return [True] * len(job_ids)

    @property
    def status_polling_interval(self) -> int:
        """Seconds between ``qstat`` calls: ALCF asks users not to poll faster."""
        return 60
