"""Site registry: find, load and build the per-site configs in ``site-configs/``.

A site config is a plain Python module (``site-configs/<name>.py``) that a
user can also copy and edit. Each exposes:

``SITE``
    A :class:`Site` describing the batch system, launcher, container runtime,
    MPI and PMI path (what ``parsl-flux sites`` lists and ``doctor`` checks).
``make_config(**overrides) -> parsl.config.Config``
    Values come from keyword arguments, else from the ``PARSL_FLUX_*``
    environment variables below, else from the site's defaults; a required
    value that is missing raises :class:`SiteError` naming the keyword and
    the variable.
``config``
    ``make_config()`` built on first access (module ``__getattr__``), so
    importing a site module never needs the environment, never runs a
    scheduler command (``SlurmProvider`` runs ``sacct`` when constructed) and
    never raises; ``from polaris import config`` still works where the
    variables are set.

Common variables (a site documents which it reads): ``PARSL_FLUX_ACCOUNT``,
``PARSL_FLUX_QUEUE``, ``PARSL_FLUX_NODES``, ``PARSL_FLUX_WALLTIME``,
``PARSL_FLUX_MAX_BLOCKS``, ``PARSL_FLUX_IMAGE``, ``PARSL_FLUX_BINDS``
(comma-separated ``SRC[:DST[:OPTS]]``), ``PARSL_FLUX_WORKER_INIT``,
``PARSL_FLUX_ADDRESS`` / ``PARSL_FLUX_INTERFACE`` (how compute nodes reach the
driver), ``PARSL_FLUX_RUN_DIR``, and ``FLUX_PATH`` for sites that use the
host's Flux.

The directory is ``$PARSL_FLUX_SITE_CONFIGS`` if set, else ``site-configs/``
at the root of the source tree this package was installed from.
"""

from __future__ import annotations

import copy
import glob
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence

from parsl.config import Config
from parsl.providers import LocalProvider

SITE_DIR_ENV = "PARSL_FLUX_SITE_CONFIGS"
_REQUIRED = object()
_WALLTIME = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")
_FAKE_SUBMIT_OUTPUT = "Submitted batch job 0\n0\nPID:0\n"
"""What the render stub answers to a submit command: parsed as job id ``0`` by
SlurmProvider (its regex), PBSProProvider and CobaltProvider (a digits-only
line) and LocalProvider (``PID:``)."""


