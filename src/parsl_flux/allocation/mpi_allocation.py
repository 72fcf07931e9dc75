"""Parsl's MPI model on Flux: the app runs once, inside its own allocation.

Parsl's ``MPIExecutor`` runs an MPI app once and lets it start its ranks with
``$PARSL_MPI_PREFIX``. Here the app's Flux job *is* the allocation: it holds
``num_nodes`` x ``ranks_per_node`` slots of ``cores_per_task`` cores (and
``gpus_per_task`` GPUs), with one task per node (``per-resource.type=node``)
of which only the first runs the app; the others exit at once.

``$PARSL_MPI_PREFIX`` starts the ranks as a job of the block's instance that
runs on exactly the resources the allocation holds (its R, given as
``system.alloc-bypass.R``), without asking the scheduler for them again;
Flux's ``alloc-bypass`` jobtap plugin, which the manager loads, allows that to
the instance owner. The prefix is ``python -S .../mpi_launch.py``
(:mod:`parsl_flux.job.mpi_launch`), which submits the ranks with Flux's C
commands; with ``launcher_options`` it is ``flux run --setattr=^system.alloc-bypass.R=FILE
-N nodes -n ranks [-c cores] [-g gpus] launcher_options``, since those are
``flux run`` options. The ranks get PMI from their job shells, so OpenMPI (its
``flux`` component) and MPICH start without ``mpiexec``, and an app may
launch any number of such steps.

Why not a nested Flux instance (what ``flux alloc`` makes)? It is the general
answer, but with flux-core 0.88 its brokers run Python rc scripts and a
Python scheduler: 4-5 s per app on a 2-core machine, against 0.5 s for the
MPI job itself. The bypass costs one ``flux job info`` per app, and the
launcher a Python start-up without Flux's bindings (importing them is most
of ``flux run``'s 0.4 s of CPU there). What it needs: the manager must own
the instance (start mode; not attach mode on someone else's instance), and a
ranks job is not killed by Flux when its allocation ends, so the manager
cancels it (it is named after the task, see :func:`ranks_job_name`).

``PARSL_MPIEXEC_PREFIX``, ``PARSL_SRUN_PREFIX`` and ``PARSL_APRUN_PREFIX``
(Parsl sets all three, whichever launcher it uses) are the same Flux line:
inside a Flux allocation neither ``srun`` nor ``aprun`` exists, and
``mpiexec`` could reach other nodes only through ssh. An app that calls
``$PARSL_SRUN_PREFIX ./a.out`` therefore still starts its ranks, under Flux.

The files the prefix reads (R, the launcher, the interpreter) are on the
allocation's first node, where the app runs: the task directory must be
there, as it already must for the job's stdout and stderr.

This module is the manager's side: :func:`allocation_env`,
:func:`allocation_jobspec`. In the job, before the unchanged runner,
:mod:`parsl_flux.job.mpi_job` writes R and sets ``PARSL_MPI_NODELIST``, which only
the allocation knows; ``$PARSL_MPI_PREFIX`` is :mod:`parsl_flux.job.mpi_launch`.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Sequence

from parsl_flux.job import mpi_launch
from parsl_flux.job.mpi_launch import JOB_COMMAND_ENV, R_FILE_ENV, TEMPLATE_ENV

if TYPE_CHECKING:  # the manager imports this module, and jobs run it: no Parsl
    from parsl_flux.wire.shape import JobShape

PREFIX_VARS = ("PARSL_MPI_PREFIX", "PARSL_MPIEXEC_PREFIX", "PARSL_SRUN_PREFIX", "PARSL_APRUN_PREFIX")
"""Parsl's launcher prefixes; here each is the Flux launch line (see the module doc)."""


def ranks_job_name(task_id: int) -> str:
    """Flux job name of the ranks an allocation's app launches (the manager cancels them with it)."""
    return f"parsl-task-{task_id}-ranks"


