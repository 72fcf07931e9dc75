"""Launch lines with a :class:`Container`, as a provider's launcher runs them.

Every line is taken apart with ``shlex`` (after the launcher's here-document is
expanded by a real ``bash``), never compared with a golden string: the launcher
comes first, then the container runtime, then ``flux start``, then the manager;
and the part after the image is exactly what the ``none`` runtime runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import parsl
import pytest
from parsl import python_app
from parsl.launchers import AprunLauncher, MpiExecLauncher, SimpleLauncher, SrunLauncher
from parsl.providers import LocalProvider, SlurmProvider

from parsl_flux import FluxExecutor, sites
from parsl_flux.container import ENGINES, PMI_ENV, RUNTIMES, Container, ContainerError

MANAGER = "flux start flux env python3 -m parsl_flux.allocation.manager --url tcp://host:1234 --block-id 0 --workdir /w"
LAUNCHERS = {
    "srun": (SrunLauncher(), ["srun", "--ntasks", "2", "-l"]),
    "aprun": (AprunLauncher(), ["aprun", "-n", "2", "-N", "1"]),
    "mpiexec": (MpiExecLauncher(), ["mpiexec", "--bind-to", "none", "-n", "$WORKERCOUNT", "--hostfile",
                                    "$HOSTFILE"]),
    "none": (SimpleLauncher(), []),
}
SHELLS = ("bash", "/bin/bash", "/usr/bin/sh")


def split_launch(script: str) -> Tuple[List[str], Dict[str, str], List[str]]:
    """A launcher's script -> (launcher argv, leading VAR=value assignments, command argv).

    Parsl's launchers write the command into ``cmd_*.sh`` through an unquoted
    here-document and run that file under the launcher; the body is expanded
    here by bash exactly as on the compute node, then joined to the launcher
    line. A script without a here-document is the command itself.
    """
    heredoc = re.search(r"^cat << (\w+) > \S+\n(.*?)\n\1$", script, re.M | re.S)
    if heredoc is None:
        launcher, body = [], script
    else:
        tag, raw = heredoc.groups()
        body = subprocess.run(["bash", "-c", f"cat << {tag}\n{raw}\n{tag}"], check=True, capture_output=True,
                              text=True, env={}).stdout
        line = next(ln for ln in script.splitlines() if re.match(r"\s*(srun|aprun|mpiexec)\s", ln))
        words = shlex.split(line)
        launcher = words[:next(i for i, w in enumerate(words) if w in SHELLS)]
    argv = shlex.split(body)
    assignments = {}
    while argv and re.match(r"[A-Za-z_]\w*=", argv[0]):
        name, _, value = argv.pop(0).partition("=")
        assignments[name] = value
    return launcher, assignments, argv


@pytest.fixture
def paths(tmp_path: Path) -> Dict[str, str]:
    sif = tmp_path / "parsl-flux.sif"
    sif.write_bytes(b"")
    data = tmp_path / "data"
    data.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return {"sif": str(sif), "data": str(data), "scratch": str(scratch)}


def image_for(runtime: str, paths: Dict[str, str]) -> str:
    return {"apptainer": paths["sif"], "singularity": paths["sif"], "shifter": "docker:parsl-flux:dev",
            "none": ""}.get(runtime, "parsl-flux:dev")


def expected_prefix(runtime: str, image: str, paths: Dict[str, str], full: bool) -> List[str]:
    """The runtime's argv, written out by hand (not via Container.prefix)."""
    data, scratch = paths["data"], paths["scratch"]
    if runtime == "none":
        return ["env", "OMP_NUM_THREADS=1", "LDFLAGS=-L/x -Wl,-rpath,/x"] if full else []
    if runtime in ("apptainer", "singularity"):
        tag = runtime.upper()
        if not full:
            return [runtime, "exec", image]
        return ["env", f"{tag}ENV_OMP_NUM_THREADS=1", f"{tag}ENV_LDFLAGS=-L/x -Wl,-rpath,/x", runtime, "exec",
                "--nv", "--bind", f"{data}:{data}", "--bind", f"{scratch}:/scratch:ro", "--writable-tmpfs", image]
    if runtime == "shifter":
        if not full:
            return ["shifter", f"--image={image}", "--"]
        return ["shifter", f"--image={image}", "--module=gpu", f"--volume={data}:{data}",
                f"--volume={scratch}:/scratch:ro", "--env=OMP_NUM_THREADS=1", "--env=LDFLAGS=-L/x -Wl,-rpath,/x",
                "--writable-tmpfs", "--"]
    argv = [runtime, "run", "--rm", "--init", "--network", "host", "--ipc", "host"]
    if runtime == "podman-hpc":
        argv.append("--mpi")
    if full:
        argv += {"docker": ["--gpus", "all"], "podman": ["--device", "nvidia.com/gpu=all"],
                 "podman-hpc": ["--gpu"]}[runtime]
        argv += ["-v", f"{data}:{data}", "-v", f"{scratch}:/scratch:ro", "-e", "OMP_NUM_THREADS=1",
                 "-e", "LDFLAGS=-L/x -Wl,-rpath,/x"]
    for name in ("PARSL_FLUX_KEY", *PMI_ENV):
        argv += ["-e", name]
    # `env` instead of the image's entrypoint, which would start a Flux instance around the command
    return [*argv, *(["--writable-tmpfs"] if full else []), "--entrypoint", "env", image]


