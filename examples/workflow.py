"""Example workflow: Parsl apps as Flux jobs on a local Flux instance.

Run it with ``make run`` (or ``python examples/workflow.py``). It needs Flux:
``flux`` on PATH or ``FLUX_PATH`` naming the binary; inside the parsl-flux
image, or under ``flux start``, it attaches to the running instance.

At a site, ``parsl-flux run --site NAME examples/workflow.py`` loads that
site's config first; the workflow then uses it instead of a local one.
Outputs go under ``runinfo/example-*`` in the working directory, which a
cluster's compute nodes share with the login node.

It shows a fan-out of Python apps, a dependency chain, a multi-core app, a
bash app, an app whose exception comes back with its traceback, and, when
``mpicc`` is available, an MPI program run with 2 ranks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import parsl
from parsl import bash_app, python_app
from parsl.config import Config
from parsl.errors import NoDataFlowKernelError

from parsl_flux import FluxExecutor, fluxpath

HERE = Path(__file__).resolve().parent
MPI_SOURCE = HERE.parent / "tests" / "data" / "mpi_hello.c"


def find_flux() -> str:
    """Path of the flux command (FLUX_PATH, PATH, then `make flux`'s prefix), or exit with the way forward."""
    try:
        return fluxpath.require_flux()
    except fluxpath.FluxNotFound as exc:
        sys.exit(f"workflow.py: {exc}")


@python_app
def square(x: int) -> int:
    return x * x


@python_app
def total(*values: int) -> int:
    return sum(values)


@python_app
def cores_seen(parsl_resource_specification: dict = {}) -> int:
    import os
    return len(os.sched_getaffinity(0))


@python_app
def divide(a: float, b: float) -> float:
    return a / b


@bash_app
def hostname(stdout: str = None) -> str:
    return "echo running in Flux job $FLUX_JOB_ID on $(hostname)"


@bash_app
def mpi_hello(exe: str, stdout: str = None, parsl_resource_specification: dict = {}) -> str:
    return exe


def already_loaded() -> bool:
    """True when a config is loaded already (``parsl-flux run --site NAME``)."""
    try:
        parsl.dfk()
        return True
    except NoDataFlowKernelError:
        return False


def main() -> None:
    Path("runinfo").mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="example-", dir="runinfo")).resolve()
    if already_loaded():
        run(workdir)
    else:
        config = Config(executors=[FluxExecutor(flux_path=find_flux(), label="flux")],
                        run_dir=str(workdir / "runinfo"))
        with parsl.load(config):
            run(workdir)
    print(f"done; logs and task outputs under {workdir}")


def run(workdir: Path) -> None:
    """The workflow itself, on whatever config is loaded."""
    squares = [square(i) for i in range(10)]
    print("sum of squares 0..9 =", total(*squares).result())
    print("cores seen by a 2-core app =", cores_seen(parsl_resource_specification={"cores_per_task": 2}).result())
    out = workdir / "hostname.out"
    hostname(stdout=str(out)).result()
    print("bash app says:", out.read_text().strip())
    try:
        divide(1, 0).result()
    except ZeroDivisionError as exc:
        print("app exception came back as", type(exc).__name__, "-", exc)
    mpicc = shutil.which("mpicc")
    if mpicc and MPI_SOURCE.exists():
        exe = workdir / "mpi_hello"
        subprocess.run([mpicc, "-o", str(exe), str(MPI_SOURCE)], check=True)
        mpi_out = workdir / "mpi.out"
        mpi_hello(str(exe), stdout=(str(mpi_out), "a"), parsl_resource_specification={"num_tasks": 2}).result()
        print("MPI app with 2 ranks:", "; ".join(sorted(mpi_out.read_text().splitlines())))
    else:
        print("MPI app skipped: mpicc not found")


if __name__ == "__main__":
    main()
