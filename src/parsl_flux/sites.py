"""Site registry: find, load and build the per-site configs.

A site config is a plain Python module, ``<name>.py``. The ones this project
maintains ship inside the package (``parsl_flux/site_configs/``, read through
:mod:`importlib.resources`, so a wheel install has them as a checkout does;
``site-configs/`` at the top of a checkout links there). Users copy one
(``parsl-flux sites copy NAME``) to edit it. Each exposes:

``SITE``
    A :class:`Site` describing the batch system, launcher, container runtime,
    MPI and PMI path (what ``parsl-flux sites`` lists and ``doctor`` checks).
``make_config(**overrides) -> parsl.config.Config``
    Values come from keyword arguments, else from the ``PARSL_FLUX_*``
    environment variables below, else from the site's defaults; a required
    value that is missing raises :class:`SiteError` naming the keyword and
    the variable (all missing ones at once, see :func:`required`).
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

Sites are looked up by name in the directories of ``$PARSL_FLUX_SITE_CONFIGS``
(``os.pathsep``-separated, e.g. where edited copies live), then among the
shipped ones; the first match wins, so a copy named ``polaris.py`` replaces
the shipped ``polaris``. Any ``.py`` file can also be given by path.
"""

from __future__ import annotations

import copy
import glob
import importlib.util
import ipaddress
import os
import re
import socket
import sys
import tempfile
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from parsl.config import Config
from parsl.providers import LocalProvider

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; annotations only

SITE_DIR_ENV = "PARSL_FLUX_SITE_CONFIGS"
_REQUIRED = object()
_WALLTIME = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")
_FAKE_SUBMIT_OUTPUT = "Submitted batch job 0\n0\n"
"""What the render stub answers to a submit command: parsed as job id ``0`` by
SlurmProvider (its regex), PBSProProvider and CobaltProvider (a digits-only
line)."""


class SiteError(ValueError):
    """A site name, setting or config that cannot be used; the message says how to fix it."""


class _ScriptWritten(Exception):
    """Raised by :func:`render`'s stand-in once ``LocalProvider`` has written its
    script, so that it never goes on to run it."""


