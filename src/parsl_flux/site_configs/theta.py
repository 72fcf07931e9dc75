"""Theta-like Cray XC (ALCF Theta): Cobalt + aprun + Singularity from a module.

Parsl removed its CobaltProvider in 2024.11, so this uses
:class:`parsl_flux.providers.CobaltProvider`. The batch script runs on a
service (MOM) node in ``--mode script``; ``aprun -n NODES -N 1`` starts one
``singularity exec IMAGE flux start ...`` per compute node.

PMI: ALPS gives ranks through Cray PMI only, so the brokers use Cray's
``libpmi2`` (``FLUX_PMI_CLIENT_METHODS=libpmi2``), found through
``FLUX_PMI_CLIENT_SEARCHPATH`` in ``/opt/cray``, which is bound into the image.

Environment: ``PARSL_FLUX_ACCOUNT`` (required), ``PARSL_FLUX_IMAGE``
(required, a ``.sif``), ``PARSL_FLUX_QUEUE`` (``debug-cache-quad``),
``PARSL_FLUX_NODES`` (2), ``PARSL_FLUX_WALLTIME`` (``00:30:00``),
``PARSL_FLUX_MAX_BLOCKS`` (1), ``PARSL_FLUX_BINDS``,
``PARSL_FLUX_WORKER_INIT`` (``module load singularity``),
``PARSL_FLUX_ADDRESS``/``PARSL_FLUX_INTERFACE``, ``PARSL_FLUX_RUN_DIR``.
"""

from typing import Dict, Optional, Sequence

from parsl.config import Config
from parsl.launchers import AprunLauncher

from parsl_flux import FluxExecutor
from parsl_flux import sites
from parsl_flux.providers import CobaltProvider

SITE = sites.Site(
    name="theta", summary="Cray XC: Cobalt + aprun + Singularity (module)", batch="Cobalt", submit="qsub",
    launcher="aprun", runtime="singularity", mpi="OpenMPI in the image, launched by Flux",
    pmi="Cray libpmi2 from ALPS (FLUX_PMI_CLIENT_METHODS=libpmi2, /opt/cray bound)",
    required=("account", "image"))

PMI_ENV = {"FLUX_PMI_CLIENT_METHODS": "libpmi2", "FLUX_PMI_CLIENT_SEARCHPATH": "/opt/cray/pe/pmi/default/lib64"}
SYSTEM_BINDS = ("/opt/cray",)


def make_config(*, account: Optional[str] = None, image: Optional[str] = None, queue: Optional[str] = None,
                nodes: Optional[int] = None, walltime: Optional[str] = None, max_blocks: Optional[int] = None,
                binds: Optional[Sequence[str]] = None, worker_init: Optional[str] = None,
                attrs: Optional[Dict[str, str]] = None, address: Optional[str] = None,
                interface: Optional[str] = None, run_dir: Optional[str] = None) -> Config:
    """Config for a Theta-like system; see the module docstring for defaults."""
    name = SITE.name
    account, image = sites.required(name, account=account, image=image)
    rundir = sites.run_dir(run_dir)
    box = sites.container(name, "singularity", image,
                          sites.binds(binds), rundir, env=PMI_ENV, system_binds=SYSTEM_BINDS)
    provider = CobaltProvider(
        account=account,
        queue=sites.setting(queue, "PARSL_FLUX_QUEUE", name, "queue", "debug-cache-quad"),
        nodes_per_block=sites.positive_int(nodes, "PARSL_FLUX_NODES", name, "nodes", 2),
        walltime=sites.walltime(walltime, name, "00:30:00"),
        attrs=attrs if attrs is not None else {"filesystems": "home,theta-fs0"},
        worker_init=sites.setting(worker_init, "PARSL_FLUX_WORKER_INIT", name, "worker_init",
                                  "module load singularity"),
        launcher=AprunLauncher(overrides="-d 64 -j 1 -cc none"),
        init_blocks=1, min_blocks=0,
        max_blocks=sites.positive_int(max_blocks, "PARSL_FLUX_MAX_BLOCKS", name, "max_blocks", 1),
    )
    executor = FluxExecutor(label="flux", provider=provider, container=box,
                            address=sites.address(address, interface))
    return Config(executors=[executor], run_dir=rundir)


__getattr__ = sites.lazy_config(make_config)