class SiteError(ValueError):
    """A site name, setting or config that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Site:
    """What a site runs on, for listings, ``doctor`` and the docs table.

    Parameters
    ----------
    name : str
        Module name in ``site-configs/``.
    summary : str
        One line shown by ``parsl-flux sites``.
    batch : str
        Batch system, as people call it.
    submit : str, optional
        Command the provider submits with (checked by ``doctor``).
    launcher : str, optional
        Command that starts one ``flux start`` per node (checked by ``doctor``).
    runtime : str
        Container runtime (``none``: the host's Flux).
    mpi : str
        Which MPI tasks use.
    pmi : str
        How the brokers of one block find each other.
    required : sequence of str
        ``make_config`` keywords with no default (for messages and docs).
    """

    name: str
    summary: str
    batch: str
    submit: Optional[str]
    launcher: Optional[str]
    runtime: str
    mpi: str
    pmi: str
    required: Sequence[str] = ()


# ----------------------------------------------------------------- settings
def setting(value: Any, env: str, site: str, keyword: str, default: Any = _REQUIRED) -> Any:
    """``value`` if given, else ``$env`` if set and non-empty, else ``default``.

    Raises
    ------
    SiteError
        Nothing given and no default: says which keyword and variable to set.
    """
    if value is not None:
        return value
    from_env = os.environ.get(env, "").strip()
    if from_env:
        return from_env
    if default is _REQUIRED:
        raise SiteError(f"site {site!r} needs {keyword}: pass make_config({keyword}=...) "
                        f"(parsl-flux: --{keyword.replace('_', '-')}) or set {env}")
    return default


def positive_int(value: Any, env: str, site: str, keyword: str, default: int) -> int:
    """A setting that must be an integer >= 1 (node and block counts)."""
    raw = setting(value, env, site, keyword, default)
    try:
        number = int(raw)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(number) != str(raw).strip():
        raise SiteError(f"site {site!r}: {keyword}={raw!r} is not a whole number >= 1")
    return number


def walltime(value: Optional[str], site: str, default: str) -> str:
    """A walltime setting checked to be ``HH:MM:SS`` and at least one minute.

    Checked here because providers only parse it at the first submit, inside
    the DFK's strategy thread, where the error is easy to miss.
    """
    raw = str(setting(value, "PARSL_FLUX_WALLTIME", site, "walltime", default)).strip()
    match = _WALLTIME.match(raw)
    if not match:
        raise SiteError(f"site {site!r}: walltime {raw!r} is not HH:MM:SS (e.g. 01:30:00)")
    hours, minutes, _ = (int(x) for x in match.groups())
    if hours * 60 + minutes < 1:
        raise SiteError(f"site {site!r}: walltime {raw!r} is under one minute")
    return raw


def binds(value: Optional[Sequence[str]]) -> List[str]:
    """Bind list from ``value`` or the comma-separated ``PARSL_FLUX_BINDS``."""
    if value is not None:
        if isinstance(value, str):
            raise SiteError(f"binds={value!r}: pass a list of SRC[:DST[:OPTS]] strings, not one string")
        return list(value)
    return [b.strip() for b in os.environ.get("PARSL_FLUX_BINDS", "").split(",") if b.strip()]


def container(site: str, runtime: str, image: str, bind_list: Sequence[str], run_dir: str, *,
              gpus: Optional[str] = None, env: Optional[Dict[str, str]] = None,
              system_binds: Sequence[str] = ()) -> Any:
    """A :class:`~parsl_flux.container.Container` for a site, checked where it can be.

    The image and the user's ``bind_list`` must exist on this machine (the
    driver usually shares the filesystem with the compute nodes); ``run_dir``
    (created only at ``parsl.load``) and ``system_binds`` (paths that exist on
    the compute nodes, such as the Cray PMI libraries) are bound unchecked.
    Managers write their logs and task output under ``run_dir``.
    """
    from parsl_flux.container import Container, ContainerError

    try:
        box = Container(runtime, image, list(bind_list), dict(env or {}), gpus=gpus)
    except ContainerError as exc:
        raise SiteError(f"site {site!r}: {exc}") from exc
    return box.with_binds(run_dir, *system_binds)


def address(value: Optional[str], interface: Optional[str]) -> Optional[str]:
    """Where managers dial the driver: ``address``, ``$PARSL_FLUX_ADDRESS``, or the
    IP of ``interface``/``$PARSL_FLUX_INTERFACE``; None lets the executor pick."""
    chosen = value or os.environ.get("PARSL_FLUX_ADDRESS") or None
    if chosen:
        return chosen
    iface = interface or os.environ.get("PARSL_FLUX_INTERFACE") or None
    if iface:
        from parsl.addresses import address_by_interface

        try:
            return address_by_interface(iface)
        except OSError as exc:
            raise SiteError(f"network interface {iface!r} has no address on this host: {exc}") from exc
    return None


def run_dir(value: Optional[str]) -> str:
    """Absolute run directory (``runinfo`` under the current one by default), so
    that it can be bound into the container at the same path."""
    return os.path.abspath(value or os.environ.get("PARSL_FLUX_RUN_DIR") or "runinfo")


def lazy_config(make_config: Callable[[], Config]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that builds ``config`` on first access."""
    def __getattr__(name: str) -> Any:
        if name == "config":
            return make_config()
        raise AttributeError(f"module {make_config.__module__!r} has no attribute {name!r}")
    return __getattr__


# ----------------------------------------------------------------- registry
def site_dir() -> str:
    """The directory holding the site modules: ``$PARSL_FLUX_SITE_CONFIGS``, else
    the ones shipped in the package (``parsl_flux/site_configs``, which is the
    repository's ``site-configs/`` in a checkout), so a wheel install has them too."""
    configured = os.environ.get(SITE_DIR_ENV)
    if configured:
        return configured
    from importlib.resources import files

    return str(files("parsl_flux") / "site_configs")


def copy_site(name: str, dest: str) -> str:
    """Copy site ``name``'s config to ``dest`` (a file or a directory) for editing; the path written.

    Raises
    ------
    SiteError
        Unknown site, or ``dest`` already exists as a file.
    """
    source = load(name).__file__
    assert source is not None
    target = os.path.join(dest, f"{name}.py") if os.path.isdir(dest) else dest
    if os.path.exists(target):
        raise SiteError(f"{target!r} exists already; give another destination")
    shutil.copyfile(source, target)
    return target


def names() -> List[str]:
    """Names of the available sites, sorted."""
    return sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(site_dir(), "*.py")) if not os.path.basename(p).startswith("_"))


