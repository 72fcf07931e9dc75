"""Image references a site may be given instead of a file, and where their pulled copy lives.

A site's ``image`` is either a path (a ``.sif`` file or sandbox the compute
nodes can read) or a reference to a registry: ``docker://REGISTRY/REPO:TAG``
(an OCI image, what ``release.yml`` publishes as the image) or
``oras://REGISTRY/REPO:TAG`` (the SIF itself, published as an OCI artifact).
Apptainer could run a reference directly, but every node of every block would
then pull and convert it, into each node's own cache. Instead the driver pulls
it once into a per-user cache (``$PARSL_FLUX_IMAGE_CACHE``, else
``~/.cache/parsl-flux/images``, on the filesystem the nodes share) and blocks
run that file (:mod:`parsl_flux.imagepull`).

Everything here is pure (no I/O): parsing, and the cache file's name.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

SCHEMES = ("docker", "oras")
"""Reference schemes that are pulled into the cache."""

CACHE_ENV = "PARSL_FLUX_IMAGE_CACHE"

_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


class ImageRefError(ValueError):
    """An image reference that cannot be parsed; the message shows the expected form."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed ``docker://`` or ``oras://`` reference.

    Parameters
    ----------
    scheme : str
        ``docker`` (an OCI image, converted to a SIF when pulled) or ``oras``
        (a SIF stored as an OCI artifact, downloaded as is).
    registry : str
        Host and optional port; Docker Hub (``docker.io``) when the reference names none.
    repository : str
        Path in the registry (``library/`` is added for Docker Hub's one-word names).
    tag : str
        The tag; ``latest`` when neither tag nor digest is given.
    digest : str, optional
        ``sha256:...``, which then identifies the image whatever the tag says.
    """

    scheme: str
    registry: str
    repository: str
    tag: str = "latest"
    digest: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.scheme}://{self.registry}/{self.repository}" + (
            f"@{self.digest}" if self.digest else f":{self.tag}")

    @property
    def engine_name(self) -> str:
        """The reference as Docker and Podman write it (no scheme)."""
        return str(self)[len(self.scheme) + 3:]

    @property
    def plain_http(self) -> bool:
        """Whether the registry is on this host (loopback), where registries
        usually speak plain HTTP; Docker treats such registries as insecure by
        default too. Anything else must be HTTPS."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry[1:].split("]")[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def is_reference(image: str) -> bool:
    """Whether ``image`` is a reference to pull (``docker://``, ``oras://``) rather than a path."""
    return image.split("://", 1)[0] in SCHEMES and "://" in image


def parse(image: str) -> ImageRef:
    """Parse a ``docker://`` or ``oras://`` reference.

    The first path component is the registry when it looks like a host (has a
    ``.`` or ``:``, or is ``localhost``), as Docker decides.

    Raises
    ------
    ImageRefError
        Another scheme, or a malformed name, tag or digest.
    """
    scheme, sep, rest = image.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ImageRefError(f"image {image!r} is not a reference: expected docker://REGISTRY/REPO[:TAG] "
                            "or oras://REGISTRY/REPO[:TAG] (or a path to a .sif file)")
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise ImageRefError(f"image {image!r}: digest {digest!r} is not sha256:<64 hex digits>")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "docker.io", rest
    tag = "latest"
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.match(tag):
            raise ImageRefError(f"image {image!r}: tag {tag!r} is not a valid tag")
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if not _NAME.match(path):
        raise ImageRefError(f"image {image!r}: repository {path!r} is not a valid name (lower case, digits, "
                            "'.', '_', '-', separated by '/')")
    return ImageRef(scheme, registry, path, tag, digest)


def cache_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where pulled images are kept: ``$PARSL_FLUX_IMAGE_CACHE``, else ``images/``
    in the project's per-user cache (``$PARSL_FLUX_CACHE``, else
    ``$XDG_CACHE_HOME/parsl-flux``, else ``~/.cache/parsl-flux``).

    Per user and not per run, so that every run of every workflow reuses one
    pull; on HPC systems the home directory is what login and compute nodes share.
    """
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    root = env.get("PARSL_FLUX_CACHE") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "parsl-flux")
    return Path(root) / "images"


def cache_file(ref: ImageRef, directory: Path) -> Path:
    """The SIF that holds ``ref`` once pulled.

    A readable name (repository and tag) plus a short hash of the whole
    reference, so two registries' ``parsl-flux:latest``, or a ``docker://``
    and an ``oras://`` copy of one release, never share a file.
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{ref.repository.rsplit('/', 1)[-1]}_{ref.digest or ref.tag}")
    digest = hashlib.sha256(str(ref).encode()).hexdigest()[:12]
    return directory / f"{readable[:80]}-{digest}.sif"
