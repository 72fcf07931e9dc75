"""Run ``flux start`` inside a container image while the launcher stays outside.

A provider's launcher (srun, aprun, mpiexec) starts one process per node; with a
:class:`Container` that process is ``<runtime> exec IMAGE flux start ... manager``,
so the Flux brokers, the manager and every task see the image's Flux, OpenMPI
and Python, not the host's (on Cray systems Flux cannot launch the vendor MPI).

The launch line stays a plain string that a person can read in the batch
script. The part that runs inside the image is exactly the command the
``none`` runtime runs, which the integration tests execute against real Flux.

PMI: the launcher gives each ``flux start`` its rank through PMI variables and,
for the simple PMI wire protocol, an inherited file descriptor (``PMI_FD``).
Apptainer/Singularity and Shifter keep the host environment and file
descriptors, so PMI reaches the brokers unchanged; that is also why options
that clean the environment are refused for them. Docker and Podman do not
pass descriptors; they get ``--network host --ipc host`` and the PMI variables,
and are meant for single-node runs (CI, laptops); podman-hpc's ``--mpi`` does
the pass-through on systems that ship it.

MPI inside the image is the image's own OpenMPI, launched by Flux through
Flux's PMI (see ``containers/Dockerfile``); nothing MPI-specific is added here.

Parsl's launchers copy the launch line into an *unquoted* shell here-document,
so ``$`` and backquotes in ``env``, ``binds`` or ``options`` values are
expanded on the compute node before the line runs (``$HOME`` works; a literal
``$`` needs ``\\$``).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from parsl_flux import imageref

RUNTIMES = ("apptainer", "singularity", "docker", "podman", "podman-hpc", "shifter", "none")
ENGINES = ("docker", "podman", "podman-hpc")
"""Runtimes that run the image's ENTRYPOINT, which starts a new Flux instance
around any command that is not ``flux ...`` (``containers/entrypoint.sh``)."""
GPU_VENDORS = ("nvidia", "amd")

PMI_ENV = ("PMI_FD", "PMI_RANK", "PMI_SIZE", "PMI_SPAWNED", "PMI_JOBID", "PMIX_RANK", "PMIX_NAMESPACE",
           "PMIX_SERVER_URI2", "PMIX_SERVER_URI3", "PMIX_SERVER_URI4", "PMIX_SECURITY_MODE",
           "PALS_RANKID", "PALS_NODEID", "PALS_APINFO", "PALS_APID", "PMI_CONTROL_PORT",
           "SLURM_PROCID", "SLURM_NODEID", "SLURM_STEP_ID", "FLUX_PMI_CLIENT_METHODS")
"""Variables a containerized ``flux start`` needs from the launcher to bootstrap."""

INSIDE_UNSET = ("SLURM_JOB_ID",)
"""Host variables removed before the command runs inside the image. With
``SLURM_JOB_ID`` set, ``flux start`` runs ``flux slurm-expiration-sync``,
which polls ``squeue``: a Slurm client no image of this project has, so it
fails on every block's stderr. The block's end is the provider's walltime."""

