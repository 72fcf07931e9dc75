"""Site configs: each imports, builds with defaults and overrides, and renders the
batch script its provider would submit; bad input gives a clear SiteError.

Scripts are checked by structure (shlex), not against a golden text: the
launcher line starts one broker per node, the container wraps ``flux start``
with its binds, and the manager command dials the driver.
"""

from __future__ import annotations

import os
from pathlib import Path
import re
import shlex
import sys

import pytest

from parsl_flux import sites
from parsl_flux.container import ENGINES

pytestmark = pytest.mark.usefixtures("clean_site_env")

ALL = ["aurora", "frontier", "kubernetes", "local", "pbs", "perlmutter", "polaris", "slurm", "theta"]
CONTAINERS = {"theta": "singularity", "polaris": "apptainer", "aurora": "apptainer", "frontier": "apptainer",
              "perlmutter": "podman-hpc"}
LAUNCHERS = {"theta": "aprun", "polaris": "mpiexec", "aurora": "mpiexec", "pbs": "mpiexec", "frontier": "srun",
             "perlmutter": "srun", "slurm": "srun"}
SUBMIT = {"theta": "qsub", "polaris": "qsub", "aurora": "qsub", "pbs": "qsub", "frontier": "sbatch",
          "perlmutter": "sbatch", "slurm": "sbatch"}




@pytest.fixture
def image(tmp_path) -> str:
    path = tmp_path / "parsl-flux.sif"
    path.write_text("")
    return str(path)


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: test
  user: {token: not-a-real-token}
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
"""


@pytest.fixture
def kube_home(tmp_path, monkeypatch):
    """A home directory with a kube config (for a server that is never contacted),
    so the real kubernetes package and Parsl's KubernetesProvider load it."""
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(KUBECONFIG)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return tmp_path


def required_env(monkeypatch, image: str) -> None:
    monkeypatch.setenv("PARSL_FLUX_ACCOUNT", "myproject")
    monkeypatch.setenv("PARSL_FLUX_IMAGE", image)


def build(name: str, monkeypatch, sif: str, **overrides):
    """Site ``name`` with its required values in the environment: an account,
    and an image for the sites that always use one (a reference for
    podman-hpc and Kubernetes, the ``.sif`` file ``sif`` otherwise)."""
    monkeypatch.setenv("PARSL_FLUX_ACCOUNT", "myproject")
    if name in ("perlmutter", "kubernetes"):
        monkeypatch.setenv("PARSL_FLUX_IMAGE", "registry.example.org/parsl-flux:1")
    elif name in CONTAINERS:
        monkeypatch.setenv("PARSL_FLUX_IMAGE", sif)
    return sites.make_config(name, **overrides)


# --------------------------------------------------------------- structure
def block_command(script: str) -> list:
    """argv of the per-node command, from the launcher's here-doc (or the
    SingleNodeLauncher's CMD function)."""
    lines = script.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"cat << (\w+) >", line)
        if match:
            end = lines.index(match.group(1), i + 1)
            return shlex.split("\n".join(lines[i + 1:end]))
        if line == "CMD() {":
            return shlex.split("\n".join(lines[i + 1:lines.index("}", i + 1)]))
    raise AssertionError(f"no block command in:\n{script}")


def launcher_line(script: str, launcher: str) -> list:
    lines = [shlex.split(line) for line in script.splitlines() if line.startswith(launcher + " ")]
    assert len(lines) == 1, f"expected one {launcher} line in:\n{script}"
    return lines[0]


def assert_one_broker_per_node(script: str, launcher: str, nodes: int) -> None:
    argv = launcher_line(script, launcher)
    if launcher == "srun":
        assert argv[argv.index("--ntasks") + 1] == str(nodes)
        assert "--ntasks-per-node=1" in argv
    elif launcher == "aprun":
        assert argv[argv.index("-n") + 1] == str(nodes) and argv[argv.index("-N") + 1] == "1"
    else:  # mpiexec -n $WORKERCOUNT, WORKERCOUNT set above
        assert argv[argv.index("-n") + 1] == "$WORKERCOUNT"
        assert f"WORKERCOUNT={nodes}" in script.splitlines()
        assert ("--ppn" in argv or "-ppn" in argv) and argv[argv.index("--ppn" if "--ppn" in argv else "-ppn") + 1] == "1"


