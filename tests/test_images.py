"""The container recipes: Dockerfile lint, definition in step, entrypoint, CI workflow.

Only what runs without Docker or Apptainer: the images themselves are built
and tested by .github/workflows/images.yml.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from parsl_flux.tools import images

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS = ROOT / "containers"
DOCKERFILE = CONTAINERS / "Dockerfile"
ENTRYPOINT = CONTAINERS / "entrypoint.sh"
WORKFLOW = ROOT / ".github" / "workflows" / "images.yml"
SHELL_SCRIPTS = (sorted(CONTAINERS.glob("*.sh")) + sorted(CONTAINERS.glob("*/*.sh"))
                 + sorted((ROOT / ".ci" / "cluster").glob("*.sh")) + [ROOT / ".ci" / "setup.d" / "10-images.sh"])
HADOLINT = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")]))


def _dockerfile() -> DockerfileParser:
    parser = DockerfileParser(fileobj=open(DOCKERFILE, "rb"))
    return parser


def test_dockerfile_structure() -> None:
    df = _dockerfile()
    base, _, tag = df.baseimage.partition(":")
    assert base == "fluxrm/flux-sched"
    assert tag and tag not in ("latest", "bookworm", "noble", "jammy"), "base image must be pinned to a release"
    users = [i["value"] for i in df.structure if i["instruction"] == "USER"]
    assert users and users[-1] not in ("0", "root"), "the image must end as a non-root user"
    assert users[-1].isdigit(), "numeric USER, so Kubernetes' runAsNonRoot can verify it"
    assert json.loads(df.structure[[i["instruction"] for i in df.structure].index("ENTRYPOINT")]["value"]) == \
        ["/usr/local/bin/parsl-flux-entrypoint"]
    text = DOCKERFILE.read_text()
    for needed in ("openmpi-bin", "libopenmpi-dev", "python3-mpi4py", "/opt/parsl-flux", "entrypoint.sh"):
        assert needed in text
    for instruction in df.structure:
        assert not any(word in instruction["value"].upper() for word in ("PASSWORD", "TOKEN", "SECRET")), \
            f"possible secret in {instruction['instruction']} {instruction['value']!r}"


def test_dockerfile_passes_hadolint() -> None:
    if HADOLINT is None:
        pytest.skip("hadolint not installed (it comes with the test extra: pip install -e '.[test]')")
    done = subprocess.run([HADOLINT, "--config", str(CONTAINERS / ".hadolint.yaml"), str(DOCKERFILE)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_ignores_are_justified() -> None:
    config = yaml.safe_load((CONTAINERS / ".hadolint.yaml").read_text())
    lines = (CONTAINERS / ".hadolint.yaml").read_text().splitlines()
    for rule in config.get("ignored", []):
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {rule}")
        assert lines[at - 1].strip().startswith("#"), f"ignored rule {rule} has no comment saying why"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (.ci/setup.d/10-images.sh installs it: apt-get install shellcheck)")
    # -x from the root: the image scripts source containers/engine.sh.
    done = subprocess.run(["shellcheck", "-x", str(script.relative_to(ROOT))], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_definition_is_in_step_with_dockerfile() -> None:
    """Committed definition == spython conversion of the Dockerfile + the documented additions."""
    diff = images.definition_diff()
    assert not diff, ("containers/parsl-flux.def is out of step with containers/Dockerfile; run "
                      "`python -m parsl_flux.tools.images regenerate`:\n" + "".join(diff))


def test_each_documented_addition_is_needed() -> None:
    """What the plain spython conversion gets wrong, and the definition gets right."""
    plain = images.convert()
    generated = images.generate_definition()
    assert "su - " in plain and "su - " not in generated  # USER lines
    assert 'org.opencontainers.image.title="parsl-flux"' in plain
    assert "org.opencontainers.image.title parsl-flux\n" in generated  # %labels syntax
    runscript = generated.split("%runscript\n", 1)[1].split("%", 1)[0]
    assert "cd /home" in plain.split("%runscript\n", 1)[1] and "cd " not in runscript  # WORKDIR
    assert runscript.strip() == 'exec /usr/local/bin/parsl-flux-entrypoint "$@"'
    post = generated.split("%post\n", 1)[1]
    assert post.index("rm -rf /opt/parsl-flux/.git /opt/parsl-flux/.venv") < post.index("apt-get")  # ignore
    assert generated.startswith(images.HEADER)


def test_dockerfile_change_breaks_the_definition_check(tmp_path: Path) -> None:
    changed = tmp_path / "Dockerfile"
    changed.write_text(DOCKERFILE.read_text() + "RUN true\n")
    assert images.definition_diff(dockerfile=changed)
    out = tmp_path / "parsl-flux.def"
    assert images.regenerate(out, changed) and not images.regenerate(out, changed)
    assert not images.definition_diff(out, changed)


def test_unsupported_ignore_pattern_is_named(tmp_path: Path) -> None:
    ignore = tmp_path / "x.dockerignore"
    ignore.write_text(".venv\n!keep.txt\n")
    with pytest.raises(ValueError, match="'!keep.txt'"):
        images.ignore_patterns(ignore)


def test_image_info_reports_recipe() -> None:
    info = images.image_info(versions=False)
    recipe = info["recipe"]
    assert recipe["base_image"] == _dockerfile().baseimage
    assert recipe["user"] == "10001"
    assert recipe["entrypoint"] == ["/usr/local/bin/parsl-flux-entrypoint"]
    assert recipe["labels"]["org.opencontainers.image.title"] == "parsl-flux"
    assert recipe["definition_in_sync"] is True
    assert info["versions"] is None
    json.dumps(info)


def test_image_info_without_recipe(tmp_path: Path) -> None:
    info = images.image_info(dockerfile=tmp_path / "absent")
    assert info["recipe"] is None
    assert info["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["versions"]["parsl-flux"]


def _run_entrypoint(*args: str, flux_path: str = "", **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(Path(flux_path).parent) if flux_path else "",
                                       str(Path(sys.executable).parent), os.environ["PATH"]) if p)
    environ = {k: v for k, v in os.environ.items() if k != "FLUX_URI"}
    environ.update(PATH=path, PARSL_FLUX_PYTHON=sys.executable, **env)
    return subprocess.run([str(ENTRYPOINT), *args], capture_output=True, text=True, env=environ, timeout=120)


def test_entrypoint_runs_command_directly_inside_an_instance() -> None:
    done = _run_entrypoint("sh", "-c", 'echo "uri=$FLUX_URI"', FLUX_URI="local:///tmp/existing")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "uri=local:///tmp/existing\n"


@pytest.mark.flux
def test_entrypoint_without_arguments_reports_versions(flux_path: str) -> None:
    done = _run_entrypoint(flux_path=flux_path)
    assert done.returncode == 0, done.stderr
    assert "flux-core" in done.stdout and "not found" not in done.stdout.split("flux-core", 1)[1].split("\n")[0]
    assert "parsl-flux" in done.stdout and "Usage:" in done.stdout


@pytest.mark.flux
def test_entrypoint_starts_an_instance_for_a_command(flux_path: str) -> None:
    code = "import os; print(os.environ['FLUX_URI'].startswith('local://'))"
    done = _run_entrypoint(sys.executable, "-c", code, flux_path=flux_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


@pytest.mark.flux
def test_entrypoint_passes_flux_commands_through(flux_path: str) -> None:
    """A block's launch line is `flux start ...`: it must not be nested in another instance."""
    done = _run_entrypoint("flux", "env", "sh", "-c", 'echo "uri=${FLUX_URI:-none}"', flux_path=flux_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "uri=none"


def test_workflow_is_valid_and_complete() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    assert {"docker", "apptainer"} <= set(jobs)
    assert jobs["apptainer"]["needs"] in ("docker", ["docker"])
    for name, job in jobs.items():
        for step in job["steps"]:
            if "uses" in step:
                action, _, ref = step["uses"].partition("@")
                assert ref and ref not in ("main", "master", "latest"), f"job {name}: {action} is not pinned"
    runs = "\n".join(step.get("run", "") for job in jobs.values() for step in job["steps"])
    # The same scripts as `make image image-test sif-test`, against the real base image.
    assert "bash containers/image.sh build" in runs and "bash containers/image.sh test" in runs
    assert "bash containers/image.sh sif-test" in runs
    assert "docker pull fluxrm/flux-sched:bookworm-v0.54.0" in runs and "base-standin/" not in runs
    image_sh = (CONTAINERS / "image.sh").read_text()
    assert "--entrypoint /opt/parsl-flux/containers/test-in-image.sh" in image_sh
    assert "-f containers/Dockerfile" in image_sh
    for readme_command in ('"$IMAGE" python examples/workflow.py', 'apptainer run "$SIF" python examples/workflow.py'):
        assert readme_command in image_sh
    in_image = (CONTAINERS / "test-in-image.sh").read_text()
    assert "make test" in in_image and "no Flux found" in in_image  # the suite runs, Flux tests not skipped
    assert "sudo apptainer build parsl-flux.sif containers/parsl-flux.def" in runs


# Debian's/Ubuntu's python3 (the image's) always has this sitecustomize, comments and all.
_DEBIAN_SITECUSTOMIZE = """\
# install the apport exception handler if available
try:
    import apport_python_hook
except ImportError:
    pass
else:
    apport_python_hook.install()
"""


def _with_sitecustomize(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    import importlib

    monkeypatch.delitem(sys.modules, "sitecustomize", raising=False)
    (tmp_path / "sitecustomize.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()


def test_debian_stock_sitecustomize_keeps_the_fast_runner_start(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """In the image /usr/lib/python3.11/sitecustomize.py always exists; it only
    installs apport's hook, which is absent there, so runners may still start with -S."""
    from parsl_flux.allocation.flux_backend import site_adds_only_paths

    _with_sitecustomize(monkeypatch, tmp_path, _DEBIAN_SITECUSTOMIZE)
    assert site_adds_only_paths([])
    _with_sitecustomize(monkeypatch, tmp_path, "# reformatted\n" + _DEBIAN_SITECUSTOMIZE.replace("    ", "\t"))
    assert site_adds_only_paths([])


def test_other_sitecustomize_still_turns_the_fast_start_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from parsl_flux.allocation.flux_backend import site_adds_only_paths

    _with_sitecustomize(monkeypatch, tmp_path, _DEBIAN_SITECUSTOMIZE + "import os\nos.environ['X'] = '1'\n")
    assert not site_adds_only_paths([])
    _with_sitecustomize(monkeypatch, tmp_path, "import coverage; coverage.process_startup()\n")
    assert not site_adds_only_paths([])
    # The stock file with apport installed does install a hook: keep the normal start.
    _with_sitecustomize(monkeypatch, tmp_path, _DEBIAN_SITECUSTOMIZE)
    (tmp_path / "apport_python_hook.py").write_text("def install():\n    pass\n")
    assert not site_adds_only_paths([])


@pytest.mark.skipif(not Path("/usr/lib/python3.11/sitecustomize.py").exists() or not Path("/usr/bin/python3").exists(),
                    reason="no Debian python3 with its stock sitecustomize here")
def test_system_python3_of_debian_gets_the_fast_start() -> None:
    """The real file, read by the real interpreter (the image's, and Debian hosts')."""
    src = str(ROOT / "src")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from parsl_flux.allocation.flux_backend import site_adds_only_paths; print(site_adds_only_paths([]))")
    done = subprocess.run(["/usr/bin/python3", "-c", code, src], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_test_in_image_runs_every_step_and_fails_at_the_end(tmp_path: Path) -> None:
    """A failing step (here the suite) does not stop the MPI and example steps;
    each is reported, and the script fails at the end."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "Makefile").write_text("test:\n\t@echo 'suite ran'; exit 1\n")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in (("flux", 'echo "flux $*"'), ("parsl-flux-entrypoint", 'echo "entrypoint $*"')):
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "PARSL_FLUX_SOURCE": str(source)}
    done = subprocess.run(["bash", str(CONTAINERS / "test-in-image.sh")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "suite ran" in done.stdout and "flux start flux run -n 2" in done.stdout
    assert "entrypoint python3 examples/workflow.py" in done.stdout
    summary = done.stdout.split("== summary", 1)[1]
    assert "suite: FAILED" in summary and "mpi: ok" in summary and "example: ok" in summary
    assert "1 step(s) failed" in done.stderr


def test_source_root_is_found_or_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tools find the checkout this module sits in, one named by $PARSL_FLUX_SOURCE, or say where they looked."""
    from parsl_flux.tools import checkout

    monkeypatch.delenv(checkout.SOURCE_ENV, raising=False)
    assert checkout.source_root("t", cwd=tmp_path) == ROOT  # an editable install: the module's own checkout
    monkeypatch.setenv(checkout.SOURCE_ENV, str(tmp_path))
    with pytest.raises(checkout.SourceCheckoutNeeded, match=f"none found at \\$PARSL_FLUX_SOURCE={tmp_path}"):
        checkout.source_root("regenerate", cwd=ROOT)
    (tmp_path / "containers").mkdir()
    (tmp_path / "containers" / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "pyproject.toml").write_text("")
    assert checkout.source_root("t") == tmp_path
    assert images.recipe_file(images.DOCKERFILE) == tmp_path / "containers" / "Dockerfile"