CLEAN_ENV_OPTIONS = ("-e", "--cleanenv", "-C", "--containall")
"""Apptainer/Singularity options that drop the host environment, and with it
the PMI variables and the block key that ``flux start`` and the manager need."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ContainerError(ValueError):
    """A :class:`Container` was given a value it cannot use (named in the message)."""


def _parse_bind(bind: str) -> Tuple[str, str, str]:
    """Split ``SRC[:DST[:OPTS]]``; both paths must be absolute.

    Absolute because Docker and Podman read a relative ``SRC`` as the name of a
    volume, and every runtime reads ``DST`` inside the image, where the host's
    working directory means nothing.
    """
    parts = bind.split(":")
    if not parts[0] or len(parts) > 3:
        raise ContainerError(f"bind {bind!r} is not of the form SRC[:DST[:OPTS]]")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 and parts[1] else src
    opts = parts[2] if len(parts) > 2 else ""
    for path in (src, dst):
        if not os.path.isabs(path):
            raise ContainerError(f"bind {bind!r}: {path!r} is not an absolute path")
    return src, dst, opts


@dataclass(frozen=True)
class Container:
    """A container runtime and image to run each block's Flux instance in.

    Parameters
    ----------
    runtime : str
        One of ``apptainer``, ``singularity``, ``docker``, ``podman``,
        ``podman-hpc``, ``shifter`` or ``none`` (run on the host).
    image : str
        A SIF file or sandbox directory, or an image reference (``docker://...``
        for Apptainer, ``repo:tag`` for Docker/Podman, ``docker:repo:tag`` for
        Shifter).
    binds : sequence of str
        ``SRC[:DST[:OPTS]]`` absolute host paths to mount; ``SRC`` must exist.
    env : dict
        Variables set inside the container. Apptainer/Singularity get them as
        ``APPTAINERENV_``/``SINGULARITYENV_`` variables rather than ``--env``,
        which splits values at commas.
    options : sequence of str
        Extra arguments for the runtime, inserted before the image.
    gpus : str, optional
        ``nvidia`` or ``amd``: ``--nv``/``--rocm`` for Apptainer, ``--gpus all``
        or the ROCm devices for Docker/Podman, ``--gpu`` for podman-hpc,
        ``--module=gpu`` for Shifter.
    check_paths : bool
        Check that the image file and bind sources exist, on the machine that
        builds the launch line. Turn off when those paths exist only on the
        compute nodes.
    source : str, optional
        A ``docker://`` or ``oras://`` reference that ``image`` is a local copy
        of (a SIF in the per-user cache for Apptainer/Singularity, the
        engine's own name for Docker/Podman): :meth:`prepare` pulls it once,
        before the first block starts, instead of every node pulling it.
        ``image`` need not exist before then.

    Raises
    ------
    ContainerError
        For an unknown runtime or GPU vendor, a missing image, a malformed or
        relative bind, a bad variable name, an option that would drop the
        environment, or (with ``check_paths``) a missing image file or bind
        source; the message names the value.
    """

    runtime: str = "none"
    image: str = ""
    binds: Sequence[str] = ()
    env: Dict[str, str] = field(default_factory=dict)
    options: Sequence[str] = ()
    gpus: Optional[str] = None
    check_paths: bool = True
    source: Optional[str] = None

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ContainerError(f"unknown container runtime {self.runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if self.runtime != "none" and not self.image:
            raise ContainerError(f"runtime {self.runtime!r} needs an image")
        if imageref.is_reference(self.image):  # a malformed one failed only in the runtime, on every node
            try:
                imageref.parse(self.image)
            except imageref.ImageRefError as exc:
                raise ContainerError(str(exc)) from None
        if self.gpus is not None and self.gpus not in GPU_VENDORS:
            raise ContainerError(f"gpus={self.gpus!r}: choose one of {GPU_VENDORS} or None")
        if isinstance(self.binds, str) or isinstance(self.options, str):
            raise ContainerError("binds and options must be lists of strings, not one string")
        for name, value in self.env.items():
            if not isinstance(name, str) or not isinstance(value, str) or not _ENV_NAME.match(name):
                raise ContainerError(f"env entry {name!r}={value!r} must be NAME=str with NAME of [A-Za-z0-9_]")
        for bind in self.binds:
            _parse_bind(bind)
        if self.runtime in ("apptainer", "singularity"):
            for option in self.options:
                if option in CLEAN_ENV_OPTIONS:
                    raise ContainerError(f"option {option!r} drops the host environment, and with it the PMI "
                                         f"variables and block key that flux start and the manager need; "
                                         f"set variables with env= instead")
        if self.check_paths:
            self.check()

    def check(self) -> None:
        """Raise :class:`ContainerError` for a missing image file or bind source."""
        if self.runtime in ("apptainer", "singularity") and self.image_is_file and not os.path.exists(self.image) \
                and self.source is None:
            raise ContainerError(f"image file {self.image!r} does not exist")
        for bind in self.binds:
            src = _parse_bind(bind)[0]
            if not os.path.exists(src):
                raise ContainerError(f"bind source {src!r} (from {bind!r}) does not exist")

    @property
    def image_is_file(self) -> bool:
        """Whether :attr:`image` names a local SIF file or sandbox (no ``scheme://``)."""
        return "://" not in self.image

    def with_binds(self, *paths: str) -> "Container":
        """A copy that also binds ``paths`` (same path inside), skipping ones already bound.

        For directories known only at launch time (the run directory); they
        are not checked, since they may exist only on the compute nodes. A
        relative path is made absolute here, on the driver, as Parsl's
        ``runinfo`` is (it must be on a filesystem the nodes share).
        """
        bound = {_parse_bind(b)[0] for b in self.binds}
        extra = list(dict.fromkeys(os.path.abspath(p) for p in paths if p))
        extra = [p for p in extra if p not in bound]
        return Container(self.runtime, self.image, [*self.binds, *extra], dict(self.env), list(self.options),
                         self.gpus, check_paths=False, source=self.source)

    def with_existing_binds(self) -> "Container":
        """A copy without the binds whose host path does not exist (yet).

        For checks on the driver before the first run (``parsl-flux doctor``):
        the run directory a site config binds is made by the run, and a
        runtime refuses to start with a bind it cannot find.
        """
        kept = [b for b in self.binds if os.path.exists(_parse_bind(b)[0])]
        return Container(self.runtime, self.image, kept, dict(self.env), list(self.options), self.gpus,
                         check_paths=False, source=self.source)

    def prepare(self) -> None:
        """Pull :attr:`source` into :attr:`image` unless it is there already.

        Called by the executor before it starts blocks (and by ``parsl-flux
        image pull``), so the pull happens once, on the driver, with its
        progress shown, rather than on every node at every block start.

        Raises
        ------
        parsl_flux.imagepull.ImagePullError
            The pull failed.
        """
        if self.source is None:
            return
        from parsl_flux import imagepull

        ref = imageref.parse(self.source)
        if self.runtime in imagepull.SIF_RUNTIMES:
            imagepull.ensure_sif(ref, Path(self.image), self.runtime)
        else:
            imagepull.ensure_engine_image(ref, self.runtime)

    def prefix(self, pass_env: Sequence[str] = ()) -> List[str]:
        """The argv that goes before the inner command (empty for ``none``).

        ``pass_env`` names host variables to forward; only Docker and Podman
        need them listed, the other runtimes keep the host environment.
        """
        rt = self.runtime
        binds = [_parse_bind(b) for b in self.binds]
        if rt == "none":
            return []
        if rt in ("apptainer", "singularity"):
            env_prefix = "APPTAINERENV_" if rt == "apptainer" else "SINGULARITYENV_"
            argv = ["env", *(f"{env_prefix}{k}={v}" for k, v in self.env.items())] if self.env else []
            argv += [rt, "exec"]
            if self.gpus:
                argv.append("--nv" if self.gpus == "nvidia" else "--rocm")
            for src, dst, opts in binds:
                argv += ["--bind", ":".join(x for x in (src, dst, opts) if x)]
            return [*argv, *self.options, self.image]
        if rt == "shifter":
            argv = ["shifter", f"--image={self.image}"]
            if self.gpus:
                argv.append("--module=gpu")
            for src, dst, opts in binds:
                argv.append(f"--volume={src}:{dst}" + (f":{opts}" if opts else ""))
            for k, v in self.env.items():
                argv.append(f"--env={k}={v}")
            return [*argv, *self.options, "--"]
        # docker, podman, podman-hpc. --init: Flux's broker would otherwise be
        # PID 1 and leave the orphans of finished jobs unreaped.
        argv = [rt, "run", "--rm", "--init", "--network", "host", "--ipc", "host"]
        if rt == "podman-hpc":
            argv.append("--mpi")
        if self.gpus == "nvidia":
            argv += ["--gpu"] if rt == "podman-hpc" else ["--gpus", "all"] if rt == "docker" \
                else ["--device", "nvidia.com/gpu=all"]
        elif self.gpus == "amd":
            argv += ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video"]
        for src, dst, opts in binds:
            argv += ["-v", ":".join(x for x in (src, dst, opts) if x)]
        for k, v in self.env.items():
            argv += ["-e", f"{k}={v}"]
        for name in (*pass_env, *PMI_ENV):
            argv += ["-e", name]
        return [*argv, *self.options, self.image]

    def wrap(self, command: str, pass_env: Sequence[str] = ()) -> str:
        """``command`` (a shell-quoted string) to be run inside the image.

        ``pass_env`` names host variables the command needs inside (the block
        key); runtimes that keep the host environment need nothing for them.
        Inside the image ``env`` first removes :data:`INSIDE_UNSET`; for
        :data:`ENGINES` it replaces the image's entrypoint. For ``none`` only ``env`` is added, as ``env K=V`` before the command.
        """
        if self.runtime == "none":
            if not self.env:
                return command
            return "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in self.env.items()) + " " + command
        unset = [arg for name in INSIDE_UNSET for arg in ("-u", name)]
        argv = self.prefix(pass_env)
        if self.runtime in ENGINES:  # else the entrypoint nests the block's broker in an instance of its own
            argv = [*argv[:-1], "--entrypoint", "env", argv[-1]]
        else:
            argv.append("env")
        return shlex.join([*argv, *unset]) + " " + command