def assert_manager_command(argv: list, rundir: str) -> None:
    """``[env...] PYTHON -m parsl_flux.allocation.rundir_guard flux start flux env PYTHON -m
    parsl_flux.allocation.manager --url tcp://... --block-id 0 --workdir ...``"""
    start = argv.index("start")
    assert argv[start - 3:start - 1] == ["-m", "parsl_flux.allocation.rundir_guard"]
    assert argv[start - 1].endswith("flux")
    assert argv[start + 1].endswith("flux") and argv[start + 2] == "env"
    assert argv[start + 4:start + 6] == ["-m", "parsl_flux.allocation.manager"]
    opts = argv[start + 6:]
    assert opts[opts.index("--url") + 1].startswith("tcp://")
    assert opts[opts.index("--block-id") + 1] == "0"
    assert opts[opts.index("--workdir") + 1].startswith(rundir)


def binds_of(argv: list, runtime: str) -> list:
    flag = "--bind" if runtime in ("apptainer", "singularity") else "-v"
    return [argv[i + 1].split(":")[0] for i, a in enumerate(argv) if a == flag]


# --------------------------------------------------------------- tests
def test_registry_lists_every_site():
    assert sites.names() == ALL


@pytest.mark.parametrize("name", ALL)
def test_imports_without_environment(name):
    module = sites.load(name)
    assert module.SITE.name == name
    assert callable(module.make_config)


@pytest.mark.parametrize("name", ["polaris", "theta", "frontier", "perlmutter", "aurora"])
def test_lazy_config_needs_required_values(name):
    module = sites.load(name)
    with pytest.raises(sites.SiteError, match="PARSL_FLUX_"):
        module.config  # noqa: B018 - the access builds it


def test_lazy_config_builds_from_environment(monkeypatch, image):
    required_env(monkeypatch, image)
    config = sites.load("polaris").config
    assert sites.flux_executor(config).provider.account == "myproject"
    assert sites.flux_executor(sites.load("local").config).provider.label == "local"


@pytest.mark.parametrize("name", [n for n in ALL if n != "kubernetes"])
def test_builds_and_renders_with_defaults(name, monkeypatch, image):
    config = build(name, monkeypatch, image)
    rendered = sites.render(config)
    rundir = os.path.abspath("runinfo")
    argv = block_command(rendered.script)
    assert argv[0] == f"PARSL_FLUX_KEY_FILE={rundir}/000/flux/keys/block-0.key", "only the key file's path is shown"
    assert_manager_command(argv, rundir)
    runtime = CONTAINERS.get(name)
    if runtime:
        i = argv.index(runtime)
        assert argv[i + 1] == ("run" if runtime == "podman-hpc" else "exec")
        assert i < argv.index("start")
        assert rundir in binds_of(argv, runtime), "the run directory must be visible inside the image"
        start = argv.index("start")
        unset = ["-u", "SLURM_JOB_ID"] if runtime in ENGINES else ["env", "-u", "SLURM_JOB_ID"]
        assert argv[start - 5 - len(unset):start - 4] == [sites.flux_executor(config).container.image, *unset]
    else:
        assert not {"apptainer", "singularity", "podman-hpc"} & set(argv)
    if name in LAUNCHERS:
        executor = sites.flux_executor(config)
        assert_one_broker_per_node(rendered.script, LAUNCHERS[name], executor.provider.nodes_per_block)
        assert shlex.split(rendered.submit_command)[0] == SUBMIT[name]
    else:
        assert rendered.submit_command is None


