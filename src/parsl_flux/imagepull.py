"""Pull an image reference once, before any block needs it, and reuse it after.

:mod:`parsl_flux.imageref` says where a reference's copy lives; this module
puts it there. For Apptainer/Singularity the copy is a SIF file in the
per-user cache: ``apptainer pull`` (a ``docker://`` image is converted, an
``oras://`` SIF downloaded) into a partial file next to it, renamed into place
only when complete, under a lock, so two drivers starting at once pull once
and a pull killed half-way never leaves a file that looks usable. For Docker
and Podman the copy is the engine's own image store (``pull`` when
``image inspect`` does not find it).

The runtime's own progress output goes to this process's stderr as it comes
(a multi-gigabyte pull should show it is moving); the start, the reuse and
the time taken are logged.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import List

from parsl_flux.imageref import ImageRef

logger = logging.getLogger(__name__)

SIF_RUNTIMES = ("apptainer", "singularity")
ENGINE_RUNTIMES = ("docker", "podman", "podman-hpc")


class ImagePullError(RuntimeError):
    """A pull that failed; the message names the command (its output is on stderr above)."""


def pull_command(runtime: str, ref: ImageRef, dest: Path) -> List[str]:
    """The argv that pulls ``ref`` into ``dest`` with an Apptainer-like ``runtime``.

    ``--no-https`` for a registry on this host (:attr:`ImageRef.plain_http`),
    the only place a plain-HTTP registry is accepted without being asked.
    """
    argv = [runtime, "pull"]
    if ref.plain_http:
        argv.append("--no-https")
    return [*argv, str(dest), str(ref)]


def engine_pull_command(runtime: str, ref: ImageRef) -> List[str]:
    """The argv that pulls ``ref`` into Docker's or Podman's image store."""
    argv = [runtime, "pull"]
    if ref.plain_http and runtime != "docker":  # docker accepts loopback registries over HTTP by itself
        argv.append("--tls-verify=false")
    return [*argv, ref.engine_name]


def ensure_sif(ref: ImageRef, dest: Path, runtime: str = "apptainer") -> Path:
    """``dest``, pulled from ``ref`` with ``runtime`` unless it is there already.

    Raises
    ------
    ImagePullError
        The runtime is missing or its pull failed.
    """
    if dest.is_file():
        logger.info("image %s: reusing %s", ref, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another driver may be pulling the same image: wait for it
        if dest.is_file():
            logger.info("image %s: reusing %s (pulled by another process meanwhile)", ref, dest)
            return dest
        partial = dest.parent / f".{dest.name}.{os.getpid()}.partial"
        argv = pull_command(runtime, ref, partial)
        logger.info("image %s: pulling into %s (once; later runs reuse it): %s", ref, dest, " ".join(argv))
        started = time.monotonic()
        try:
            _run(argv)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
    logger.info("image %s: pulled in %.0f s, %.0f MB", ref, time.monotonic() - started, dest.stat().st_size / 1e6)
    return dest


def ensure_engine_image(ref: ImageRef, runtime: str) -> str:
    """The engine's name for ``ref``, pulled into its store unless it is there already.

    Raises
    ------
    ImagePullError
        The engine is missing or its pull failed.
    """
    name = ref.engine_name
    try:
        present = subprocess.run([runtime, "image", "inspect", name], capture_output=True).returncode == 0
    except OSError as exc:
        raise ImagePullError(f"cannot run {runtime}: {exc}") from exc
    if present:
        logger.info("image %s: reusing %s's copy", ref, runtime)
        return name
    argv = engine_pull_command(runtime, ref)
    logger.info("image %s: pulling with %s", ref, " ".join(argv))
    started = time.monotonic()
    _run(argv)
    logger.info("image %s: pulled in %.0f s", ref, time.monotonic() - started)
    return name


def _run(argv: List[str]) -> None:
    """Run a pull with its output going straight to ours (the progress shows)."""
    try:
        done = subprocess.run(argv)
    except OSError as exc:
        raise ImagePullError(f"cannot run {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise ImagePullError(f"`{' '.join(argv)}` exited {done.returncode} (its output is above)")
