"""Kubernetes: each block is one pod of the parsl-flux image, running ``flux start``;
or, with ``minicluster=True``, each block is a Flux Operator MiniCluster from
the Helm chart in ``charts/parsl-flux``.

MiniCluster mode (``PARSL_FLUX_MINICLUSTER=1``): the chart starts the Flux
instance and its manager; the driver (this config, run in the cluster, e.g. by
the chart's driver Job) LISTENS on ``port`` (``PARSL_FLUX_PORT``, default 54321,
the chart's ``driver.port``) and the manager dials it through the chart's
Service. Both derive their keys from ``secret`` (``PARSL_FLUX_SECRET``, which
the chart's Secret provides). Parsl starts nothing: an ``ExternalProvider``
waits for block "0". See docs/kubernetes.md.

Parsl's KubernetesProvider runs the block command in a pod, so the image
itself is the container: no runtime wrapping, and ``flux``/``python3`` are
the image's. One pod is one single-broker Flux instance (no PMI); for an
instance of N pods use the Helm chart in ``charts/`` and attach to it.

Needs the ``kubernetes`` Python package (``pip install kubernetes``) and a
kube config (``~/.kube/config``, or the in-cluster service account); the
provider loads both when the config is built, so importing this module needs
neither. Pods must reach the driver: set ``PARSL_FLUX_ADDRESS`` to an
address they can dial (the driver's pod IP or a Service).

Environment: ``PARSL_FLUX_IMAGE`` (required), ``PARSL_FLUX_NAMESPACE``
(``default``), ``PARSL_FLUX_MAX_BLOCKS`` (2), ``PARSL_FLUX_CPUS`` (2, the
pod's CPU limit), ``PARSL_FLUX_MEMORY`` (``2Gi``), ``PARSL_FLUX_WORKER_INIT``,
``PARSL_FLUX_ADDRESS``/``PARSL_FLUX_INTERFACE``, ``PARSL_FLUX_RUN_DIR``.
"""

from typing import Optional

from parsl.config import Config

from parsl_flux import FluxExecutor
from parsl_flux import sites
from parsl_flux.providers.external import ExternalProvider

CHART_PORT = 54321

SITE = sites.Site(
    name="kubernetes", summary="Kubernetes: one pod of the image per block", batch="Kubernetes", submit=None,
    launcher=None, runtime="the pod (image runs directly)", mpi="the image's OpenMPI, launched by Flux",
    pmi="none per pod (single broker); multi-pod instances via the Helm chart", required=("image",))


def make_config(*, image: Optional[str] = None, namespace: Optional[str] = None,
                max_blocks: Optional[int] = None, cpus: Optional[int] = None, memory: Optional[str] = None,
                worker_init: Optional[str] = None, address: Optional[str] = None,
                interface: Optional[str] = None, run_dir: Optional[str] = None,
                minicluster: Optional[bool] = None, port: Optional[int] = None,
                secret: Optional[str] = None) -> Config:
    """Config for Kubernetes; see the module docstring for defaults and needs."""
    name = SITE.name
    if minicluster is None:
        minicluster = sites.setting(None, "PARSL_FLUX_MINICLUSTER", name, "minicluster", "0") not in ("0", "")
    if minicluster:
        executor = FluxExecutor(
            label="flux", provider=ExternalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            port=sites.positive_int(port, "PARSL_FLUX_PORT", name, "port", CHART_PORT),
            secret=sites.setting(secret, "PARSL_FLUX_SECRET", name, "secret"),
            address=sites.address(address, interface))
        return Config(executors=[executor], run_dir=sites.run_dir(run_dir))
    cpu = sites.positive_int(cpus, "PARSL_FLUX_CPUS", name, "cpus", 2)
    mem = sites.setting(memory, "PARSL_FLUX_MEMORY", name, "memory", "2Gi")
    options = dict(
        image=sites.setting(image, "PARSL_FLUX_IMAGE", name, "image"),
        namespace=sites.setting(namespace, "PARSL_FLUX_NAMESPACE", name, "namespace", "default"),
        nodes_per_block=1, init_blocks=1, min_blocks=0,
        max_blocks=sites.positive_int(max_blocks, "PARSL_FLUX_MAX_BLOCKS", name, "max_blocks", 2),
        init_cpu=float(cpu), max_cpu=float(cpu), init_mem=mem, max_mem=mem,
        worker_init=sites.setting(worker_init, "PARSL_FLUX_WORKER_INIT", name, "worker_init", ""),
    )
    try:
        from parsl.providers import KubernetesProvider

        provider = KubernetesProvider(**options)
    except Exception as exc:  # OptionalModuleMissing, kube ConfigException: both mean "not set up here"
        raise sites.SiteError(f"site {name!r}: the Kubernetes provider cannot start here ({exc}); it needs "
                              "`pip install kubernetes` and a kube config (~/.kube/config or in-cluster)") from exc
    # pods share no filesystem with the driver: the key travels in the pod's command (docs/reference/trust.md)
    executor = FluxExecutor(label="flux", provider=provider, flux_path="flux", python="python3",
                            address=sites.address(address, interface), key_in_command=True)
    return Config(executors=[executor], run_dir=sites.run_dir(run_dir))


__getattr__ = sites.lazy_config(make_config)