@dataclass(frozen=True)
class Site:
    """What a site runs on, for listings, ``doctor`` and the docs table.

    Parameters
    ----------
    name : str
        Module name (``<name>.py``).
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
        raise _missing(site, {keyword: env})
    return default


def required(site: str, **values: Any) -> Tuple[Any, ...]:
    """The values of settings that have no default, in the order given: each
    keyword's value if not None, else ``$PARSL_FLUX_<KEYWORD>``.

    A site's ``make_config`` calls this first, so that a user missing, say,
    both an account and an image learns both from one attempt rather than one
    per run (``make site-show SITE=theta``).

    Raises
    ------
    SiteError
        Naming every missing keyword and its variable.
    """
    envs = {keyword: f"PARSL_FLUX_{keyword.upper()}" for keyword in values}
    found = {keyword: setting(value, envs[keyword], site, keyword, None) for keyword, value in values.items()}
    missing = {keyword: envs[keyword] for keyword, value in found.items() if value is None or value == ""}
    if missing:
        raise _missing(site, missing)
    return tuple(found.values())


def _missing(site: str, missing: Dict[str, str]) -> SiteError:
    """The error for required settings (keyword -> variable) that were not given."""
    keywords = list(missing)
    listed = keywords[0] if len(keywords) == 1 else ", ".join(keywords[:-1]) + " and " + keywords[-1]
    return SiteError(f"site {site!r} needs {listed}: pass make_config({'=..., '.join(keywords)}=...) "
                     f"(parsl-flux: {', '.join('--' + k.replace('_', '-') for k in keywords)}) "
                     f"or set {', '.join(missing.values())}")


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

    local, source = image_copy(site, runtime, image)
    # Docker/Podman start the image's own user (uid 10001), which cannot read
    # the block key the driver wrote 0600 in the bound run directory: run as
    # the driver's user, as Apptainer does by itself.
    options = ["--user", f"{os.getuid()}:{os.getgid()}"] if runtime in ("docker", "podman") else []
    try:
        box = Container(runtime, local, list(bind_list), dict(env or {}), options=options, gpus=gpus, source=source)
    except ContainerError as exc:
        raise SiteError(f"site {site!r}: {exc}") from exc
    return box.with_binds(run_dir, *system_binds)


def image_copy(site: str, runtime: str, image: str) -> Tuple[str, Optional[str]]:
    """``(image to run, reference to pull it from or None)`` for a site's ``image``.

    A path is run as given. A ``docker://`` or ``oras://`` reference is run
    from a local copy that the executor pulls once before blocks start
    (``parsl-flux image pull --site NAME`` does it ahead of time): for
    Apptainer/Singularity a SIF in the per-user cache
    (:func:`parsl_flux.imageref.cache_file`), for Docker/Podman the engine's
    store, under the name those engines use.

    Raises
    ------
    SiteError
        A malformed reference, or one for a runtime that has its own way of
        naming images (Shifter).
    """
    from parsl_flux import imagepull, imageref

    if not imageref.is_reference(image):
        return image, None
    try:
        ref = imageref.parse(image)
    except imageref.ImageRefError as exc:
        raise SiteError(f"site {site!r}: {exc}") from exc
    if runtime in imagepull.SIF_RUNTIMES:
        return str(imageref.cache_file(ref, imageref.cache_dir())), image
    if runtime in imagepull.ENGINE_RUNTIMES and ref.scheme == "docker":
        return ref.engine_name, image
    raise SiteError(f"site {site!r}: runtime {runtime!r} cannot run {image!r}; give an image name as {runtime} "
                    "takes it" + (" (oras:// holds a SIF: use apptainer)" if ref.scheme == "oras" else ""))


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
def shipped_sites() -> Traversable:
    """The site configs shipped in the package (``parsl_flux/site_configs/``).

    Read through :mod:`importlib.resources` rather than a path relative to
    this file, so they are found wherever the package is installed (a wheel,
    the image's venv), not only in a source checkout.
    """
    return files("parsl_flux") / "site_configs"


def site_dirs() -> List[Traversable]:
    """Where site names are looked up, first match wins: the directories in
    ``$PARSL_FLUX_SITE_CONFIGS`` (``os.pathsep``-separated), then the shipped ones.

    Raises
    ------
    SiteError
        A directory in ``$PARSL_FLUX_SITE_CONFIGS`` that does not exist
        (a typo there would otherwise silently fall back to the shipped site).
    """
    dirs: List[Traversable] = []
    for entry in os.environ.get(SITE_DIR_ENV, "").split(os.pathsep):
        if entry.strip():
            if not os.path.isdir(entry):
                raise SiteError(f"{SITE_DIR_ENV}: {entry!r} is not a directory")
            dirs.append(Path(entry))
    return [*dirs, shipped_sites()]


def names() -> List[str]:
    """Names of the available sites, sorted (``_*.py`` files are helpers, not sites)."""
    return sorted({entry.name[:-3] for directory in site_dirs() for entry in directory.iterdir()
                   if entry.name.endswith(".py") and not entry.name.startswith("_") and entry.is_file()})


def find(name: str) -> Traversable:
    """The source of site ``name``: a ``.py`` path as given, else ``<name>.py``
    in the first of :func:`site_dirs` that has it.

    Raises
    ------
    SiteError
        A path that does not exist, or an unknown name (the message lists the known ones).
    """
    if name.endswith(".py"):
        if not os.path.isfile(name):
            raise SiteError(f"site config file {name!r} does not exist")
        return Path(os.path.abspath(name))
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        for directory in site_dirs():
            source = directory / f"{name}.py"
            if source.is_file():
                return source
    known = ", ".join(names()) or "none (no *.py in " + ", ".join(str(d) for d in site_dirs()) + ")"
    raise SiteError(f"unknown site {name!r}; known sites: {known}")


def copy_site(name: str, dest: str) -> str:
    """Write site ``name``'s config to ``dest`` (a file, or a directory to hold
    ``<name>.py``) for editing; return the path written.

    Raises
    ------
    SiteError
        Unknown site, ``dest`` exists already (an edited copy is never
        overwritten), or its directory does not exist.
    """
    source = find(name)
    target = os.path.join(dest, source.name) if os.path.isdir(dest) else dest
    if os.path.exists(target):
        raise SiteError(f"{target!r} exists already; give another destination")
    if not os.path.isdir(os.path.dirname(os.path.abspath(target))):
        raise SiteError(f"cannot write {target!r}: directory {os.path.dirname(target)!r} does not exist")
    with open(target, "x", encoding="utf-8") as out:
        out.write(source.read_text(encoding="utf-8"))
    return target


def load(name: str) -> ModuleType:
    """Import site ``name`` (see :func:`find`), or a ``.py`` file given by path.

    Raises
    ------
    SiteError
        Unknown name or missing file (see :func:`find`), or a module without
        ``SITE`` and ``make_config``.
    """
    source = find(name)
    mod_name = "parsl_flux_site_" + source.name[:-3]
    with as_file(source) as path:  # the file itself, unless the package is zipped
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # dataclasses and pickling look modules up here
        spec.loader.exec_module(module)
    if not isinstance(getattr(module, "SITE", None), Site) or not callable(getattr(module, "make_config", None)):
        raise SiteError(f"{source} is not a site config: it needs SITE = parsl_flux.sites.Site(...) and make_config()")
    return module


def build(module: ModuleType, **overrides: Any) -> Config:
    """Call a loaded site module's ``make_config`` with ``overrides``.

    Raises
    ------
    SiteError
        A keyword the site does not take, or a bad/missing value.
    """
    try:
        return module.make_config(**overrides)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise SiteError(f"site {module.SITE.name!r} does not take "
                            f"{exc.args[0].split('argument')[-1].strip()}") from exc
        raise


def make_config(name: str, **overrides: Any) -> Config:
    """Build site ``name``'s config; ``overrides`` go to its ``make_config``.

    Raises
    ------
    SiteError
        Unknown site, a keyword the site does not take, or a bad/missing value.
    """
    return build(load(name), **overrides)


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
    warnings: Tuple[str, ...] = ()
    """Why the script, though valid, would probably not work (see :func:`address_warning`)."""


def flux_executor(config: Config) -> Any:
    """The config's first :class:`~parsl_flux.driver.executor.FluxExecutor`."""
    from parsl_flux.driver.executor import FluxExecutor

    for executor in config.executors:
        if isinstance(executor, FluxExecutor):
            return executor
    raise SiteError("the config has no FluxExecutor")


