"""The container recipes: the Apptainer definition generated from the Dockerfile,
and what an image holds.

``containers/Dockerfile`` is the one recipe people edit. The Apptainer
definition ``containers/parsl-flux.def`` is spython's Docker->Singularity
conversion of it plus the additions below, each of which fixes something the
plain conversion gets wrong for this image. A test compares the committed
definition with :func:`generate_definition`, so the two cannot drift apart;
``python -m parsl_flux.tools.images regenerate`` rewrites it after a Dockerfile change.

Additions to spython's conversion:

1. A header comment saying the file is generated and how to build it.
2. ``USER`` lines are dropped from ``%post``. spython turns them into
   ``su - USER``, which would stop the build in a login shell; Apptainer
   builds ``%post`` as root and runs the image as the calling user, so
   ``USER`` has no meaning there.
3. ``LABEL k="v"`` becomes ``k v`` in ``%labels`` (spython keeps the Docker
   syntax, which Apptainer reads as a label named ``k="v"``).
4. ``%runscript`` does not ``cd`` to the Dockerfile's ``WORKDIR``: Apptainer
   starts in the caller's directory, which it binds, so that
   ``apptainer run parsl-flux.sif python examples/workflow.py`` finds the
   script. (``%post`` still creates the directory.)
5. ``%post`` begins by deleting what ``containers/Dockerfile.dockerignore``
   keeps out of the Docker build context (``.venv``, ``.git``, ...), since
   ``%files`` copies a directory whole.
6. ``${ARG}`` in a label becomes that ``ARG``'s default: Apptainer's
   ``%labels`` are literal, and has no build arguments (the release labels
   are set by the image build, see :mod:`parsl_flux.tools.release`).

spython is imported only by the functions that convert (it is in the
``container`` and ``test`` extras), so :func:`runtime_versions` works in a
bare install, which is how the image's entrypoint uses it.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import json
import logging
import platform
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from parsl_flux.tools import checkout

logger = logging.getLogger(__name__)

PROG = "python -m parsl_flux.tools.images"
DOCKERFILE = "Dockerfile"
DOCKERIGNORE = "Dockerfile.dockerignore"
DEFINITION = "parsl-flux.def"


def recipe_file(name: str, given: Optional[Path] = None) -> Path:
    """``given``, or the file ``name`` in the source checkout's ``containers/``.

    Raises
    ------
    checkout.SourceCheckoutNeeded
        ``given`` is None and there is no checkout (a wheel install).
    """
    if given is not None:
        return given
    return checkout.source_root(f"{PROG} (containers/{name})") / "containers" / name

HEADER = """\
# GENERATED from containers/Dockerfile by `python -m parsl_flux.tools.images regenerate`
# (spython's Docker->Singularity conversion plus the additions documented in
# src/parsl_flux/tools/images.py). Edit the Dockerfile, then regenerate this file.
# Build from the repository root of a checkout:
#   apptainer build parsl-flux.sif containers/parsl-flux.def
"""

_IGNORE_PATTERN = re.compile(r"[A-Za-z0-9._*/-]+\Z")


def _parse(dockerfile: Path) -> Any:
    """spython's recipe for ``dockerfile`` (the single build stage)."""
    from spython.main.parse.parsers import DockerParser

    recipe = DockerParser(str(dockerfile)).recipe
    if len(recipe) != 1:
        raise ValueError(f"{dockerfile}: expected one build stage, found {len(recipe)}")
    return recipe


def _write(recipe: Any) -> str:
    from spython.main.parse.writers import SingularityWriter

    return SingularityWriter(recipe).convert() + "\n"


def convert(dockerfile: Optional[Path] = None) -> str:
    """spython's plain conversion of ``dockerfile`` (default: the checkout's), without our additions.

    Kept separate so tests can show what each addition changes.
    """
    return _write(_parse(recipe_file(DOCKERFILE, dockerfile)))


