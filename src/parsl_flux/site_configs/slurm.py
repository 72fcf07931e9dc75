"""Any Slurm cluster: sbatch + srun, with the host's Flux or a container image.

``srun --ntasks NODES --ntasks-per-node=1 --cpus-per-task=$SLURM_CPUS_ON_NODE``
starts one ``flux start ...`` per node with every CPU Slurm gave the node.
This is the config the CI's one-node Slurm runs (``tests/test_slurm.py``).

PMI: ``srun --mpi=pmi2`` hands each broker a ``PMI_FD``; Flux's ``simple``
client speaks the PMI-1 wire protocol Slurm's pmi2 plugin also serves.
Apptainer/Singularity keep that descriptor. Multi-node with Apptainer is
tested on a 2-node virtual cluster (``tests/test_cluster.py``, ``make
cluster-up``). ``--kill-on-bad-exit=1``: a broker that dies ends its block.

Environment (all optional): ``PARSL_FLUX_IMAGE`` (a ``.sif``; without it the
host's Flux runs), ``PARSL_FLUX_RUNTIME`` (``apptainer`` when an image is
given), ``FLUX_PATH`` (host ``flux``, default ``flux`` from PATH),
``PARSL_FLUX_PYTHON`` (host Python with parsl-flux, default this
interpreter), ``PARSL_FLUX_ACCOUNT``, ``PARSL_FLUX_QUEUE`` (partition),
``PARSL_FLUX_NODES`` (1), ``PARSL_FLUX_WALLTIME`` (``00:10:00``),
``PARSL_FLUX_MAX_BLOCKS`` (1), ``PARSL_FLUX_BINDS``,
``PARSL_FLUX_WORKER_INIT``, ``PARSL_FLUX_ADDRESS``/``PARSL_FLUX_INTERFACE``,
``PARSL_FLUX_RUN_DIR``.
"""

import sys
from typing import Optional, Sequence

from parsl.config import Config
from parsl.launchers import SrunLauncher

from parsl_flux import FluxExecutor
from parsl_flux import sites
from parsl_flux.providers import SlurmProvider

SITE = sites.Site(
    name="slurm", summary="Any Slurm cluster: sbatch + srun, host Flux or Apptainer", batch="Slurm",
    submit="sbatch", launcher="srun", runtime="none (or apptainer with an image)",
    mpi="the host's or image's OpenMPI, launched by Flux",
    pmi="Slurm pmi2 (srun --mpi=pmi2; Flux simple client over PMI_FD)")


def make_config(*, account: Optional[str] = None, queue: Optional[str] = None, nodes: Optional[int] = None,
                walltime: Optional[str] = None, max_blocks: Optional[int] = None, image: Optional[str] = None,
                runtime: Optional[str] = None, binds: Optional[Sequence[str]] = None,
                worker_init: Optional[str] = None, flux_path: Optional[str] = None, python: Optional[str] = None,
                exclusive: bool = True, address: Optional[str] = None, interface: Optional[str] = None,
                run_dir: Optional[str] = None, **executor_options) -> Config:
    """Config for a Slurm cluster; see the module docstring for defaults.

    ``executor_options`` go to :class:`~parsl_flux.driver.executor.FluxExecutor`
    (e.g. ``heartbeat_threshold``).
    """
    name = SITE.name
    rundir = sites.run_dir(run_dir)
    img = sites.setting(image, "PARSL_FLUX_IMAGE", name, "image", "")
    box = None
    if img:
        box = sites.container(name, sites.setting(runtime, "PARSL_FLUX_RUNTIME", name, "runtime", "apptainer"),
                              img, sites.binds(binds), rundir)
    provider = SlurmProvider(
        account=sites.setting(account, "PARSL_FLUX_ACCOUNT", name, "account", None),
        partition=sites.setting(queue, "PARSL_FLUX_QUEUE", name, "queue", None),
        nodes_per_block=sites.positive_int(nodes, "PARSL_FLUX_NODES", name, "nodes", 1),
        walltime=sites.walltime(walltime, name, "00:10:00"),
        worker_init=sites.setting(worker_init, "PARSL_FLUX_WORKER_INIT", name, "worker_init", ""),
        # --kill-on-bad-exit: a block is one Flux instance; if one node's broker
        # dies, the whole step ends, so the block's futures fail with BlockLost
        # and Parsl starts a new block (instead of a block left with fewer nodes).
        launcher=SrunLauncher(overrides="--ntasks-per-node=1 --cpus-per-task=$SLURM_CPUS_ON_NODE --mpi=pmi2 "
                                        "--kill-on-bad-exit=1"),
        exclusive=exclusive, init_blocks=1, min_blocks=0,
        max_blocks=sites.positive_int(max_blocks, "PARSL_FLUX_MAX_BLOCKS", name, "max_blocks", 1),
    )
    executor = FluxExecutor(
        label="flux", provider=provider, container=box, address=sites.address(address, interface),
        flux_path=None if box else sites.setting(flux_path, "FLUX_PATH", name, "flux_path", "flux"),
        python=None if box else sites.setting(python, "PARSL_FLUX_PYTHON", name, "python", sys.executable),
        **executor_options)
    return Config(executors=[executor], run_dir=rundir)


__getattr__ = sites.lazy_config(make_config)
