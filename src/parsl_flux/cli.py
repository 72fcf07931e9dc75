"""``parsl-flux``: list and show site configs, check a machine, run a workflow.

Subcommands::

    parsl-flux sites                         list the site configs
    parsl-flux sites show NAME [--nodes N]   print the exact batch script
    parsl-flux sites copy NAME [DEST]        write NAME's config to edit (default ./NAME.py)
    parsl-flux doctor [--site NAME]          what is present, what is missing
    parsl-flux run --site NAME workflow.py   parsl.load the site's config, run the script
    parsl-flux image pull --site NAME        pull the site's image reference into the cache ahead of time
    parsl-flux image ...                     container recipe tools (parsl_flux.tools.images)
    parsl-flux bench ...                     benchmarks (parsl_flux.tools.bench)

Each subcommand has ``--help``; ``parsl-flux --version`` prints the version.
Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import shlex
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from parsl_flux import fluxpath, sites
from parsl_flux.driver import preflight
from parsl_flux.wire import versions

EXIT_FAILED = 1

Check = Tuple[bool, str, str]
"""(passed, what, detail) of one ``doctor`` line."""


class CliError(Exception):
    """An error shown as ``parsl-flux: error: MESSAGE`` with exit status 1."""


# ------------------------------------------------------------------ options
def _add_site_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("site settings (override the PARSL_FLUX_* variables)")
    group.add_argument("--nodes", type=int, help="nodes per block")
    group.add_argument("--walltime", help="HH:MM:SS per block")
    group.add_argument("--account", help="project/account to charge")
    group.add_argument("--queue", help="queue, partition or QoS")
    group.add_argument("--image", help="container image (path or reference)")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other make_config keyword (repeatable)")


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    chosen = {k: getattr(args, k) for k in ("nodes", "walltime", "account", "queue", "image")
              if getattr(args, k) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise CliError(f"--set {item!r}: expected KEY=VALUE with KEY a make_config keyword")
        chosen[key] = value
    return chosen


# ------------------------------------------------------------------ sites
def cmd_sites(args: argparse.Namespace) -> int:
    if args.action != "copy" and args.dest is not None:
        raise CliError(f"unexpected argument {args.dest!r}: only `sites copy NAME DEST` takes a destination")
    if args.action is not None and not args.name:
        raise CliError(f"sites {args.action} needs a site NAME; `parsl-flux sites` lists them")
    if args.action == "show":
        rendered = sites.render(sites.make_config(args.name, **_overrides(args)))
        for warning in rendered.warnings:
            print(f"# warning: {warning}", file=sys.stderr)
        if rendered.submit_command:
            print(f"# submit with: {rendered.submit_command}", file=sys.stderr)
        sys.stdout.write(rendered.script)
        return 0
    if args.action == "copy":
        path = sites.copy_site(args.name, args.dest or ".")
        print(f"wrote {path}; use it with `parsl-flux run --site {path} WORKFLOW`, or put it in a directory "
              f"listed in ${sites.SITE_DIR_ENV} to replace the shipped site of that name")
        return 0
    rows = [sites.describe(sites.load(name)) for name in sites.names()]
    if not rows:
        raise CliError(f"no site configs found in {', '.join(str(d) for d in sites.site_dirs())}; "
                       "a .py site config can be given by path")
    cols = ("name", "batch", "launcher", "runtime", "summary")
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in cols[:-1]}
    print("  ".join(c.upper().ljust(widths.get(c, 0)) for c in cols).rstrip())
    for row in rows:
        print("  ".join(row[c].ljust(widths.get(c, 0)) for c in cols).rstrip())
    return 0


# ------------------------------------------------------------------ doctor
def _run_first_line(command: str, timeout: float = 60) -> Tuple[bool, str]:
    """Run a shell command; (exit 0?, first line of its output or the error)."""
    try:
        proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"no answer in {timeout:.0f}s: {command}"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    first = lines[0] if lines else ""
    return proc.returncode == 0, first if proc.returncode == 0 else f"exit {proc.returncode}: {first or command}"


def _which(what: str, command: str, hint: str = "") -> Check:
    path = shutil.which(command)
    return (path is not None, what, path or f"`{command}` not on PATH" + (f" ({hint})" if hint else ""))


def _machine_checks() -> List[Check]:
    """What this machine has, site or not (informational apart from Python deps)."""
    checks: List[Check] = []
    for module in ("parsl", "zmq", "cloudpickle"):
        try:
            mod = importlib.import_module(module)
            checks.append((True, f"python: {module}", getattr(mod, "__version__", "importable")))
        except ImportError as exc:
            checks.append((False, f"python: {module}", str(exc)))
    missing = preflight.missing_modules(sys.executable)
    checks.append((not missing, "python: flux bindings",
                   "cffi, yaml, ply, zmq importable" if not missing
                   else f"cannot import {', '.join(missing)}: {preflight.FIX} (the manager needs them)"))
    try:
        flux = fluxpath.require_flux()
        checks.append((True, "flux", f"{flux}: flux-core {fluxpath.flux_version(flux)}"))
    except fluxpath.FluxNotFound as exc:
        checks.append((False, "flux", f"{exc} (only the compute side needs it)"))
    checks.append(_which("mpi: mpiexec", "mpiexec"))
    for runtime in ("apptainer", "singularity", "docker", "podman", "podman-hpc", "shifter"):
        checks.append(_which(f"runtime: {runtime}", runtime))
    for tool in ("sbatch", "qsub"):
        checks.append(_which(f"batch: {tool}", tool))
    return checks


def _site_checks(name: str, overrides: Dict[str, Any]) -> List[Check]:
    """What site ``name`` needs here: its config, submit tool, launcher,
    container runtime and image, and Flux and MPI where the brokers run."""
    module = sites.load(name)
    site: sites.Site = module.SITE
    checks: List[Check] = []
    try:
        executor = sites.flux_executor(sites.build(module, **overrides))
        checks.append((True, "config", f"site {name!r} builds"))
    except sites.SiteError as exc:
        checks.append((False, "config", str(exc)))
        executor = None
    if site.submit:
        checks.append(_which(f"submit: {site.submit}", site.submit))
    if site.launcher:
        checks.append(_which(f"launcher: {site.launcher}", site.launcher,
                             "it runs in the batch job; fine if this host is only a login node without it"))
    if executor is None:
        return checks
    host = executor.address or executor.default_address()
    warning = sites.address_warning(executor, host)
    checks.append((warning is None, "driver address", warning or f"managers dial {host}"))
    box = executor.container
    init = getattr(executor.provider, "worker_init", "").strip()
    if box is not None:
        hint = f"the job runs `{init}` first; run it here too to check" if init else ""
        found = _which(f"runtime: {box.runtime}", box.runtime, hint)
        checks.append(found)
        source = getattr(box, "source", None)
        pulled = source is None or box.runtime not in ("apptainer", "singularity") or os.path.isfile(box.image)
        checks.append((pulled, "image", box.image if pulled else
                       f"{source} is not pulled yet into {box.image}: `parsl-flux image pull --site {name}` "
                       "(or the first run) pulls it"))
        if not found[0] or not pulled:
            return checks
    inside = "in the image" if box is not None else "on the host"
    box = box.with_existing_binds() if box is not None else None  # the run directory is made by the first run
    python = executor.python or ("python3" if box is not None else sys.executable)
    for what, argv in (("flux", [executor.flux_path or "flux", "version"]), ("mpi", ["mpiexec", "--version"]),
                       ("parsl-flux", [python, "-c", VERSION_PROBE])):
        command = shlex.join(argv)
        ok, line = _run_first_line(box.wrap(command) if box is not None else command)
        if what == "parsl-flux" and ok:
            ok, line = compatible_versions(line)
        checks.append((ok, f"{what} ({inside})", line))
    return checks


VERSION_PROBE = ("import sys, parsl_flux; "
                 "print('parsl-flux', parsl_flux.__version__, 'python', '%d.%d.%d' % sys.version_info[:3])")
"""Prints the compute side's versions; written for any parsl-flux version an image may hold."""