def load(name: str) -> ModuleType:
    """Import the site module ``name`` (or a path to a ``.py`` file).

    Raises
    ------
    SiteError
        Unknown name (the message lists the known ones) or a module without
        ``SITE`` and ``make_config``.
    """
    if name.endswith(".py"):
        path = os.path.abspath(name)
        if not os.path.isfile(path):
            raise SiteError(f"site config file {name!r} does not exist")
    else:
        path = os.path.join(site_dir(), f"{name}.py")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not os.path.isfile(path):
            known = ", ".join(names()) or f"none (no *.py in {site_dir()})"
            raise SiteError(f"unknown site {name!r}; known sites: {known}")
    mod_name = "parsl_flux_site_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look modules up here
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, "SITE", None), Site) or not callable(getattr(module, "make_config", None)):
        raise SiteError(f"{path} is not a site config: it needs SITE = parsl_flux.sites.Site(...) and make_config()")
    return module


def make_config(name: str, **overrides: Any) -> Config:
    """Build site ``name``'s config; ``overrides`` go to its ``make_config``.

    Raises
    ------
    SiteError
        Unknown site, a keyword the site does not take, or a bad/missing value.
    """
    module = load(name)
    try:
        return module.make_config(**overrides)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise SiteError(f"site {name!r} does not take {exc.args[0].split('argument')[-1].strip()}") from exc
        raise


# ----------------------------------------------------------------- rendering
@dataclass(frozen=True)
class Rendered:
    """What a block's submission would be, without submitting it."""

    label: str
    submit_command: Optional[str]
    """The scheduler command (``sbatch``/``qsub`` and its options); None for
    providers that start blocks without one (Kubernetes pods)."""
    script: str
    """The exact script text (for Kubernetes: the pod's shell command)."""


def flux_executor(config: Config) -> Any:
    """The config's first :class:`~parsl_flux.executor.FluxExecutor`."""
    from parsl_flux.executor import FluxExecutor

    for executor in config.executors:
        if isinstance(executor, FluxExecutor):
            return executor
    raise SiteError("the config has no FluxExecutor")


def _next_run_dir(root: str) -> str:
    """The run directory Parsl's ``make_rundir`` will create next, not creating it."""
    taken = [int(os.path.basename(p)) for p in glob.glob(os.path.join(root, "[0-9]*[0-9]"))
             if os.path.basename(p).isdigit()]
    return os.path.join(root, f"{max(taken) + 1 if taken else 0:03}")


def render(config: Config, block_id: str = "0") -> Rendered:
    """The batch script (and submit command) block ``block_id`` would get.

    The provider's own ``submit`` writes the script, with the scheduler call
    stubbed out, so the text is the provider's and the launch line is the
    executor's, for the run directory the next ``parsl.load`` would create.
    The driver's port is the first of ``port_range`` (the real one is picked
    at start) and the block key is a fresh random one.
    """
    executor = copy.copy(flux_executor(config))
    executor.run_dir = _next_run_dir(os.path.abspath(config.run_dir))
    local = isinstance(executor.provider, LocalProvider)
    host = executor.address or executor.default_address()
    command = executor.launch_command(block_id, url=f"tcp://{host}:{executor.port_range[0]}")

    label = getattr(executor.provider, "label", type(executor.provider).__name__)
    if type(executor.provider).__name__ == "KubernetesProvider":  # holds an API client: render from its template
        from parsl.providers.kubernetes.template import template_string

        return Rendered(label, None, template_string.format(command=command,
                                                            worker_init=executor.provider.worker_init))
    provider = copy.deepcopy(executor.provider)

    real_dir = os.path.join(executor.run_dir, "submit_scripts")
    calls: List[str] = []

    def stub(cmd: str, timeout: Optional[int] = None) -> tuple:
        calls.append(cmd)
        return 0, _FAKE_SUBMIT_OUTPUT, ""

    with tempfile.TemporaryDirectory(prefix="parsl-flux-render-") as tmp:
        provider.script_dir = tmp
        provider.execute_wait = stub
        from unittest import mock  # only for rendering (a tool), never when a site config is just loaded

        with mock.patch("parsl.providers.local.local.execute_wait", stub):
            provider.submit(command, 1, f"parsl.{executor.label}.block-{block_id}")
        scripts = [p for p in glob.glob(os.path.join(tmp, "*")) if not os.path.basename(p).startswith("cmd_")]
        if len(scripts) != 1:
            raise SiteError(f"provider {label!r} wrote {len(scripts)} files, expected one batch script")
        with open(scripts[0]) as f:
            script = f.read().replace(tmp, real_dir)
    submit = calls[-1].replace(tmp, real_dir) if calls and not local else None
    return Rendered(label, submit, script)


def describe(module: ModuleType) -> Dict[str, str]:
    """The fields of a site's :class:`Site` as strings (for tables)."""
    site: Site = module.SITE
    return {"name": site.name, "summary": site.summary, "batch": site.batch, "submit": site.submit or "-",
            "launcher": site.launcher or "-", "runtime": site.runtime, "mpi": site.mpi, "pmi": site.pmi,
            "required": ", ".join(site.required) or "-"}
