"""Bytecode of the modules every Flux job imports, written once per block.

Each job's interpreter imports ``parsl_flux.job.runner`` (with ``protocol`` and
``payload``; ``bash`` for bash apps). Python caches their compiled form in
``__pycache__`` on first import, except when ``PYTHONDONTWRITEBYTECODE`` is
set (some sites and CI systems set it): then every job compiles the four
modules from source, about 6 ms of CPU, which measured as ~15 % of a no-op
job's whole cost (``python -m parsl_flux.tools.cpu_profile``). pip writes the
cache at install time; an editable install or a source tree on
``PYTHONPATH`` has none. The manager therefore writes what is missing or
stale, as ``compileall`` would, before its first job, and leaves a read-only
installation alone (its jobs then compile, as before).
"""

from __future__ import annotations

import compileall
import logging
import os
import sys
from pathlib import Path
from typing import List

logger = logging.getLogger(__name__)

JOB_MODULES = ("__init__.py", "job/__init__.py", "job/runner.py", "job/bash.py", "job/mpi_job.py", "job/mpi_launch.py",
               "wire/__init__.py", "wire/protocol.py", "wire/payload.py")
"""The package's modules a Flux job imports, relative to the package root (see the runner's import-light test; mpi_*: Parsl's MPI model)."""


def write_job_bytecode(python: str) -> List[str]:
    """Write the bytecode cache of :data:`JOB_MODULES` where it is missing or stale.

    Parameters
    ----------
    python : str
        The interpreter the jobs run. Only when it is this one (after
        resolving links, as a virtual environment's is) does the cache written
        here carry the tag that interpreter reads.

    Returns
    -------
    list of str
        The modules whose cache could not be written (read-only package
        directory); empty when all are in place or ``python`` is another
        interpreter.
    """
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        logger.debug("jobs run %s, not this interpreter: their bytecode is theirs to write", python)
        return []
    package = Path(__file__).resolve().parent.parent  # parsl_flux/, above allocation/
    failed = []
    for name in JOB_MODULES:
        source = package / name
        # quiet=2: nothing printed; an unwritable cache is reported by the return value
        if not compileall.compile_file(str(source), quiet=2):
            failed.append(str(source))
    if failed:
        logger.info("could not write the bytecode of %s: each job compiles them (a few ms of CPU)", failed)
    return failed
