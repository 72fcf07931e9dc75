"""What a release states about itself: the tag it is cut from and the image's OCI labels.

A release publishes one version (``parsl_flux.__version__``, which pyproject
reads) as a wheel, an sdist, an image tagged ``VERSION`` and ``latest``, and
the SIF as an OCI artifact (``.github/workflows/release.yml``, rehearsed by
``make release-test``). The image's labels say where it came from and what it
holds, so that a site user who pulled ``latest`` can tell which Flux,
Fluxion, OpenMPI and Parsl a run used without starting it
(``podman image inspect``, ``apptainer inspect``).

Those versions are only known once the image is built (OpenMPI comes from
Debian, Parsl from PyPI), so ``containers/release.sh`` builds it, runs it
once for :func:`parsl_flux.tools.images.runtime_versions`, and builds again
with the build arguments :func:`build_args` gives; every layer but the labels
comes from the first build's cache. Fluxion's version is the release the base
image is pinned to (``FROM fluxrm/flux-sched:<distro>-v<X.Y.Z>``).

The SIF is published as an OCI artifact with the media types Apptainer
writes and reads (``apptainer pull oras://...`` takes it as is):
:func:`push_sif`, through the ORAS Python library (the ``release`` extra).

Used as ``python -m parsl_flux.tools.release {version,check-tag,build-args,push-sif}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import parsl_flux

logger = logging.getLogger(__name__)

PROG = "python -m parsl_flux.tools.release"

LABEL_ARGS = {
    "org.opencontainers.image.version": "PARSL_FLUX_VERSION",
    "org.opencontainers.image.source": "SOURCE_URL",
    "org.opencontainers.image.revision": "REVISION",
    "org.parsl-flux.flux-core.version": "FLUX_CORE_VERSION",
    "org.parsl-flux.fluxion.version": "FLUXION_VERSION",
    "org.parsl-flux.openmpi.version": "OPENMPI_VERSION",
    "org.parsl-flux.parsl.version": "PARSL_VERSION",
}
"""Each release label and the Dockerfile build argument that sets it."""

SIF_LAYER_TYPE = "application/vnd.sylabs.sif.layer.v1.sif"
SIF_CONFIG_TYPE = "application/vnd.sylabs.sif.config.v1+json"

_FROM = re.compile(r"^FROM\s+\S*flux-sched:\S*-v(\d+\.\d+\.\d+)\s*$", re.M)


def tag_problem(tag: str) -> Optional[str]:
    """Why ``tag`` (``vX.Y.Z`` or ``refs/tags/vX.Y.Z``) cannot release this
    source, or None when it names ``parsl_flux.__version__``.

    A tag that disagrees with the package would publish a wheel and an image
    under two different numbers.
    """
    name = tag.removeprefix("refs/tags/")
    if name == f"v{parsl_flux.__version__}":
        return None
    return (f"tag {name!r} does not name this source's version: parsl_flux.__version__ is "
            f"{parsl_flux.__version__!r}, so the tag must be 'v{parsl_flux.__version__}' "
            "(bump __version__ in src/parsl_flux/__init__.py, or tag the commit that has it)")


def fluxion_version(dockerfile_text: str) -> Optional[str]:
    """The Fluxion (flux-sched) release the base image is pinned to, from its ``FROM`` line."""
    match = _FROM.search(dockerfile_text)
    return match.group(1) if match else None


def build_args(versions: Mapping[str, Optional[str]], *, fluxion: Optional[str], source: str,
               revision: str) -> Dict[str, str]:
    """Build argument values for the release labels.

    Parameters
    ----------
    versions : mapping
        :func:`parsl_flux.tools.images.runtime_versions` as measured in the image.
    fluxion : str, optional
        Fluxion's version (:func:`fluxion_version`).
    source, revision : str
        Where the source lives (a repository URL) and its commit.

    Raises
    ------
    ValueError
        A version the image should hold was not found in it: a release must
        not be labelled with a guess.
    """
    values = {"PARSL_FLUX_VERSION": versions.get("parsl-flux"), "SOURCE_URL": source, "REVISION": revision,
              "FLUX_CORE_VERSION": versions.get("flux-core"), "FLUXION_VERSION": fluxion,
              "OPENMPI_VERSION": versions.get("openmpi"), "PARSL_VERSION": versions.get("parsl")}
    missing = sorted(name for name, value in values.items() if not value)
    if missing:
        raise ValueError(f"no value for {', '.join(missing)} (the image's versions: {dict(versions)})")
    if values["PARSL_FLUX_VERSION"] != parsl_flux.__version__:
        raise ValueError(f"the image holds parsl-flux {values['PARSL_FLUX_VERSION']}, this source is "
                         f"{parsl_flux.__version__}")
    return {name: str(value) for name, value in values.items()}


def push_sif(sif: Path, reference: str, annotations: Optional[Mapping[str, str]] = None) -> None:
    """Push ``sif`` to ``reference`` (``oras://REGISTRY/REPO:TAG``) as Apptainer's ORAS artifact.

    Plain HTTP only for a registry on this host (as :mod:`parsl_flux.imagepull`
    pulls); credentials come from the Docker config file ORAS reads.
    """
    import tempfile

    import oras.provider

    from parsl_flux import imageref

    ref = imageref.parse(reference)
    if ref.scheme != "oras":
        raise ValueError(f"{reference!r}: push the SIF to an oras:// reference")
    registry = oras.provider.Registry(hostname=ref.registry, insecure=ref.plain_http)
    with tempfile.TemporaryDirectory(prefix="parsl-flux-sif-config-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text("{}")
        registry.push(target=str(ref)[len("oras://"):], files=[f"{sif}:{SIF_LAYER_TYPE}"],
                      manifest_config=f"{config}:{SIF_CONFIG_TYPE}", manifest_annotations=dict(annotations or {}),
                      disable_path_validation=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``check-tag TAG``: exit 1 unless TAG names this version. ``build-args
    VERSIONS.json --dockerfile F --source URL --revision SHA``: print
    ``--build-arg NAME=VALUE`` and ``--label KEY=VALUE`` lines for the release labels."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-tag", help="exit 1 unless TAG is v<parsl_flux.__version__>")
    p.add_argument("tag")
    sub.add_parser("version", help="print parsl_flux.__version__")
    p = sub.add_parser("build-args", help="--build-arg lines for the image's release labels")
    p.add_argument("versions", type=Path, help="JSON of `python -m parsl_flux.tools.images info` run in the image")
    p.add_argument("--dockerfile", type=Path, required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--revision", required=True)
    p = sub.add_parser("push-sif", help="push a SIF as an OCI artifact (what `apptainer pull oras://` reads)")
    p.add_argument("sif", type=Path)
    p.add_argument("reference", help="oras://REGISTRY/REPO:TAG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "version":
        sys.stdout.write(parsl_flux.__version__ + "\n")
        return 0
    if args.command == "check-tag":
        problem = tag_problem(args.tag)
        if problem:
            logger.error("%s", problem)
            return 1
        return 0
    if args.command == "push-sif":
        push_sif(args.sif, args.reference, {"org.opencontainers.image.version": parsl_flux.__version__})
        return 0
    versions = json.loads(args.versions.read_text())["versions"]
    try:
        values = build_args(versions, fluxion=fluxion_version(args.dockerfile.read_text()), source=args.source,
                            revision=args.revision)
    except ValueError as exc:
        logger.error("%s", exc)
        return 1
    # The labels also as --label: podman 4.3's layer cache ignores build-argument
    # values on ARG/LABEL steps, so the Dockerfile's LABEL alone kept a cached
    # image's "unknown" labels; a --label is a step keyed on its value.
    arg_to_label = {arg: label for label, arg in LABEL_ARGS.items()}
    for name, value in values.items():
        sys.stdout.write(f"--build-arg {name}={value}\n")
        if name in arg_to_label:
            sys.stdout.write(f"--label {arg_to_label[name]}={value}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
