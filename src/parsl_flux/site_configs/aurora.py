"""ALCF Aurora: PBS Pro + mpiexec (Cray PALS) + Apptainer, 6 Intel GPUs per node.

``mpiexec -n NODES --ppn 1`` starts one ``apptainer exec IMAGE flux
start ...`` per node; ``--cpu-bind none`` leaves every core to Flux.

PMI: PALS answers only Cray PMI, so the brokers use Cray's ``libpmi2``
(``FLUX_PMI_CLIENT_METHODS=libpmi2``) from ``/opt/cray/pe``, bound in with
``/opt/cray/pals`` (its PALS client). ``PALS_*`` variables reach the
brokers because Apptainer keeps the host environment.

Environment: ``PARSL_FLUX_ACCOUNT`` (required), ``PARSL_FLUX_IMAGE``
(required, a ``.sif``), ``PARSL_FLUX_QUEUE`` (``debug``), ``PARSL_FLUX_NODES``
(2), ``PARSL_FLUX_WALLTIME`` (``00:30:00``), ``PARSL_FLUX_MAX_BLOCKS`` (1),
``PARSL_FLUX_BINDS``, ``PARSL_FLUX_WORKER_INIT`` (``module load apptainer``),
``PARSL_FLUX_ADDRESS``/``PARSL_FLUX_INTERFACE``, ``PARSL_FLUX_RUN_DIR``.
The Intel GPUs need no flag: Apptainer binds ``/dev`` (``/dev/dri``).
"""

from typing import Optional, Sequence

from parsl.config import Config
from parsl.launchers import MpiExecLauncher
from parsl.providers import PBSProProvider

from parsl_flux import FluxExecutor
from parsl_flux import sites

SITE = sites.Site(
    name="aurora", summary="ALCF Aurora: PBS Pro + mpiexec (PALS) + Apptainer, Intel GPUs", batch="PBS Pro",
    submit="qsub", launcher="mpiexec", runtime="apptainer", mpi="OpenMPI in the image, launched by Flux",
    pmi="Cray libpmi2 from PALS (FLUX_PMI_CLIENT_METHODS=libpmi2, /opt/cray/pe and /opt/cray/pals bound)",
    required=("account", "image"))

PMI_ENV = {"FLUX_PMI_CLIENT_METHODS": "libpmi2", "FLUX_PMI_CLIENT_SEARCHPATH": "/opt/cray/pe/pmi/default/lib"}
SYSTEM_BINDS = ("/opt/cray/pe", "/opt/cray/pals")


def make_config(*, account: Optional[str] = None, image: Optional[str] = None, queue: Optional[str] = None,
                nodes: Optional[int] = None, walltime: Optional[str] = None, max_blocks: Optional[int] = None,
                binds: Optional[Sequence[str]] = None, worker_init: Optional[str] = None,
                filesystems: str = "home:flare", address: Optional[str] = None,
                interface: Optional[str] = None, run_dir: Optional[str] = None) -> Config:
    """Config for Aurora; see the module docstring for defaults."""
    name = SITE.name
    account, image = sites.required(name, account=account, image=image)
    rundir = sites.run_dir(run_dir)
    box = sites.container(name, "apptainer", image,
                          sites.binds(binds), rundir, env=PMI_ENV, system_binds=SYSTEM_BINDS)
    init = sites.setting(worker_init, "PARSL_FLUX_WORKER_INIT", name, "worker_init",
                         "module load apptainer")
    provider = PBSProProvider(
        account=account,
        queue=sites.setting(queue, "PARSL_FLUX_QUEUE", name, "queue", "debug"),
        nodes_per_block=sites.positive_int(nodes, "PARSL_FLUX_NODES", name, "nodes", 2),
        walltime=sites.walltime(walltime, name, "00:30:00"),
        cpus_per_node=208, select_options="",
        scheduler_options=f"#PBS -l filesystems={filesystems}\n#PBS -l place=scatter",
        worker_init=f'cd "$PBS_O_WORKDIR"\n{init}',
        launcher=MpiExecLauncher(bind_cmd="--cpu-bind", overrides="--ppn 1"),
        init_blocks=1, min_blocks=0,
        max_blocks=sites.positive_int(max_blocks, "PARSL_FLUX_MAX_BLOCKS", name, "max_blocks", 1),
    )
    executor = FluxExecutor(label="flux", provider=provider, container=box,
                            address=sites.address(address, interface))
    return Config(executors=[executor], run_dir=rundir)


__getattr__ = sites.lazy_config(make_config)
