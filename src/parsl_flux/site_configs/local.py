"""This machine: one Flux instance started by Parsl's LocalProvider.

No batch system and no PMI: one ``flux start`` (a single broker) owns all
of this machine's cores. With ``PARSL_FLUX_IMAGE`` it runs inside that image
(``PARSL_FLUX_RUNTIME``: ``apptainer``, ``singularity``, ``docker`` or
``podman``; Docker/Podman images are references, not files).

MPI: the host's (or image's) OpenMPI, whose ``pmix/flux`` component takes
ranks from the Flux job shell.

Environment (all optional): ``FLUX_PATH`` (default ``flux`` from PATH),
``PARSL_FLUX_PYTHON``, ``PARSL_FLUX_IMAGE``, ``PARSL_FLUX_RUNTIME``,
``PARSL_FLUX_BINDS``, ``PARSL_FLUX_WORKER_INIT``, ``PARSL_FLUX_RUN_DIR``.
"""

from typing import Optional, Sequence

from parsl.config import Config
from parsl.launchers import SingleNodeLauncher
from parsl.providers import LocalProvider

from parsl_flux import FluxExecutor
from parsl_flux import sites

SITE = sites.Site(
    name="local", summary="This machine: LocalProvider, one Flux instance", batch="none", submit=None,
    launcher=None, runtime="none (or any runtime with an image)",
    mpi="the host's or image's OpenMPI (pmix/flux component)", pmi="none: a single broker")


def make_config(*, image: Optional[str] = None, runtime: Optional[str] = None,
                binds: Optional[Sequence[str]] = None, worker_init: Optional[str] = None,
                flux_path: Optional[str] = None, python: Optional[str] = None,
                run_dir: Optional[str] = None, **executor_options) -> Config:
    """Config for this machine; ``executor_options`` go to the FluxExecutor."""
    name = SITE.name
    rundir = sites.run_dir(run_dir)
    img = sites.setting(image, "PARSL_FLUX_IMAGE", name, "image", "")
    box = None
    if img:
        box = sites.container(name, sites.setting(runtime, "PARSL_FLUX_RUNTIME", name, "runtime", "apptainer"),
                              img, sites.binds(binds), rundir)
    provider = LocalProvider(
        launcher=SingleNodeLauncher(), init_blocks=1, min_blocks=0, max_blocks=1,
        worker_init=sites.setting(worker_init, "PARSL_FLUX_WORKER_INIT", name, "worker_init", ""))
    executor = FluxExecutor(
        label="flux", provider=provider, container=box,
        flux_path=None if box else sites.setting(flux_path, "FLUX_PATH", name, "flux_path", "flux"),
        python=sites.setting(python, "PARSL_FLUX_PYTHON", name, "python", None), **executor_options)
    return Config(executors=[executor], run_dir=rundir)


__getattr__ = sites.lazy_config(make_config)