@pytest.mark.parametrize("name", ["theta", "polaris", "aurora", "frontier", "perlmutter", "slurm", "pbs"])
def test_overrides_reach_the_script(name, monkeypatch, image, tmp_path):
    extra = tmp_path / "data"
    extra.mkdir()
    overrides = dict(nodes=3, walltime="01:15:00", account="otherproj", queue="prod", binds=[str(extra)],
                     worker_init="echo hello-from-init", run_dir=str(tmp_path / "runs"))
    if name not in ("slurm", "pbs", "perlmutter"):
        overrides["image"] = image
    config = build(name, monkeypatch, image, **overrides)
    rendered = sites.render(config)
    assert_one_broker_per_node(rendered.script, LAUNCHERS[name], 3)
    assert "echo hello-from-init" in rendered.script
    submit = rendered.submit_command + "\n" + rendered.script
    assert "otherproj" in submit and "prod" in submit
    assert any(t in submit for t in ("walltime=01:15:00", "--time=75", "-t 75"))
    argv = block_command(rendered.script)
    assert_manager_command(argv, str(tmp_path / "runs"))
    if name in CONTAINERS:
        assert str(extra) in binds_of(argv, CONTAINERS[name])


def test_container_gpus_and_pmi(monkeypatch, image):
    polaris = block_command(sites.render(build("polaris", monkeypatch, image)).script)
    assert "--nv" in polaris and "/opt/cray/pe" in binds_of(polaris, "apptainer")
    assert any("FLUX_PMI_CLIENT_METHODS=libpmi2" in a for a in polaris)
    frontier = block_command(sites.render(build("frontier", monkeypatch, image)).script)
    assert "--rocm" in frontier
    script = sites.render(build("frontier", monkeypatch, image)).script
    assert "--mpi=pmi2" in launcher_line(script, "srun")
    shifter = sites.render(build("perlmutter", monkeypatch, image, runtime="shifter",
                                 image="docker:me/parsl-flux:1")).script
    assert "--mpi=pmi2" in launcher_line(shifter, "srun")
    assert any(a.startswith("--image=docker:me/parsl-flux:1") for a in block_command(shifter))


def test_slurm_site_without_image_uses_host_flux(monkeypatch, image):
    monkeypatch.setenv("FLUX_PATH", "/opt/flux/bin/flux")
    argv = block_command(sites.render(sites.make_config("slurm")).script)
    assert argv[1:4] == [sys.executable, "-m", "parsl_flux.allocation.rundir_guard"]
    assert argv[4] == "/opt/flux/bin/flux" and argv[argv.index("env") + 1] == sys.executable


def test_kubernetes_without_kube_config_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PARSL_FLUX_IMAGE", "registry.example.org/parsl-flux:1")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config, not in a cluster
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(sites.SiteError, match="kube config"):
        sites.make_config("kubernetes")


def test_kubernetes_minicluster_mode_waits_for_the_chart_manager(monkeypatch):
    from parsl_flux.providers.external import ExternalProvider

    secret = "ab" * 32
    config = sites.make_config("kubernetes", minicluster=True, port=54321, secret=secret)
    ex = sites.flux_executor(config)
    assert isinstance(ex.provider, ExternalProvider) and ex.port == 54321
    assert ex._master == bytes.fromhex(secret) and ex.address is None
    monkeypatch.setenv("PARSL_FLUX_SECRET", secret)
    monkeypatch.setenv("PARSL_FLUX_PORT", "5000")
    monkeypatch.setenv("PARSL_FLUX_MINICLUSTER", "1")
    assert sites.flux_executor(sites.make_config("kubernetes")).port == 5000
    with pytest.raises(sites.SiteError, match="secret"):
        monkeypatch.delenv("PARSL_FLUX_SECRET")
        sites.make_config("kubernetes")


def test_kubernetes_builds_and_renders_pod_command(monkeypatch, kube_home):
    config = sites.make_config("kubernetes", image="registry.example.org/parsl-flux:1", worker_init="echo init")
    provider = sites.flux_executor(config).provider
    assert provider.image == "registry.example.org/parsl-flux:1" and provider.nodes_per_block == 1
    rendered = sites.render(config)
    assert rendered.submit_command is None and rendered.script.startswith("echo init")
    argv = shlex.split(rendered.script.split("\n", 1)[1])
    # a pod shares no filesystem with the driver: the key itself goes into the pod's command
    assert argv[0].startswith("PARSL_FLUX_KEY=") and len(argv[0]) == len("PARSL_FLUX_KEY=") + 64
    assert argv[1:6] == ["python3", "-m", "parsl_flux.allocation.rundir_guard", "flux", "start"]
    assert_manager_command(argv, os.path.abspath("runinfo"))


