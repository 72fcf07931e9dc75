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
descriptors, so PMI reaches the brokers unchanged. Docker and Podman do not
pass descriptors; they get ``--network host --ipc host`` and the PMI variables,
and are meant for single-node runs (CI, laptops); podman-hpc's ``--mpi`` does
the pass-through on systems that ship it.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

RUNTIMES = ("apptainer", "singularity", "docker", "podman", "podman-hpc", "shifter", "none")
GPU_VENDORS = ("nvidia", "amd")

PMI_ENV = ("PMI_FD", "PMI_RANK", "PMI_SIZE", "PMI_SPAWNED", "PMI_JOBID", "PMIX_RANK", "PMIX_NAMESPACE",
           "PMIX_SERVER_URI2", "PMIX_SERVER_URI3", "PMIX_SERVER_URI4", "PMIX_SECURITY_MODE",
           "PALS_RANKID", "PALS_NODEID", "PALS_APINFO", "PALS_APID", "PMI_CONTROL_PORT",
           "SLURM_PROCID", "SLURM_NODEID", "SLURM_JOB_ID", "SLURM_STEP_ID", "FLUX_PMI_CLIENT_METHODS")
"""Variables a containerized ``flux start`` needs from the launcher to bootstrap."""


class ContainerError(ValueError):
    """A :class:`Container` was given a value it cannot use (named in the message)."""


def _parse_bind(bind: str) -> Tuple[str, str, str]:
    parts = bind.split(":")
    if not parts[0] or len(parts) > 3:
        raise ContainerError(f"bind {bind!r} is not of the form SRC[:DST[:OPTS]]")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 and parts[1] else src
    opts = parts[2] if len(parts) > 2 else ""
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
        A SIF path or an image reference (``docker://...`` for Apptainer,
        ``repo:tag`` for Docker/Podman, ``docker:repo:tag`` for Shifter).
    binds : sequence of str
        ``SRC[:DST[:OPTS]]`` host paths to mount; ``SRC`` must exist.
    env : dict
        Variables set inside the container.
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
    """

    runtime: str = "none"
    image: str = ""
    binds: Sequence[str] = ()
    env: Dict[str, str] = field(default_factory=dict)
    options: Sequence[str] = ()
    gpus: Optional[str] = None
    check_paths: bool = True

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ContainerError(f"unknown container runtime {self.runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if self.runtime != "none" and not self.image:
            raise ContainerError(f"runtime {self.runtime!r} needs an image")
        if self.gpus is not None and self.gpus not in GPU_VENDORS:
            raise ContainerError(f"gpus={self.gpus!r}: choose one of {GPU_VENDORS} or None")
        if isinstance(self.binds, str) or isinstance(self.options, str):
            raise ContainerError("binds and options must be lists of strings, not one string")
        for name, value in self.env.items():
            if not isinstance(name, str) or not isinstance(value, str) or not name.isidentifier():
                raise ContainerError(f"env entry {name!r}={value!r} must be NAME=str with a valid NAME")
        for bind in self.binds:
            _parse_bind(bind)
        if self.check_paths:
            self.check()

    def check(self) -> None:
        """Raise :class:`ContainerError` for a missing image file or bind source."""
        if self.runtime in ("apptainer", "singularity") and self.image_is_file and not os.path.isfile(self.image):
            raise ContainerError(f"image file {self.image!r} does not exist")
        for bind in self.binds:
            src = _parse_bind(bind)[0]
            if not os.path.exists(src):
                raise ContainerError(f"bind source {src!r} (from {bind!r}) does not exist")

    @property
    def image_is_file(self) -> bool:
        return "://" not in self.image

    def with_binds(self, *paths: str) -> "Container":
        """A copy that also binds ``paths`` (same path inside), skipping ones already bound."""
        bound = {_parse_bind(b)[0] for b in self.binds}
        extra = [p for p in paths if p and p not in bound]
        return Container(self.runtime, self.image, [*self.binds, *extra], dict(self.env), list(self.options),
                         self.gpus, check_paths=False)

    def prefix(self, pass_env: Sequence[str] = ()) -> List[str]:
        """The argv that goes before the inner command (empty for ``none``)."""
        rt = self.runtime
        binds = [_parse_bind(b) for b in self.binds]
        if rt == "none":
            return []
        if rt in ("apptainer", "singularity"):
            argv = [rt, "exec"]
            if self.gpus:
                argv.append("--nv" if self.gpus == "nvidia" else "--rocm")
            for src, dst, opts in binds:
                argv += ["--bind", ":".join(x for x in (src, dst, opts) if x)]
            for k, v in self.env.items():
                argv += ["--env", f"{k}={v}"]
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
        # docker, podman, podman-hpc
        argv = [rt, "run", "--rm", "--network", "host", "--ipc", "host"]
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
        For ``none`` only ``env`` is added, as ``env K=V`` before the command.
        """
        if self.runtime == "none":
            if not self.env:
                return command
            return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items()) + " " + command
        return shlex.join(self.prefix(pass_env)) + " " + command
