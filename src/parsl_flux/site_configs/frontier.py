"""OLCF Frontier: Slurm + srun + Apptainer, 8 AMD GPUs (GCDs) per node.

``srun --ntasks NODES --ntasks-per-node=1 -c 56`` starts one ``apptainer exec
--rocm IMAGE flux start ...`` per node with all 56 usable cores.

PMI: ``srun --mpi=pmi2`` hands each broker a ``PMI_FD`` (Slurm's pmi2 plugin
also speaks the PMI-1 wire protocol that Flux's ``simple`` client uses), and
Apptainer keeps inherited descriptors, so nothing from the host is bound.
If a system lacks the pmi2 plugin, use ``srun_mpi="cray_shasta"`` with
``FLUX_PMI_CLIENT_METHODS=libpmi2`` and ``/opt/cray/pe`` bound, as on Polaris.

Environment: ``PARSL_FLUX_ACCOUNT`` (required), ``PARSL_FLUX_IMAGE``
(required, a ``.sif``), ``PARSL_FLUX_QUEUE`` (partition, ``batch``),
``PARSL_FLUX_NODES`` (2), ``PARSL_FLUX_WALLTIME`` (``00:30:00``),
``PARSL_FLUX_MAX_BLOCKS`` (1), ``PARSL_FLUX_BINDS``, ``PARSL_FLUX_WORKER_INIT``,
``PARSL_FLUX_ADDRESS``/``PARSL_FLUX_INTERFACE``, ``PARSL_FLUX_RUN_DIR``.
"""

from typing import Optional, Sequence

from parsl.config import Config
from parsl.launchers import SrunLauncher

from parsl_flux import FluxExecutor
from parsl_flux import sites
from parsl_flux.providers import SlurmProvider

SITE = sites.Site(
    name="frontier", summary="OLCF Frontier: Slurm + srun + Apptainer, AMD GPUs", batch="Slurm", submit="sbatch",
    launcher="srun", runtime="apptainer", mpi="OpenMPI in the image, launched by Flux",
    pmi="Slurm pmi2 (srun --mpi=pmi2; Flux simple client over PMI_FD)", required=("account", "image"))


def make_config(*, account: Optional[str] = None, image: Optional[str] = None, queue: Optional[str] = None,
                nodes: Optional[int] = None, walltime: Optional[str] = None, max_blocks: Optional[int] = None,
                binds: Optional[Sequence[str]] = None, worker_init: Optional[str] = None,
                srun_mpi: str = "pmi2", address: Optional[str] = None, interface: Optional[str] = None,
                run_dir: Optional[str] = None) -> Config:
    """Config for Frontier; see the module docstring for defaults."""
    name = SITE.name
    account, image = sites.required(name, account=account, image=image)
    rundir = sites.run_dir(run_dir)
    box = sites.container(name, "apptainer", image,
                          sites.binds(binds), rundir, gpus="amd")
    provider = SlurmProvider(
        account=account,
        partition=sites.setting(queue, "PARSL_FLUX_QUEUE", name, "queue", "batch"),
        nodes_per_block=sites.positive_int(nodes, "PARSL_FLUX_NODES", name, "nodes", 2),
        walltime=sites.walltime(walltime, name, "00:30:00"),
        worker_init=sites.setting(worker_init, "PARSL_FLUX_WORKER_INIT", name, "worker_init", ""),
        launcher=SrunLauncher(overrides=f"--ntasks-per-node=1 -c 56 --gpus-per-node=8 --mpi={srun_mpi}"),
        exclusive=True, init_blocks=1, min_blocks=0,
        max_blocks=sites.positive_int(max_blocks, "PARSL_FLUX_MAX_BLOCKS", name, "max_blocks", 1),
    )
    executor = FluxExecutor(label="flux", provider=provider, container=box,
                            address=sites.address(address, interface))
    return Config(executors=[executor], run_dir=rundir)


__getattr__ = sites.lazy_config(make_config)
