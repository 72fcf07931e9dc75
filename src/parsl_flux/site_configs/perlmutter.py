"""NERSC Perlmutter: Slurm + srun + podman-hpc (or Shifter).

``srun --ntasks NODES --ntasks-per-node=1`` starts one container per node,
which runs ``flux start ...``. ``constraint`` picks GPU (4 NVIDIA A100) or
CPU nodes; ``qos`` is the queue.

PMI, by runtime:

* ``podman-hpc`` (default): Podman does not pass inherited descriptors, so
  ``srun --mpi=cray_shasta`` sets the ``PALS_*`` variables (passed with
  ``-e``) and the brokers use Cray's ``libpmi2``
  (``FLUX_PMI_CLIENT_METHODS=libpmi2``), which ``podman-hpc --mpi`` mounts.
* ``shifter``: keeps descriptors, so ``srun --mpi=pmi2`` and Flux's
  ``simple`` client over ``PMI_FD``, as on Frontier.

Environment: ``PARSL_FLUX_ACCOUNT`` (required), ``PARSL_FLUX_IMAGE``
(required: ``name:tag`` migrated with ``podman-hpc migrate``, or
``docker:name:tag`` pulled with ``shifterimg``), ``PARSL_FLUX_RUNTIME``
(``podman-hpc`` | ``shifter``), ``PARSL_FLUX_QUEUE`` (qos, ``debug``),
``PARSL_FLUX_CONSTRAINT`` (``gpu``), ``PARSL_FLUX_NODES`` (2),
``PARSL_FLUX_WALLTIME`` (``00:30:00``), ``PARSL_FLUX_MAX_BLOCKS`` (1),
``PARSL_FLUX_BINDS``, ``PARSL_FLUX_WORKER_INIT``,
``PARSL_FLUX_ADDRESS``/``PARSL_FLUX_INTERFACE``, ``PARSL_FLUX_RUN_DIR``.
"""

from typing import Optional, Sequence

from parsl.config import Config
from parsl.launchers import SrunLauncher

from parsl_flux import FluxExecutor
from parsl_flux import sites
from parsl_flux.providers import SlurmProvider

SITE = sites.Site(
    name="perlmutter", summary="NERSC Perlmutter: Slurm + srun + podman-hpc (or Shifter)", batch="Slurm",
    submit="sbatch", launcher="srun", runtime="podman-hpc", mpi="OpenMPI in the image, launched by Flux",
    pmi="podman-hpc: srun --mpi=cray_shasta + Cray libpmi2; shifter: srun --mpi=pmi2 + simple (PMI_FD)",
    required=("account", "image"))

RUNTIMES = {  # runtime -> (srun --mpi plugin, variables set in the container)
    "podman-hpc": ("cray_shasta", {"FLUX_PMI_CLIENT_METHODS": "libpmi2"}),
    "shifter": ("pmi2", {}),
}


def make_config(*, account: Optional[str] = None, image: Optional[str] = None, runtime: Optional[str] = None,
                queue: Optional[str] = None, constraint: Optional[str] = None, nodes: Optional[int] = None,
                walltime: Optional[str] = None, max_blocks: Optional[int] = None,
                binds: Optional[Sequence[str]] = None, worker_init: Optional[str] = None,
                address: Optional[str] = None, interface: Optional[str] = None,
                run_dir: Optional[str] = None) -> Config:
    """Config for Perlmutter; see the module docstring for defaults."""
    name = SITE.name
    account, image = sites.required(name, account=account, image=image)
    rundir = sites.run_dir(run_dir)
    rt = sites.setting(runtime, "PARSL_FLUX_RUNTIME", name, "runtime", "podman-hpc")
    if rt not in RUNTIMES:
        raise sites.SiteError(f"site {name!r}: runtime {rt!r} is not one of {', '.join(RUNTIMES)}")
    srun_mpi, pmi_env = RUNTIMES[rt]
    nodes_kind = sites.setting(constraint, "PARSL_FLUX_CONSTRAINT", name, "constraint", "gpu")
    box = sites.container(name, rt, image, sites.binds(binds),
                          rundir, gpus="nvidia" if nodes_kind == "gpu" else None, env=pmi_env)
    node_opts = "-c 128 --gpus-per-node=4" if nodes_kind == "gpu" else "-c 256"  # every hardware thread
    provider = SlurmProvider(
        account=account,
        qos=sites.setting(queue, "PARSL_FLUX_QUEUE", name, "queue", "debug"),
        constraint=nodes_kind,
        nodes_per_block=sites.positive_int(nodes, "PARSL_FLUX_NODES", name, "nodes", 2),
        walltime=sites.walltime(walltime, name, "00:30:00"),
        worker_init=sites.setting(worker_init, "PARSL_FLUX_WORKER_INIT", name, "worker_init", ""),
        launcher=SrunLauncher(overrides=f"--ntasks-per-node=1 {node_opts} --mpi={srun_mpi}"),
        exclusive=True, init_blocks=1, min_blocks=0,
        max_blocks=sites.positive_int(max_blocks, "PARSL_FLUX_MAX_BLOCKS", name, "max_blocks", 1),
    )
    executor = FluxExecutor(label="flux", provider=provider, container=box,
                            address=sites.address(address, interface))
    return Config(executors=[executor], run_dir=rundir)


__getattr__ = sites.lazy_config(make_config)