# --------------------------------------------------------------- bad input
def test_unknown_site():
    with pytest.raises(sites.SiteError, match="unknown site 'nowhere'; known sites: aurora, frontier"):
        sites.make_config("nowhere")


def test_missing_account(image):
    with pytest.raises(sites.SiteError, match=r"site 'polaris' needs account: .*PARSL_FLUX_ACCOUNT"):
        sites.make_config("polaris", image=image)


@pytest.mark.parametrize("walltime", ["1h", "00:60:00", "00:00:30", "10"])
def test_bad_walltime(walltime, monkeypatch, image):
    with pytest.raises(sites.SiteError, match="walltime"):
        build("frontier", monkeypatch, image, walltime=walltime)


def test_image_that_does_not_exist(monkeypatch, tmp_path):
    with pytest.raises(sites.SiteError, match="image file .*missing.sif.* does not exist"):
        sites.make_config("theta", account="p", image=str(tmp_path / "missing.sif"))


@pytest.mark.parametrize("nodes", [0, -1, "two"])
def test_bad_node_count(nodes, monkeypatch, image):
    with pytest.raises(sites.SiteError, match="whole number"):
        build("slurm", monkeypatch, image, nodes=nodes)


def test_keyword_the_site_does_not_take():
    with pytest.raises(sites.SiteError, match="does not take 'queue'"):
        sites.make_config("local", queue="debug")


def test_site_config_from_a_file(tmp_path):
    path = tmp_path / "mysite.py"
    path.write_text(open(sites.load("local").__file__).read())
    assert sites.load(str(path)).SITE.name == "local"
    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(sites.SiteError, match="is not a site config"):
        sites.load(str(tmp_path / "bad.py"))


