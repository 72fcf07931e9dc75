"""First program of an allocation's job (Parsl's MPI model), before the runner.

``python -m parsl_flux.job.mpi_job`` (or the fast boot of
:func:`parsl_flux.allocation.mpi_allocation.runner_command`). The allocation has one task
per node; those on other nodes end at once (their nodes serve the ranks). The
first writes the allocation's R where ``$PARSL_MPI_PREFIX`` reads it, sets
``PARSL_MPI_NODELIST`` from it, and runs the runner, unchanged. Lean like the
runner, whose start-up it precedes: ``os`` and the launcher's JSON helpers
only (not ``json``, whose import costs 8 ms of CPU more than the runner's own start).
"""

import os
import sys

from parsl_flux.job.mpi_launch import JOB_COMMAND_ENV, R_FILE_ENV, capture, job_argv, loads

NODELIST_VAR = "PARSL_MPI_NODELIST"
EXIT_NO_R = 97


def expand_hostlist(hostlist: str) -> list:
    """The hosts of an RFC 29 hostlist (``node[01-03,7],login1``), in order, duplicates kept."""
    hosts = []
    depth, start = 0, 0
    for i, char in enumerate(hostlist + ","):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            hosts.extend(_expand_host(hostlist[start:i]))
            start = i + 1
    return hosts


def _expand_host(item: str) -> list:
    """``x[1-2]y`` -> ``["x1y", "x2y"]`` (zero padding kept); a plain name as is."""
    if "[" not in item:
        return [item] if item else []
    prefix, _, rest = item.partition("[")
    ranges, _, suffix = rest.partition("]")
    hosts = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        width = len(low) if low.startswith("0") else 0
        hosts += [f"{prefix}{n:0{width}d}{suffix}" for n in range(int(low), int(high or low) + 1)]
    return hosts


def nodelist_of(R: dict) -> list:
    """The allocation's hosts, one per node, from its R (``execution.nodelist``)."""
    return [host for entry in R["execution"]["nodelist"] for host in expand_hostlist(entry)]


def prepare() -> "int | None":
    """None to go on and run the app (first node); else the task's exit code."""
    if os.environ.get("FLUX_TASK_RANK", "0") != "0":
        return 0
    code, R = capture(job_argv(os.environ[JOB_COMMAND_ENV]) + ["info", os.environ["FLUX_JOB_ID"], "R"])
    if code != 0:
        sys.stderr.write("parsl-flux: cannot read the allocation's R (flux job info)\n")
        return EXIT_NO_R
    with open(os.environ[R_FILE_ENV], "wb") as f:
        f.write(R)
    os.environ[NODELIST_VAR] = ",".join(nodelist_of(loads(R)))
    return None


def main() -> int:
    """:func:`prepare`, then the runner."""
    code = prepare()
    if code is not None:
        return code
    from parsl_flux.job import runner

    return runner.main()


if __name__ == "__main__":
    sys.exit(main())