def ignore_patterns(dockerignore: Path) -> List[str]:
    """The patterns of a ``.dockerignore`` file, in the subset the definition can mirror.

    Raises
    ------
    ValueError
        For a pattern other than a plain path, a ``*`` glob or ``**/NAME``
        (e.g. a ``!`` exception), naming it: the ``%post`` clean-up could not
        reproduce it.
    """
    patterns = []
    for line in dockerignore.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _IGNORE_PATTERN.match(line) or ".." in line or line.startswith("/"):
            raise ValueError(f"{dockerignore}: pattern {line!r} cannot be mirrored in the Apptainer definition")
        patterns.append(line)
    return patterns


def _cleanup_lines(patterns: Sequence[str], dest: str) -> List[str]:
    """Shell lines that delete ``patterns`` under ``dest`` (a copied build context)."""
    anywhere = [p[3:] for p in patterns if p.startswith("**/")]
    rooted = [f"{dest}/{p}" for p in patterns if not p.startswith("**/")]
    lines = ["# Added by parsl_flux.tools.images: drop what containers/Dockerfile.dockerignore",
             "# keeps out of the Docker build (Apptainer's %files copies the directory whole)."]
    if rooted:
        lines.append("rm -rf " + " ".join(rooted))  # unquoted: the shell expands the * globs
    for name in anywhere:
        lines.append(f"find {shlex.quote(dest)} -name {shlex.quote(name)} -prune -exec rm -rf {{}} +")
    return lines


def _label_pairs(labels: List[List[str]], defaults: Dict[str, str]) -> List[List[str]]:
    """``[['k="v" \\']]`` as spython keeps a LABEL instruction -> ``[['k', 'v']]``,
    with ``${NAME}`` replaced by the default of ``ARG NAME`` (``defaults``)."""
    pairs = []
    for tokens in labels:
        text = " ".join(tokens).strip().rstrip("\\")
        for item in shlex.split(text):
            key, _, value = item.partition("=")
            pairs.append([key, re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), value)])
    return pairs


def _arg_defaults(dockerfile: Path) -> Dict[str, str]:
    """``ARG NAME=VALUE`` lines of ``dockerfile`` as ``{NAME: VALUE}``."""
    return dict(re.findall(r"^ARG\s+(\w+)=(\S*)\s*$", dockerfile.read_text(), re.M))


def generate_definition(dockerfile: Optional[Path] = None, dockerignore: Optional[Path] = None) -> str:
    """The Apptainer definition for ``dockerfile`` (default: the checkout's):
    spython's conversion plus the additions listed in this module's docstring."""
    dockerfile = recipe_file(DOCKERFILE, dockerfile)
    recipe = _parse(dockerfile)
    dockerignore = recipe_file(DOCKERIGNORE, dockerignore)
    stage = next(iter(recipe.values()))
    stage.install = [line for line in stage.install if not re.match(r"USER\s", line)]
    stage.labels = _label_pairs(stage.labels, _arg_defaults(dockerfile))
    stage.workdir = None
    contexts = [dest for src, dest in stage.files if src in (".", "./")]
    if contexts and dockerignore.exists():
        stage.install = _cleanup_lines(ignore_patterns(dockerignore), contexts[0].rstrip("/")) + stage.install
    return HEADER + _write(recipe)


def definition_diff(definition: Optional[Path] = None, dockerfile: Optional[Path] = None,
                    dockerignore: Optional[Path] = None) -> List[str]:
    """Unified diff from the committed ``definition`` to the generated one (empty when in step)."""
    definition = recipe_file(DEFINITION, definition)
    committed = definition.read_text() if definition.exists() else ""
    generated = generate_definition(dockerfile, dockerignore)
    return list(difflib.unified_diff(committed.splitlines(keepends=True), generated.splitlines(keepends=True),
                                     str(definition), "generated"))


def regenerate(definition: Optional[Path] = None, dockerfile: Optional[Path] = None,
               dockerignore: Optional[Path] = None) -> bool:
    """Rewrite ``definition`` from ``dockerfile``; return whether it changed."""
    definition = recipe_file(DEFINITION, definition)
    text = generate_definition(dockerfile, dockerignore)
    if definition.exists() and definition.read_text() == text:
        return False
    definition.write_text(text)
    logger.info("wrote %s", definition)
    return True


