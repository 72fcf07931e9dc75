"""Recipe stamps (mk/stamp.sh): a cached artifact is reused only while its inputs are unchanged.

A cache reused by name once hid a broken recipe on every machine that still
had an older build. These tests change a script a recipe sources and check
that exactly the artifacts built from it would be rebuilt, first from the
stamps alone, then against the artifacts this machine really has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from conftest import ROOT

ARTIFACTS = ["flux-core", "fluxion", "apptainer", "rootfs", "standin", "image", "sif"]
# What containers/engine.sh is an input of (sourced by build.sh and image.sh).
FROM_ENGINE_SH = {"rootfs", "standin", "image", "sif"}
VENDOR = ROOT.parent / "shared" / "vendor"
# The script that builds each artifact.
RECIPES = {
    "flux-core": "mk/build-flux.sh",
    "fluxion": "mk/build-flux.sh",
    "apptainer": "containers/apptainer-sid.sh",
    "rootfs": "containers/base-standin/build.sh",
    "standin": "containers/base-standin/build.sh",
    "image": "containers/image.sh",
    "sif": "containers/image.sh",
}


def _stamp(root: Path, *args: str, env: Dict[str, str] | None = None) -> str:
    run_env = dict(os.environ, PARSL_FLUX_VENDOR=str(VENDOR), **(env or {}))
    return subprocess.run(["bash", str(root / "mk" / "stamp.sh"), *args], check=True, capture_output=True,
                          text=True, env=run_env, cwd=root).stdout


def _copy_recipes(dest: Path) -> Path:
    for sub in ("mk", "containers"):
        shutil.copytree(ROOT / sub, dest / sub, symlinks=True)
    return dest


def _inputs(root: Path, name: str) -> set:
    """Files NAME's stamp covers, directly or through the stamps it chains."""
    files = set()
    for line in _stamp(root, "--inputs", name).splitlines():
        kind, _, value = line.partition(":")
        files |= {value} if kind == "file" else _inputs(root, value)
    return files


@pytest.mark.parametrize("name", ARTIFACTS)
def test_every_script_a_recipe_sources_is_an_input(name):
    recipe = ROOT / RECIPES[name]
    sourced = set()
    for match in re.finditer(r'^\s*(?:\.|source)\s+.*?([\w.-]+\.sh)"?\s*$', recipe.read_text(), re.M):
        sourced.add(match.group(1))
    assert sourced, f"{recipe} sources no script? (the pattern above no longer matches its lines)"
    inputs = {Path(p).name for p in _inputs(ROOT, name)}
    assert recipe.name in inputs, f"{name}: its recipe {recipe} is not among its inputs {sorted(inputs)}"
    sourced.discard("stamp.sh")  # the stamp's own functions: each stamp hashes its declaration instead
    assert sourced <= inputs, f"{name}: {recipe} sources {sorted(sourced - inputs)}, which its stamp does not cover"


def test_vendored_tarballs_are_inputs_of_what_is_built_from_them():
    assert "flux-core-0.88.0.tar.gz" in {Path(p).name for p in _inputs(ROOT, "flux-core")}
    standin = {Path(p).name for p in _inputs(ROOT, "standin")}
    assert {"flux-core-0.88.0.tar.gz", "flux-sched-0.54.0.tar.gz"} <= standin


def test_stamps_do_not_depend_on_where_the_checkout_lies(tmp_path):
    copy = _copy_recipes(tmp_path)
    assert [_stamp(copy, n) for n in ARTIFACTS] == [_stamp(ROOT, n) for n in ARTIFACTS]


def test_a_comment_in_engine_sh_changes_exactly_the_stamps_built_from_it(tmp_path):
    copy = _copy_recipes(tmp_path)
    before = {n: _stamp(copy, n) for n in ARTIFACTS}
    with open(copy / "containers" / "engine.sh", "a") as f:
        f.write("# a comment changes the recipe\n")
    after = {n: _stamp(copy, n) for n in ARTIFACTS}
    changed = {n for n in ARTIFACTS if before[n] != after[n]}
    assert changed == FROM_ENGINE_SH


def _plan(root: Path) -> Dict[str, str]:
    """``stamp.sh --plan``: artifact -> "reuse" or "rebuild", against this machine's artifacts."""
    env = {"SIF": str(ROOT / "parsl-flux.sif")}
    plan = {}
    for line in _stamp(root, "--plan", env=env).splitlines():
        name, _, rest = line.partition(": ")
        plan[name] = rest.split()[0]
    return plan


def test_warm_plan_rebuilds_only_what_a_changed_script_feeds(tmp_path):
    """Against the real cached artifacts (CI builds them before the tests run)."""
    real = _plan(ROOT)
    needed = {"flux-core", "apptainer", "standin", "image", "sif"}
    missing = sorted(n for n in needed if real.get(n) != "reuse")
    if missing:
        pytest.skip(f"not built and stamped on this machine: {missing} (.ci/setup.d builds them)")
    copy = _copy_recipes(tmp_path)
    with open(copy / "containers" / "engine.sh", "a") as f:
        f.write("# a comment changes the recipe\n")
    changed = _plan(copy)
    for name, decision in real.items():
        if decision == "reuse":
            want = "rebuild" if name in FROM_ENGINE_SH else "reuse"
            assert changed[name] == want, f"{name}: {changed[name]} after engine.sh changed, want {want}"


def test_the_host_ca_is_lent_at_a_path_no_package_owns(tmp_path):
    bundle = tmp_path / "proxy-ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    script = (f'. "{ROOT}/containers/engine.sh"; for mode in build run; do ca_options $mode; '
              'printf "%s\\n" "${CA_OPTS[@]}"; echo --; done')
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True,
                         env=dict(os.environ, HOST_CA_BUNDLE=str(bundle), PARSL_FLUX_CACHE=str(tmp_path / "c"))).stdout
    build, run, _ = out.split("--\n")
    for opts, flag in ((build, "--build-arg"), (run, "-e")):
        assert "/etc/ssl" not in opts, "the CA must not shadow a file a package owns"
        assert f"{tmp_path}/c/host-ca:/run/parsl-flux-host-ca:ro" in opts
        for var in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"):
            assert f"{flag}\n{var}=/run/parsl-flux-host-ca/ca.crt" in opts
    assert (tmp_path / "c" / "host-ca" / "ca.crt").read_text() == bundle.read_text()
    dockerfile = (ROOT / "containers" / "Dockerfile").read_text()
    for var in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"):
        assert re.search(rf"^ARG {var}$", dockerfile, re.M), f"the Dockerfile does not declare ARG {var}"