def compatible_versions(probe_line: str) -> Check:
    """Whether the compute side whose ``VERSION_PROBE`` printed ``probe_line``
    can run this driver's tasks (:func:`parsl_flux.wire.versions.mismatch`:
    the same Python minor version and parsl-flux version), as the driver
    checks each block when it registers.
    """
    words = probe_line.split()
    if len(words) != 4 or words[0] != versions.PARSL_FLUX or words[2] != versions.PYTHON:
        return False, (f"{probe_line or 'no version'}: not parsl-flux's version line; this driver runs "
                       f"{versions.describe(versions.this_side())}")
    block = {versions.PARSL_FLUX: words[1], versions.PYTHON: words[3]}
    problem = versions.mismatch(versions.this_side(), block)
    return (True, versions.describe(block)) if problem is None else (False, problem)


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.site:
        checks = _site_checks(args.site, _overrides(args))
    else:
        checks = _machine_checks()
    for ok, what, detail in checks:
        print(f"  {'ok' if ok else 'MISSING':<8} {what:<26} {detail}")
    missing = [what for ok, what, _ in checks if not ok]
    if args.site:
        print(f"site {args.site}: " + ("everything it needs is here" if not missing
                                       else f"missing: {', '.join(missing)}"))
        return EXIT_FAILED if missing else 0
    required_missing = [w for w in missing if w.startswith("python:")]
    return EXIT_FAILED if required_missing else 0