def _next_run_dir(root: str) -> str:
    """The run directory Parsl's ``make_rundir`` will create next, not creating it."""
    taken = [int(os.path.basename(p)) for p in glob.glob(os.path.join(root, "[0-9]*[0-9]"))
             if os.path.basename(p).isdigit()]
    return os.path.join(root, f"{max(taken) + 1 if taken else 0:03}")


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or a name, resolved here) is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def address_warning(executor: Any, host: str) -> Optional[str]:
    """A warning when managers of ``executor`` would dial ``host`` but cannot.

    Blocks other than a ``LocalProvider``'s run on other machines, which reach
    nothing at a loopback address. The default address is this host's name,
    and many hosts resolve their own name to 127.0.0.1 or 127.0.1.1 in
    ``/etc/hosts``: the script looks right and its blocks never connect.
    """
    if isinstance(executor.provider, LocalProvider) or not _is_loopback(host):
        return None
    origin = ("the address given" if executor.address
              else f"what this host's name, {socket.gethostname()}, resolves to")
    return (f"managers would dial {host} ({origin}), a loopback address that compute nodes cannot reach; "
            "set PARSL_FLUX_ADDRESS to an address they can reach or PARSL_FLUX_INTERFACE to the network "
            "interface they share with this host (parsl-flux: --set address=... or --set interface=...)")


def render(config: Config, block_id: str = "0") -> Rendered:
    """The batch script (and submit command) block ``block_id`` would get.

    The provider's own ``submit`` writes the script, with the scheduler call
    stubbed out, so the text is the provider's and the launch line is the
    executor's, for the run directory the next ``parsl.load`` would create.
    The driver's port is the first of ``port_range`` (the real one is picked
    at start) and the block key is a fresh random one.

    Nothing outside the copied provider is patched (no ``mock.patch`` of a
    module's ``execute_wait``, which every thread's providers would see):
    cluster providers call the stub set on the copy; ``LocalProvider``, which
    calls its module's ``execute_wait``, is stopped right after writing its
    script.
    """
    executor = copy.copy(flux_executor(config))
    executor.run_dir = _next_run_dir(os.path.abspath(config.run_dir))
    local = isinstance(executor.provider, LocalProvider)
    host = executor.address or executor.default_address()
    command = executor.launch_command(block_id, url=f"tcp://{host}:{executor.port_range[0]}")

    warning = address_warning(executor, host)
    warnings = (warning,) if warning else ()

    label = getattr(executor.provider, "label", type(executor.provider).__name__)
    if type(executor.provider).__name__ == "KubernetesProvider":  # holds an API client: render from its template
        from parsl.providers.kubernetes.template import template_string

        return Rendered(label, None, template_string.format(command=command,
                                                            worker_init=executor.provider.worker_init), warnings)
    provider = copy.deepcopy(executor.provider)

    real_dir = os.path.join(executor.run_dir, "submit_scripts")
    calls: List[str] = []

    def stub(cmd: str, timeout: Optional[int] = None) -> tuple:
        calls.append(cmd)
        return 0, _FAKE_SUBMIT_OUTPUT, ""

    if local:
        write_script = provider._write_submit_script

        def write_then_stop(*args: Any, **kwargs: Any) -> None:
            write_script(*args, **kwargs)
            raise _ScriptWritten

        provider._write_submit_script = write_then_stop

    with tempfile.TemporaryDirectory(prefix="parsl-flux-render-") as tmp:
        provider.script_dir = tmp
        provider.execute_wait = stub
        try:
            provider.submit(command, 1, f"parsl.{executor.label}.block-{block_id}")
        except _ScriptWritten:
            pass
        scripts = [p for p in glob.glob(os.path.join(tmp, "*")) if not os.path.basename(p).startswith("cmd_")]
        if len(scripts) != 1:
            raise SiteError(f"provider {label!r} wrote {len(scripts)} files, expected one batch script")
        with open(scripts[0]) as f:
            script = f.read().replace(tmp, real_dir)
    submit = calls[-1].replace(tmp, real_dir) if calls else None
    return Rendered(label, submit, script, warnings)


def describe(module: ModuleType) -> Dict[str, str]:
    """The fields of a site's :class:`Site` as strings (for tables)."""
    site: Site = module.SITE
    return {"name": site.name, "summary": site.summary, "batch": site.batch, "submit": site.submit or "-",
            "launcher": site.launcher or "-", "runtime": site.runtime, "mpi": site.mpi, "pmi": site.pmi,
            "required": ", ".join(site.required) or "-"}