@pytest.mark.parametrize("launcher_name", sorted(LAUNCHERS))
@pytest.mark.parametrize("full", [False, True], ids=["plain", "binds-env-gpu"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_launch_line_order(runtime: str, full: bool, launcher_name: str, paths: Dict[str, str]) -> None:
    image = image_for(runtime, paths)
    kwargs = {}
    if full:
        kwargs = {"binds": [paths["data"], f"{paths['scratch']}:/scratch:ro"],
                  "env": {"OMP_NUM_THREADS": "1", "LDFLAGS": "-L/x -Wl,-rpath,/x"}}
        if runtime != "none":
            kwargs.update(gpus="nvidia", options=["--writable-tmpfs"])
    container = Container(runtime, image, **kwargs)
    command = "PARSL_FLUX_KEY=ab12 " + container.wrap(MANAGER, pass_env=["PARSL_FLUX_KEY"])
    launcher, expected_launcher = LAUNCHERS[launcher_name]

    got_launcher, assignments, argv = split_launch(launcher(command, 1, 2))

    assert got_launcher == expected_launcher
    assert assignments == {"PARSL_FLUX_KEY": "ab12"}
    prefix = expected_prefix(runtime, image, paths, full)
    assert argv[:len(prefix)] == prefix
    inside = argv[len(prefix):]
    if runtime != "none":  # the host's Slurm job id stays outside: the image has no squeue to poll
        unset = ["-u", "SLURM_JOB_ID"] if runtime in ENGINES else ["env", "-u", "SLURM_JOB_ID"]
        assert inside[:len(unset)] == unset
        inside = inside[len(unset):]
    assert inside[:2] == ["flux", "start"]
    assert inside[2:] == shlex.split(MANAGER)[2:]
    assert inside == shlex.split(Container("none").wrap(MANAGER))


@pytest.mark.parametrize("runtime", [r for r in RUNTIMES if r != "none"])
def test_runtime_prefix_matches_wrap(runtime: str, paths: Dict[str, str]) -> None:
    container = Container(runtime, image_for(runtime, paths), binds=[paths["data"]], env={"A": "1"})
    prefix = container.prefix(["K"])
    if runtime in ENGINES:
        prefix[-1:-1] = ["--entrypoint", "env"]
    else:
        prefix.append("env")
    assert container.wrap(MANAGER, pass_env=["K"]) == shlex.join(prefix) + " -u SLURM_JOB_ID " + MANAGER


def test_amd_gpus(paths: Dict[str, str]) -> None:
    assert "--rocm" in Container("apptainer", paths["sif"], gpus="amd").prefix()
    docker = Container("docker", "img", gpus="amd").prefix()
    assert docker[docker.index("--device"):docker.index("--device") + 6] == \
        ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video"]


def test_none_without_env_is_the_command_itself() -> None:
    assert Container().wrap(MANAGER, pass_env=["PARSL_FLUX_KEY"]) == MANAGER


def test_with_binds_adds_unchecked_paths_once(paths: Dict[str, str]) -> None:
    container = Container("apptainer", paths["sif"], binds=[paths["data"]])
    more = container.with_binds(paths["data"], "/only/on/compute/nodes")
    assert list(more.binds) == [paths["data"], "/only/on/compute/nodes"]
    assert more.prefix()[-3:] == ["--bind", "/only/on/compute/nodes:/only/on/compute/nodes", paths["sif"]]


def test_with_binds_makes_relative_paths_absolute(paths: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(paths["data"])
    more = Container("docker", "img").with_binds("runinfo", "runinfo")
    assert list(more.binds) == [str(Path(paths["data"]) / "runinfo")]


def test_sandbox_directory_and_remote_images(tmp_path: Path) -> None:
    assert Container("apptainer", str(tmp_path)).prefix()[-1] == str(tmp_path)
    assert Container("singularity", "docker://fluxrm/flux-sched:bookworm-v0.54.0").prefix()[-1] == \
        "docker://fluxrm/flux-sched:bookworm-v0.54.0"


@pytest.mark.parametrize("kwargs, named", [
    ({"runtime": "charliecloud", "image": "x"}, "'charliecloud'"),
    ({"runtime": "docker"}, "'docker'"),
    ({"runtime": "apptainer", "image": "/no/such/image.sif"}, "'/no/such/image.sif'"),
    ({"runtime": "docker", "image": "x", "binds": ["/no/such/dir:/data"]}, "'/no/such/dir'"),
    ({"runtime": "docker", "image": "x", "binds": ["data:/data"]}, "'data'"),
    ({"runtime": "docker", "image": "x", "binds": ["/tmp:data"]}, "'data'"),
    ({"runtime": "docker", "image": "x", "binds": ["/a:/b:ro:extra"]}, "'/a:/b:ro:extra'"),
    ({"runtime": "docker", "image": "x", "binds": "/tmp"}, "lists of strings"),
    ({"runtime": "docker", "image": "x", "env": {"BAD-NAME": "1"}}, "'BAD-NAME'"),
    ({"runtime": "docker", "image": "x", "gpus": "intel"}, "'intel'"),
    ({"runtime": "apptainer", "image": "docker://x", "options": ["--cleanenv"]}, "'--cleanenv'"),
    ({"runtime": "apptainer", "image": "docker://ghcr.io/org/parsl flux:1"}, "'docker://ghcr.io/org/parsl flux:1'"),
    ({"runtime": "apptainer", "image": "oras://ghcr.io/Org/parsl-flux-sif:latest"}, "'Org/parsl-flux-sif'"),
])
def test_bad_input_names_the_value(kwargs: dict, named: str) -> None:
    with pytest.raises(ContainerError, match=re.escape(named)):
        Container(**kwargs)


def test_check_paths_off_skips_existence_checks() -> None:
    container = Container("apptainer", "/on/compute/node.sif", binds=["/lus/proj"], check_paths=False)
    assert container.prefix()[-1] == "/on/compute/node.sif"
    with pytest.raises(ContainerError, match="'/on/compute/node.sif'"):
        container.check()


def _executor(container: Container, provider, tmp_path: Path) -> FluxExecutor:
    ex = FluxExecutor(provider=provider, container=container)
    ex.url = "tcp://host:1234"
    ex.run_dir = str(tmp_path)
    return ex


@pytest.mark.parametrize("runtime", ["apptainer", "docker"])
def test_executor_launch_command_with_container(runtime: str, paths: Dict[str, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """FluxExecutor's real launch line, through a Slurm provider's srun launcher."""
    monkeypatch.delenv("FLUX_URI", raising=False)
    provider = SlurmProvider(launcher=SrunLauncher(), nodes_per_block=2)
    container = Container(runtime, image_for(runtime, paths), binds=[paths["data"]])
    ex = _executor(container, provider, tmp_path)

    launcher, assignments, argv = split_launch(provider.launcher(ex._get_launch_command("0"), 1, 2))

    assert launcher[0] == "srun"
    assert assignments.pop("PARSL_FLUX_KEY_FILE") == str(tmp_path / "FluxExecutor" / "keys" / "block-0.key")
    assert assignments == {}
    workdir = str(tmp_path / "FluxExecutor")  # the manager writes there: the executor binds it
    prefix = container.with_binds(workdir).prefix(pass_env=["PARSL_FLUX_KEY_FILE"])  # keys/ is inside workdir
    if runtime in ENGINES:
        prefix[-1:-1] = ["--entrypoint", "env"]
    else:
        prefix.append("env")
    assert argv[:len(prefix)] == prefix
    assert workdir in " ".join(prefix)
    if runtime == "docker":  # the key crosses into the container by name, its value stays off the line
        assert ("-e", "PARSL_FLUX_KEY_FILE") in zip(prefix, prefix[1:])
    inside = argv[len(prefix):]
    assert inside[:12] == ["-u", "SLURM_JOB_ID", "python3", "-m", "parsl_flux.allocation.rundir_guard", "flux",
                           "start", "flux", "env", "python3", "-m", "parsl_flux.allocation.manager"]
    options = dict(zip(inside[12::2], inside[13::2]))
    assert {k: options.get(k) for k in ("--url", "--block-id", "--workdir")} == \
        {"--url": "tcp://host:1234", "--block-id": "0", "--workdir": str(tmp_path / "FluxExecutor")}

    bare = _executor(Container("none"), SlurmProvider(launcher=SrunLauncher()), tmp_path)
    assert inside[2:] == split_launch(bare._get_launch_command("0"))[2]


def test_executor_local_provider_uses_python3_in_image(paths: Dict[str, str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With a container the driver's interpreter path means nothing inside the image."""
    monkeypatch.delenv("FLUX_URI", raising=False)
    ex = _executor(Container("apptainer", paths["sif"]), LocalProvider(), tmp_path)
    _, _, argv = split_launch(ex._get_launch_command("1"))
    workdir = str(tmp_path / "FluxExecutor")
    assert argv[:5] == ["apptainer", "exec", "--bind", f"{workdir}:{workdir}", paths["sif"]]
    assert argv[5:16] == ["env", "-u", "SLURM_JOB_ID", "python3", "-m", "parsl_flux.allocation.rundir_guard", "flux",
                          "start", "flux", "env", "python3"]


ENGINE_IMAGE = os.environ.get("IMAGE", "parsl-flux:dev")  # `make image`


@python_app
def brokers_in_container() -> int:
    """Flux brokers in the app's PID namespace (the container's own, under Podman)."""
    import os

    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                count += f.read().startswith("flux-broker")
        except OSError:
            continue
    return count


def test_a_podman_block_runs_one_broker_not_nested(tmp_path: Path) -> None:
    """Through the image's real launch line, the block's broker is not nested
    in an instance that the image's entrypoint started around the command
    (``--entrypoint env``): one broker in the container, as with Apptainer."""
    if shutil.which("podman") is None or subprocess.run(["podman", "image", "exists", ENGINE_IMAGE],
                                                        capture_output=True, timeout=60).returncode != 0:
        pytest.skip(f"podman image {ENGINE_IMAGE} not built (make image)")
    config = sites.make_config("local", image=ENGINE_IMAGE, runtime="podman", run_dir=str(tmp_path / "runinfo"))
    with parsl.load(config):
        assert brokers_in_container().result(timeout=300) == 1
