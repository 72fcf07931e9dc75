"""One version source: ``parsl_flux.__version__``, which pyproject reads.

A release (``.github/workflows/release.yml``) publishes the wheel, the sdist,
the image tag and the SIF under this one number, so the places that state it
must agree: the package metadata pip installed, the attribute, the image's
OCI label, and a ``v*`` tag (checked by the workflow with
``python -m parsl_flux.tools.release check-tag``).
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import parsl_flux
from parsl_flux.tools import release

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_takes_its_version_from_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], "pyproject states a version of its own: two sources"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "parsl_flux.__version__"}


def test_installed_metadata_agrees_with_the_attribute():
    assert importlib.metadata.version("parsl-flux") == parsl_flux.__version__


def test_version_is_pep440_release():
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?", parsl_flux.__version__), parsl_flux.__version__


def test_tag_must_name_the_version():
    assert release.tag_problem(f"v{parsl_flux.__version__}") is None
    assert release.tag_problem(f"refs/tags/v{parsl_flux.__version__}") is None
    problem = release.tag_problem("v99.0.0")
    assert problem is not None and parsl_flux.__version__ in problem and "v99.0.0" in problem
    assert release.tag_problem(parsl_flux.__version__) is not None  # no leading v


def test_release_labels_come_from_the_image_and_the_base_pin():
    dockerfile = (ROOT / "containers" / "Dockerfile").read_text()
    assert release.fluxion_version(dockerfile) == "0.54.0"
    versions = {"flux-core": "0.88.0", "openmpi": "4.1.4", "parsl": "2026.10.26", "parsl-flux": parsl_flux.__version__}
    args = release.build_args(versions, fluxion="0.54.0", source="https://example.org/parsl-flux", revision="abc")
    assert args["OPENMPI_VERSION"] == "4.1.4" and args["FLUXION_VERSION"] == "0.54.0"
    for label, arg in release.LABEL_ARGS.items():  # every label is set in the Dockerfile from its argument
        assert f"ARG {arg}" in dockerfile
        assert f'{label}="${{{arg}}}"' in dockerfile, label
    try:
        release.build_args({**versions, "openmpi": None}, fluxion="0.54.0", source="s", revision="r")
    except ValueError as exc:
        assert "OPENMPI_VERSION" in str(exc)
    else:
        raise AssertionError("a missing version was accepted")


def test_release_workflow_is_valid_and_checks_the_tag_first():
    """release.yml validates against GitHub's workflow schema (check-jsonschema's
    bundled copy, no network), runs on v* tags, and publishes nothing before
    the tag is checked against the version."""
    import subprocess
    import sys

    import yaml

    path = ROOT / ".github" / "workflows" / "release.yml"
    checker = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    workflow = yaml.safe_load(path.read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True
    jobs = workflow["jobs"]
    assert any("check-tag" in step.get("run", "") for step in jobs["dist"]["steps"])
    for name, job in jobs.items():
        if name != "dist":
            assert "dist" in job["needs"], f"job {name} may publish before the tag is checked"
    runs = "\n".join(step.get("run", "") for job in jobs.values() for step in job.get("steps", []))
    assert "containers/release.sh image" in runs and "push-sif" in runs and ":latest" in runs