def job_command(flux: str, environ: Mapping[str, str]) -> str:
    """Flux's ``flux-job`` program, which ``flux job`` runs once the ``flux``
    front end has set up the environment (``FLUX_EXEC_PATH`` and the rest) the
    manager already runs in, under ``flux env``: the launcher calls it directly
    (see :mod:`parsl_flux.job.mpi_launch`). ``flux`` itself where it is not found."""
    for directory in environ.get("FLUX_EXEC_PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, "flux-job")
        if directory and os.access(candidate, os.X_OK):
            return candidate
    return flux


def ranks_template(shape: "JobShape", task_id: int) -> Dict[str, Any]:
    """The ranks' jobspec (RFC 25, as ``flux run -N nodes -n ranks -c cores -g gpus``
    writes it) with markers where :mod:`parsl_flux.job.mpi_launch` puts the
    command, environment, cwd and R."""
    slot = [{"type": "core", "count": shape.cores_per_task}]
    if shape.gpus_per_task:
        slot.append({"type": "gpu", "count": shape.gpus_per_task})
    return {
        "version": 1,
        "resources": [{"type": "node", "count": shape.num_nodes, "with": [
            {"type": "slot", "count": shape.ranks_per_node, "label": "task", "with": slot}]}],
        "tasks": [{"command": mpi_launch.COMMAND_MARK, "slot": "task", "count": {"per_slot": 1}}],
        "attributes": {"system": {"duration": 0, "job": {"name": ranks_job_name(task_id)},
                                  "environment": mpi_launch.ENVIRONMENT_MARK, "cwd": mpi_launch.CWD_MARK,
                                  "alloc-bypass": {"R": mpi_launch.R_MARK}}},
    }


def launch_prefix(shape: "JobShape", flux: str, python: str, r_file: str, task_id: int) -> str:
    """``$PARSL_MPI_PREFIX``: what starts the requested ranks on the allocation.

    The lean launcher, or with ``launcher_options`` (options of ``flux run``,
    appended as Parsl appends them to its ``mpiexec``) a ``flux run`` line:
    ``-N``/``-n`` are Parsl's ``num_nodes``/``num_ranks``, ``-c``/``-g`` the
    per-rank sizes the allocation was made of (1 core and no GPU are
    ``flux run``'s own defaults, so they are left out).
    """
    if not shape.launcher_options:
        return f"{shlex.quote(python)} -S {shlex.quote(mpi_launch.__file__)}"
    args = [shlex.quote(flux), "run", f"--setattr=^system.alloc-bypass.R={r_file}",
            f"--job-name={ranks_job_name(task_id)}", "-N", str(shape.num_nodes), "-n", str(shape.num_tasks)]
    if shape.cores_per_task != 1:
        args += ["-c", str(shape.cores_per_task)]
    if shape.gpus_per_task:
        args += ["-g", str(shape.gpus_per_task)]
    args.append(shape.launcher_options)
    return " ".join(args)


def allocation_env(shape: "JobShape", flux: str, flux_job: str, python: str, r_file: Path,
                   task_id: int) -> Dict[str, str]:
    """The ``PARSL_*`` variables Parsl's MPI workers set, with Parsl's meanings,
    except ``PARSL_MPI_NODELIST`` (set in the job by :mod:`parsl_flux.job.mpi_job`), and what
    the launcher reads.

    As Parsl's ``_init_mpi_env`` sets ``PARSL_<KEY>`` for each key of the
    (validated, completed) specification, ``PARSL_LAUNCHER_OPTIONS`` is set
    only when given. The paths in the prefix must hold no whitespace: apps
    expand it unquoted, so it would split.
    """
    prefix = launch_prefix(shape, flux, python, str(r_file), task_id)
    for path in (str(r_file), python, mpi_launch.__file__):
        if any(c.isspace() for c in path):
            raise ValueError(f"{path!r} holds whitespace, which $PARSL_MPI_PREFIX cannot (apps expand it unquoted)")
    env = {
        "PARSL_NUM_NODES": str(shape.num_nodes),
        "PARSL_RANKS_PER_NODE": str(shape.ranks_per_node),
        "PARSL_NUM_RANKS": str(shape.num_tasks),
        **{name: prefix for name in PREFIX_VARS},
        R_FILE_ENV: str(r_file),
        JOB_COMMAND_ENV: flux_job,
        TEMPLATE_ENV: json.dumps(ranks_template(shape, task_id), separators=(",", ":")),
    }
    if shape.launcher_options:
        env["PARSL_LAUNCHER_OPTIONS"] = shape.launcher_options
    return env


def allocation_jobspec(shape: "JobShape", command: List[str]) -> Any:
    """The allocation's jobspec: all its slots, one task per node running ``command``."""
    from flux.job import JobspecV1

    jobspec = JobspecV1.from_command(
        command, num_tasks=shape.num_tasks, cores_per_task=shape.cores_per_task,
        gpus_per_task=shape.gpus_per_task or None, num_nodes=shape.num_nodes, exclusive=shape.exclusive)
    jobspec.setattr_shell_option("per-resource.type", "node")
    jobspec.setattr_shell_option("exit-timeout", "none")  # the other nodes' tasks end at once
    return jobspec


def runner_command(python: str, fast_start: bool, sys_path_env: str) -> Sequence[str]:
    """How an allocation's job starts: as the runner does (see
    :func:`parsl_flux.allocation.flux_backend.runner_command`), through :func:`parsl_flux.job.mpi_job.main`."""
    if fast_start:
        return [python, "-S", "-c", f"import os,sys;sys.path[1:]=os.environ.pop('{sys_path_env}').split(os.pathsep);"
                "import parsl_flux.job.mpi_job as j;sys.exit(j.main())"]
    return [python, "-m", "parsl_flux.job.mpi_job"]