def _command_output(argv: Sequence[str]) -> Optional[str]:
    """stdout of ``argv``, or None when it is not installed or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("%s failed: %s", argv, exc)
        return None
    return done.stdout


def _package_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def runtime_versions() -> Dict[str, Optional[str]]:
    """Versions of what this environment (normally the image) holds; None for what is missing.

    Keys: ``flux-core`` (from ``flux version``), ``openmpi`` (``mpirun
    --version``), ``mpi4py``, ``python``, ``parsl``, ``parsl-flux``. These are
    the versions a bug report about a containerized run needs.
    """
    flux = _command_output(["flux", "version"]) or ""
    match = re.search(r"^commands:\s*(\S+)", flux, re.M)
    mpirun = _command_output(["mpirun", "--version"]) or ""
    ompi = re.search(r"Open MPI\)?\s*v?(\d[\w.]*)", mpirun)
    return {
        "flux-core": match.group(1) if match else None,
        "openmpi": ompi.group(1) if ompi else None,
        "mpi4py": _package_version("mpi4py"),
        "python": platform.python_version(),
        "parsl": _package_version("parsl"),
        "parsl-flux": _package_version("parsl-flux"),
    }


def image_info(dockerfile: Optional[Path] = None, definition: Optional[Path] = None,
               dockerignore: Optional[Path] = None, versions: bool = True) -> Dict[str, Any]:
    """What ``parsl-flux image`` reports: the recipe, and the versions installed here.

    Parameters
    ----------
    dockerfile, definition, dockerignore : Path, optional
        The recipe files; default the ones in the source checkout, if any.
    versions : bool
        Also run :func:`runtime_versions` (it runs ``flux`` and ``mpirun``).

    Returns
    -------
    dict
        JSON-serializable. ``recipe`` (None when ``dockerfile`` is absent or
        there is no source checkout, as in a wheel install): ``dockerfile``, ``base_image``, ``user``,
        ``entrypoint``, ``labels``, ``definition`` and
        ``definition_in_sync``. ``versions``: :func:`runtime_versions`, or
        None when not asked for.

    Raises
    ------
    ImportError
        spython is missing while ``dockerfile`` exists (``pip install
        'parsl-flux[container]'``).
    """
    recipe_info = None
    try:
        dockerfile = recipe_file(DOCKERFILE, dockerfile)
        definition = recipe_file(DEFINITION, definition)
    except checkout.SourceCheckoutNeeded:
        dockerfile = None
    if dockerfile is not None and dockerfile.exists():
        stage = next(iter(_parse(dockerfile).values()))
        users = [line.split(None, 1)[1].strip() for line in stage.install if re.match(r"USER\s", line)]
        recipe_info = {
            "dockerfile": str(dockerfile),
            "base_image": stage.fromHeader,
            "user": users[-1] if users else None,
            "entrypoint": stage.entrypoint,
            "labels": dict(_label_pairs(stage.labels, _arg_defaults(dockerfile))),
            "definition": str(definition),
            "definition_in_sync": not definition_diff(definition, dockerfile, dockerignore),
        }
    return {"recipe": recipe_info, "versions": runtime_versions() if versions else None}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m parsl_flux.tools.images {regenerate,check,versions,info}``.

    ``regenerate`` and ``check`` need a source checkout and exit 2 with one
    line saying so without one; ``versions`` and ``info`` work anywhere.
    """
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("regenerate", help=f"rewrite containers/{DEFINITION} from the Dockerfile")
    sub.add_parser("check", help=f"exit 1, showing the diff, when containers/{DEFINITION} is out of step")
    sub.add_parser("versions", help="versions of Flux, OpenMPI, Python, Parsl, parsl-flux here")
    sub.add_parser("info", help="recipe and versions as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "regenerate":
            if not regenerate():
                logger.info("containers/%s is up to date", DEFINITION)
            return 0
        if args.command == "check":
            diff = definition_diff()
            sys.stdout.writelines(diff)
            if diff:
                logger.error("containers/%s is out of step with containers/%s; run: %s regenerate",
                             DEFINITION, DOCKERFILE, PROG)
            return 1 if diff else 0
    except checkout.SourceCheckoutNeeded as exc:
        logger.error("%s", exc)
        return 2
    if args.command == "versions":
        for name, version in runtime_versions().items():
            sys.stdout.write(f"  {name:<11} {version or 'not found'}\n")
        return 0
    json.dump(image_info(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
