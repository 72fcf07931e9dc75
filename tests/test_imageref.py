"""Image references at sites: parsing, the cache file's name, the pull commands,
and how a site config turns a reference into a local copy its blocks run.

Pure functions only, plus the cache logic against a stand-in ``apptainer``
script (the real pull, from a registry on 127.0.0.1, is in
``containers/release-test.sh``: ``make release-test``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from parsl_flux import imagepull, imageref, sites
from parsl_flux.container import Container
from parsl_flux.imageref import ImageRef, ImageRefError


@pytest.mark.parametrize("text, expected", [
    ("docker://127.0.0.1:5000/parsl-flux:0.1.0", ImageRef("docker", "127.0.0.1:5000", "parsl-flux", "0.1.0")),
    ("docker://ghcr.io/org/parsl-flux", ImageRef("docker", "ghcr.io", "org/parsl-flux", "latest")),
    ("docker://ubuntu:24.04", ImageRef("docker", "docker.io", "library/ubuntu", "24.04")),
    ("docker://fluxrm/flux-sched:bookworm-v0.54.0",
     ImageRef("docker", "docker.io", "fluxrm/flux-sched", "bookworm-v0.54.0")),
    ("oras://localhost:5000/a/b/parsl-flux-sif:latest", ImageRef("oras", "localhost:5000", "a/b/parsl-flux-sif")),
    ("docker://ghcr.io/org/img@sha256:" + "a" * 64, ImageRef("docker", "ghcr.io", "org/img", "latest",
                                                            "sha256:" + "a" * 64)),
])
def test_parse(text, expected):
    ref = imageref.parse(text)
    assert ref == expected
    assert imageref.parse(str(ref)) == ref  # str() round-trips


@pytest.mark.parametrize("text, words", [
    ("/lus/proj/parsl-flux.sif", "not a reference"),
    ("library://sylabs/x", "not a reference"),
    ("docker://ghcr.io/Org/Img:1", "not a valid name"),
    ("docker://ghcr.io/org/img:bad tag", "not a valid tag"),
    ("docker://ghcr.io/org/img@sha256:123", "not sha256"),
])
def test_parse_refuses(text, words):
    with pytest.raises(ImageRefError, match=words):
        imageref.parse(text)


def test_is_reference():
    assert imageref.is_reference("docker://ghcr.io/a/b")
    assert imageref.is_reference("oras://ghcr.io/a/b:1")
    assert not imageref.is_reference("/scratch/parsl-flux.sif")
    assert not imageref.is_reference("parsl-flux:dev")  # podman's own name
    assert not imageref.is_reference("docker:ghcr.io/a/b")  # shifter's form


@pytest.mark.parametrize("registry, plain", [("127.0.0.1:5000", True), ("localhost:5000", True),
                                             ("[::1]:5000", True), ("10.213.77.1:5000", False),
                                             ("ghcr.io", False)])
def test_plain_http_only_on_loopback(registry, plain):
    assert ImageRef("docker", registry, "x").plain_http is plain


def test_cache_dir_order():
    assert imageref.cache_dir({"PARSL_FLUX_IMAGE_CACHE": "/c", "PARSL_FLUX_CACHE": "/p"}) == Path("/c")
    assert imageref.cache_dir({"PARSL_FLUX_CACHE": "/p"}) == Path("/p/images")
    assert imageref.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/parsl-flux/images")


def test_cache_file_is_stable_readable_and_distinct():
    d = Path("/cache")
    a = imageref.cache_file(imageref.parse("docker://127.0.0.1:5000/parsl-flux:0.1.0"), d)
    assert a == imageref.cache_file(imageref.parse("docker://127.0.0.1:5000/parsl-flux:0.1.0"), d)
    assert a.parent == d and a.name.startswith("parsl-flux_0.1.0-") and a.suffix == ".sif"
    others = {imageref.cache_file(imageref.parse(r), d) for r in (
        "oras://127.0.0.1:5000/parsl-flux:0.1.0", "docker://127.0.0.1:5001/parsl-flux:0.1.0",
        "docker://127.0.0.1:5000/parsl-flux:latest")}
    assert a not in others and len(others) == 3


def test_pull_commands():
    local = imageref.parse("oras://127.0.0.1:5000/parsl-flux-sif:0.1.0")
    assert imagepull.pull_command("apptainer", local, Path("/c/x.sif")) == \
        ["apptainer", "pull", "--no-https", "/c/x.sif", "oras://127.0.0.1:5000/parsl-flux-sif:0.1.0"]
    remote = imageref.parse("docker://ghcr.io/org/parsl-flux:0.1.0")
    assert imagepull.pull_command("singularity", remote, Path("/c/x.sif")) == \
        ["singularity", "pull", "/c/x.sif", "docker://ghcr.io/org/parsl-flux:0.1.0"]
    assert imagepull.engine_pull_command("podman", imageref.parse("docker://127.0.0.1:5000/p:1")) == \
        ["podman", "pull", "--tls-verify=false", "127.0.0.1:5000/p:1"]
    assert imagepull.engine_pull_command("docker", remote) == ["docker", "pull", "ghcr.io/org/parsl-flux:0.1.0"]


def test_site_runs_a_reference_from_the_cache(clean_site_env, monkeypatch, tmp_path):
    monkeypatch.setenv("PARSL_FLUX_IMAGE_CACHE", str(tmp_path / "cache"))
    ref = "docker://127.0.0.1:5000/parsl-flux:0.1.0"
    box = sites.flux_executor(sites.make_config("slurm", image=ref)).container
    assert box.source == ref
    assert box.image == str(imageref.cache_file(imageref.parse(ref), tmp_path / "cache"))
    assert not os.path.exists(box.image)  # nothing pulled by building a config (sites show, doctor)
    assert box.image in box.wrap("flux start")
    podman = sites.flux_executor(sites.make_config("local", image=ref, runtime="podman")).container
    assert podman.image == "127.0.0.1:5000/parsl-flux:0.1.0" and podman.source == ref


def test_site_refuses_what_a_runtime_cannot_run(clean_site_env):
    with pytest.raises(sites.SiteError, match="oras:// holds a SIF"):
        sites.make_config("local", image="oras://127.0.0.1:5000/p:1", runtime="podman")
    with pytest.raises(sites.SiteError, match="site 'slurm'.*not a valid tag"):
        sites.make_config("slurm", image="docker://127.0.0.1:5000/p:b!d")


def _fake_apptainer(tmp_path: Path, log: Path, fail: bool = False) -> Path:
    """A stand-in ``apptainer`` that writes the destination and logs each call."""
    tool = tmp_path / "bin" / "apptainer"
    tool.parent.mkdir()
    body = "exit 3" if fail else 'printf sif > "$3"'
    tool.write_text(f'#!/bin/sh\necho "$@" >> {log}\n{body}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def test_prepare_pulls_once_and_reuses(tmp_path):
    log = tmp_path / "calls"
    tool = _fake_apptainer(tmp_path, log)
    dest = tmp_path / "cache" / "p.sif"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
        box = Container("apptainer", str(dest), source="oras://127.0.0.1:5000/p:1")
        box.prepare()
        box.with_binds(str(tmp_path)).prepare()  # the executor's copy: same source, no second pull
    assert dest.read_text() == "sif"
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("pull --no-https ")
    assert sorted(p.name for p in dest.parent.iterdir()) == [".p.sif.lock", "p.sif"]  # no partial file left


def test_failed_pull_leaves_no_file(tmp_path, monkeypatch):
    log = tmp_path / "calls"
    tool = _fake_apptainer(tmp_path, log, fail=True)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    dest = tmp_path / "cache" / "p.sif"
    with pytest.raises(imagepull.ImagePullError, match="exited 3"):
        Container("apptainer", str(dest), source="docker://ghcr.io/o/p:1").prepare()
    assert not dest.exists() and not list(dest.parent.glob("*.partial"))