def test_a_wheel_install_ships_and_lists_the_sites(tmp_path):
    """The site configs are package data: a wheel (no source checkout next to it) lists and renders them."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "whl"), str(root)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "whl").glob("parsl_flux-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    env.pop("PARSL_FLUX_SITE_CONFIGS", None)

    def cli(*argv: str) -> subprocess.CompletedProcess:
        code = ("import sys, parsl_flux; from parsl_flux import cli; "
                "assert parsl_flux.__file__.startswith(sys.argv[1]), parsl_flux.__file__; "
                "sys.exit(cli.main(sys.argv[2:]))")
        return subprocess.run([sys.executable, "-c", code, str(tmp_path / "site"), *argv], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=120)

    listed = cli("sites")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ALL
    shown = cli("sites", "show", "local")
    assert shown.returncode == 0, shown.stderr
    assert "export JOBNAME=" in shown.stdout and "parsl_flux.allocation.manager" in shown.stdout
    # The recipe tools need the checkout's containers/: one line saying so, not a wrong path.
    env.pop("PARSL_FLUX_SOURCE", None)
    checked = cli("image", "check")
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "needs a parsl-flux source checkout" in checked.stderr and "Traceback" not in checked.stderr
    versions = cli("image", "versions")
    assert versions.returncode == 0 and "parsl-flux" in versions.stdout, versions.stderr


def test_shipped_sites_are_package_resources():
    from importlib.resources import files

    shipped = files("parsl_flux") / "site_configs"
    assert sorted(p.name[:-3] for p in shipped.iterdir() if p.name.endswith(".py")) == ["__init__", *ALL]
    assert Path(sites.load("slurm").__file__).read_text() == (shipped / "slurm.py").read_text()
    from parsl_flux.site_configs.polaris import SITE  # importable as modules of the package too

    assert SITE.name == "polaris"


def test_sites_copy_writes_an_editable_config(tmp_path):
    from importlib.resources import files

    from parsl_flux import cli

    assert cli.main(["sites", "copy", "local", str(tmp_path)]) == 0
    copied = tmp_path / "local.py"
    assert copied.read_text() == (files("parsl_flux") / "site_configs" / "local.py").read_text()
    assert cli.main(["sites", "copy", "local", str(tmp_path)]) != 0  # never overwrites
    assert cli.main(["sites", "copy", "theta"]) == 0 and Path("theta.py").is_file()  # default: ./NAME.py
    with pytest.raises(sites.SiteError, match="directory .*no-such-dir.* does not exist"):
        sites.copy_site("local", str(tmp_path / "no-such-dir" / "local.py"))


def test_an_edited_copy_replaces_the_shipped_site(tmp_path, monkeypatch):
    """$PARSL_FLUX_SITE_CONFIGS is searched before the shipped sites, so an edited copy is used by name."""
    mine = tmp_path / "mysites"
    mine.mkdir()
    sites.copy_site("local", str(mine))
    edited = (mine / "local.py").read_text().replace('summary="This machine', 'summary="My edited machine')
    (mine / "local.py").write_text(edited)
    (mine / "lab.py").write_text(edited)
    monkeypatch.setenv("PARSL_FLUX_SITE_CONFIGS", str(mine))
    assert sites.names() == sorted([*ALL, "lab"])
    assert sites.load("local").SITE.summary.startswith("My edited machine")
    assert sites.load("theta").SITE.name == "theta"  # the shipped ones are still there
    monkeypatch.setenv("PARSL_FLUX_SITE_CONFIGS", str(tmp_path / "typo"))
    with pytest.raises(sites.SiteError, match="PARSL_FLUX_SITE_CONFIGS: .*typo.* is not a directory"):
        sites.names()


@pytest.mark.parametrize("name", ["aurora", "frontier", "kubernetes", "perlmutter", "polaris", "theta"])
def test_all_missing_settings_are_named_at_once(name):
    required = sites.load(name).SITE.required
    assert required
    with pytest.raises(sites.SiteError) as error:
        sites.make_config(name)
    message = str(error.value)
    assert f"site {name!r} needs " + " and ".join(required) in message
    for keyword in required:
        assert f"--{keyword}" in message and f"PARSL_FLUX_{keyword.upper()}" in message


def test_an_empty_required_setting_is_missing(image):
    with pytest.raises(sites.SiteError, match="needs account:"):
        sites.make_config("theta", account="", image=image)


def test_render_patches_nothing_process_wide(monkeypatch):
    """Rendering the local site must not replace parsl's module-level execute_wait
    (``mock.patch``), which a LocalProvider in another thread would then call."""
    import unittest.mock

    import parsl.providers.local.local as local_module

    def forbidden(*args, **kwargs):
        raise AssertionError("render patched or ran something outside its provider copy")

    monkeypatch.setattr(unittest.mock, "patch", forbidden)
    monkeypatch.setattr(local_module, "execute_wait", forbidden)
    rendered = sites.render(sites.make_config("local"))
    assert rendered.submit_command is None and "parsl_flux.allocation.manager" in rendered.script


def test_loopback_address_warns_for_remote_blocks(monkeypatch):
    from parsl_flux.driver.executor import FluxExecutor

    assert sites.render(sites.make_config("local")).warnings == ()  # blocks on this host: loopback is right
    assert sites.render(sites.make_config("slurm", address="10.1.2.3")).warnings == ()
    given = sites.render(sites.make_config("slurm", address="127.0.0.1")).warnings
    assert len(given) == 1 and "127.0.0.1 (the address given)" in given[0] and "PARSL_FLUX_ADDRESS" in given[0]
    monkeypatch.setattr(FluxExecutor, "default_address", lambda self: "127.0.1.1")  # /etc/hosts on Debian
    default = sites.render(sites.make_config("slurm")).warnings
    assert len(default) == 1 and "this host's name" in default[0] and "PARSL_FLUX_INTERFACE" in default[0]
    monkeypatch.setattr("socket.gethostbyname", lambda host: "127.0.0.1")
    assert sites.render(sites.make_config("pbs", address="login1.example.org")).warnings
