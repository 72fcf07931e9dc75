"""Any PBS Pro cluster: qsub + MPICH's Hydra ``mpiexec``, host Flux or Apptainer.

``mpiexec --bind-to none -ppn 1 -n NODES --hostfile <nodes>`` starts one
``flux start ...`` per node (Parsl's MpiExecLauncher writes the unique
``$PBS_NODEFILE`` hosts to the host file).

PMI: Hydra gives each broker a ``PMI_FD`` (PMI-1 wire protocol, Flux's
``simple`` client); Apptainer keeps it. OpenMPI's ``mpiexec`` is no use here:
it serves only PMIx, which this Flux's broker cannot bootstrap from. On
HPE/Cray PBS systems use ``polaris`` (PALS + Cray libpmi2) instead.

Environment (all optional): ``PARSL_FLUX_IMAGE`` (a ``.sif``; without it the
host's Flux runs), ``FLUX_PATH``, ``PARSL_FLUX_PYTHON``,
``PARSL_FLUX_ACCOUNT``, ``PARSL_FLUX_QUEUE``, ``PARSL_FLUX_NODES`` (1),
``PARSL_FLUX_CPUS_PER_NODE`` (1, what ``select`` asks for),
``PARSL_FLUX_WALLTIME`` (``00:10:00``), ``PARSL_FLUX_MAX_BLOCKS`` (1),
``PARSL_FLUX_BINDS``, ``PARSL_FLUX_WORKER_INIT``,
``PARSL_FLUX_ADDRESS``/``PARSL_FLUX_INTERFACE``, ``PARSL_FLUX_RUN_DIR``.
"""

import sys
from typing import Optional, Sequence

from parsl.config import Config
from parsl.launchers import MpiExecLauncher
from parsl.providers import PBSProProvider

from parsl_flux import FluxExecutor
from parsl_flux import sites

SITE = sites.Site(
    name="pbs", summary="Any PBS Pro cluster: qsub + Hydra mpiexec, host Flux or Apptainer", batch="PBS Pro",
    submit="qsub", launcher="mpiexec", runtime="none (or apptainer with an image)",
    mpi="the host's or image's OpenMPI, launched by Flux",
    pmi="MPICH Hydra mpiexec: PMI-1 over PMI_FD (Flux simple client)")


def make_config(*, account: Optional[str] = None, queue: Optional[str] = None, nodes: Optional[int] = None,
                cpus_per_node: Optional[int] = None, walltime: Optional[str] = None,
                max_blocks: Optional[int] = None, image: Optional[str] = None,
                binds: Optional[Sequence[str]] = None, worker_init: Optional[str] = None,
                flux_path: Optional[str] = None, python: Optional[str] = None, address: Optional[str] = None,
                interface: Optional[str] = None, run_dir: Optional[str] = None) -> Config:
    """Config for a PBS Pro cluster; see the module docstring for defaults."""
    name = SITE.name
    rundir = sites.run_dir(run_dir)
    img = sites.setting(image, "PARSL_FLUX_IMAGE", name, "image", "")
    box = sites.container(name, "apptainer", img, sites.binds(binds), rundir) if img else None
    init = sites.setting(worker_init, "PARSL_FLUX_WORKER_INIT", name, "worker_init", "")
    provider = PBSProProvider(
        account=sites.setting(account, "PARSL_FLUX_ACCOUNT", name, "account", None),
        queue=sites.setting(queue, "PARSL_FLUX_QUEUE", name, "queue", None),
        nodes_per_block=sites.positive_int(nodes, "PARSL_FLUX_NODES", name, "nodes", 1),
        cpus_per_node=sites.positive_int(cpus_per_node, "PARSL_FLUX_CPUS_PER_NODE", name, "cpus_per_node", 1),
        walltime=sites.walltime(walltime, name, "00:10:00"),
        scheduler_options="#PBS -l place=scatter",
        worker_init=f'cd "$PBS_O_WORKDIR"\n{init}',
        launcher=MpiExecLauncher(bind_cmd="--bind-to", overrides="-ppn 1"),
        init_blocks=1, min_blocks=0,
        max_blocks=sites.positive_int(max_blocks, "PARSL_FLUX_MAX_BLOCKS", name, "max_blocks", 1),
    )
    executor = FluxExecutor(
        label="flux", provider=provider, container=box, address=sites.address(address, interface),
        flux_path=None if box else sites.setting(flux_path, "FLUX_PATH", name, "flux_path", "flux"),
        python=None if box else sites.setting(python, "PARSL_FLUX_PYTHON", name, "python", sys.executable))
    return Config(executors=[executor], run_dir=rundir)


__getattr__ = sites.lazy_config(make_config)