# ------------------------------------------------------------------ run
def cmd_run(args: argparse.Namespace) -> int:
    import parsl

    if not os.path.isfile(args.workflow):
        raise CliError(f"workflow script {args.workflow!r} does not exist")
    config = sites.make_config(args.site, **_overrides(args))
    executor = sites.flux_executor(config)
    warning = sites.address_warning(executor, executor.address or executor.default_address())
    if warning:
        print(f"parsl-flux: warning: {warning}", file=sys.stderr)
    parsl.load(config)
    saved_argv = sys.argv
    sys.argv = [args.workflow, *args.workflow_args]
    try:
        runpy.run_path(args.workflow, run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
    finally:
        sys.argv = saved_argv
        parsl.dfk().cleanup()
    return 0


# ------------------------------------------------------------------ delegated
def cmd_image(args: argparse.Namespace) -> int:
    if args.rest[:1] == ["pull"]:
        return cmd_image_pull(args.rest[1:])
    from parsl_flux.tools import images  # another engineer's module; loaded only when asked for

    return int(images.main(args.rest) or 0)


def cmd_image_pull(argv: List[str]) -> int:
    """``parsl-flux image pull (--site NAME [site options] | REFERENCE)``: pull ahead of time
    what a site's blocks would otherwise pull at start, and print where it is."""
    import logging

    from parsl_flux import imagepull, imageref

    parser = argparse.ArgumentParser(prog="parsl-flux image pull",
                                     description="pull a site's image reference (docker://, oras://) into the "
                                                 "per-user cache its blocks run from; a path is left as it is")
    parser.add_argument("reference", nargs="?", help="a reference to pull into the cache as a SIF (without --site)")
    parser.add_argument("--site", help="pull what this site's config names (its --image or PARSL_FLUX_IMAGE)")
    _add_site_options(parser)
    args = parser.parse_args(argv)
    if bool(args.site) == bool(args.reference):
        raise CliError("image pull: give either --site NAME or a docker:// or oras:// REFERENCE")
    logging.basicConfig(level=logging.INFO, format="parsl-flux: %(message)s")
    try:
        if args.reference:
            if args.set or any(getattr(args, k) is not None for k in ("nodes", "walltime", "account", "queue",
                                                                       "image")):
                raise CliError("image pull REFERENCE takes no site options; use --site NAME for those")
            ref = imageref.parse(args.reference)
            print(imagepull.ensure_sif(ref, imageref.cache_file(ref, imageref.cache_dir())))
            return 0
        box = sites.flux_executor(sites.make_config(args.site, **_overrides(args))).container
        if box is None:
            raise CliError(f"site {args.site!r} runs no container image (give --image or set PARSL_FLUX_IMAGE)")
        if getattr(box, "source", None) is None:
            print(f"{box.image} (a path or {box.runtime}'s own name: nothing to pull)")
            return 0
        box.prepare()
    except (imageref.ImageRefError, imagepull.ImagePullError) as exc:
        raise CliError(str(exc)) from exc
    print(box.image)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from parsl_flux.tools import bench  # heavy (plotting); loaded only when asked for

    return int(bench.main(args.rest) or 0)


# ------------------------------------------------------------------ main
DELEGATED = ("image", "bench")
"""Subcommands whose arguments go, unparsed, to another module's own parser."""


def build_parser() -> argparse.ArgumentParser:
    from parsl_flux import __version__

    parser = argparse.ArgumentParser(prog="parsl-flux", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"parsl-flux {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sites", help="list site configs, show one's batch script, or copy one to edit")
    p.add_argument("action", nargs="?", choices=["show", "copy"],
                   help="show: print NAME's batch script; copy: write NAME's config to DEST (default: ./NAME.py)")
    p.add_argument("name", nargs="?", help="site name (see `parsl-flux sites`) or a .py file")
    p.add_argument("dest", nargs="?", help="for copy: a new file, or a directory to write NAME.py in")
    _add_site_options(p)
    p.set_defaults(func=cmd_sites)

    p = sub.add_parser("doctor", help="check what this machine (or a site) has and lacks")
    p.add_argument("--site", help="check what this site needs")
    _add_site_options(p)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("run", help="load a site's config and run a workflow script")
    p.add_argument("--site", required=True, help="site name or a .py site config")
    _add_site_options(p)
    p.add_argument("workflow", help="Python script using Parsl apps (it must not call parsl.load)")
    p.add_argument("workflow_args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=cmd_run)

    for name, func, text in (("image", cmd_image, "container recipe tools (see `parsl-flux image --help`)"),
                             ("bench", cmd_bench, "benchmarks (see `parsl-flux bench --help`)")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``parsl-flux`` console script; returns the exit status."""
    parser = build_parser()
    # image and bench parse their own options (--help included), which argparse's
    # REMAINDER does not collect when they come first
    args, extra = parser.parse_known_args(argv)
    if args.command in DELEGATED:
        args.rest = [*extra, *args.rest]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (CliError, sites.SiteError) as exc:
        print(f"parsl-flux: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ImportError as exc:
        print(f"parsl-flux: error: `{args.command}` is not available in this install: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
