"""The ``parsl-flux`` command: sites, sites show, doctor, run, image, bench.

Errors must be one ``parsl-flux: error: ...`` line and exit status 1, never a
traceback.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import parsl_flux
from parsl_flux import cli, sites
from parsl_flux.wire import versions

pytestmark = pytest.mark.usefixtures("clean_site_env")




def run(capsys, *argv: str) -> tuple:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, message: str) -> None:
    assert code == 1
    assert err.startswith("parsl-flux: error: ") and message in err
    assert "Traceback" not in err


def test_sites_lists_every_site(capsys):
    code, out, _ = run(capsys, "sites")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert listed == sites.names()
    assert out.splitlines()[0].split()[:4] == ["NAME", "BATCH", "LAUNCHER", "RUNTIME"]


def test_sites_show_prints_exactly_the_script(capsys):
    code, out, err = run(capsys, "sites", "show", "slurm", "--nodes", "4", "--walltime", "00:20:00")
    assert code == 0
    assert out.startswith("#!/bin/bash") and "#SBATCH --nodes=4" in out and "#SBATCH --time=20" in out
    srun = next(shlex.split(line) for line in out.splitlines() if line.startswith("srun "))
    assert srun[srun.index("--ntasks") + 1] == "4"
    assert any(line.startswith("# submit with: sbatch ") for line in err.splitlines())


def test_sites_show_with_container(capsys, tmp_path):
    sif = tmp_path / "img.sif"
    sif.write_text("")
    code, out, _ = run(capsys, "sites", "show", "polaris", "--account", "proj", "--image", str(sif),
                       "--set", "filesystems=home:grand")
    assert code == 0
    assert "#PBS -l filesystems=home:grand" in out and "apptainer exec --nv" in out and str(sif) in out


@pytest.mark.parametrize("argv, message", [
    (["sites", "show", "atlantis"], "unknown site 'atlantis'; known sites:"),
    (["sites", "show", "polaris", "--image", "/no/such/image.sif", "--account", "p"],
     "image file '/no/such/image.sif' does not exist"),
    (["sites", "show", "frontier", "--image", "/no/such.sif", "--account", "p"], "does not exist"),
    (["sites", "show", "slurm", "--walltime", "90"], "walltime '90' is not HH:MM:SS"),
    (["sites", "show", "slurm", "--nodes", "0"], "nodes=0 is not a whole number >= 1"),
    (["sites", "show", "local", "--queue", "debug"], "does not take 'queue'"),
    (["sites", "show", "slurm", "--set", "nonsense"], "expected KEY=VALUE"),
    (["sites", "show"], "sites show needs a site NAME"),
    (["run", "--site", "local", "missing_workflow.py"], "workflow script 'missing_workflow.py' does not exist"),
    (["doctor", "--site", "atlantis"], "unknown site 'atlantis'"),
    (["sites", "show", "slurm", "extra"], "unexpected argument 'extra': only `sites copy NAME DEST`"),
    (["sites", "copy"], "sites copy needs a site NAME"),
    (["sites", "copy", "atlantis"], "unknown site 'atlantis'"),
])
def test_clear_errors(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert_clean_error(code, err, message)


def test_missing_account(capsys, tmp_path):
    sif = tmp_path / "img.sif"
    sif.write_text("")
    code, _, err = run(capsys, "sites", "show", "theta", "--image", str(sif))
    assert_clean_error(code, err, "site 'theta' needs account: pass make_config(account=...) "
                                  "(parsl-flux: --account) or set PARSL_FLUX_ACCOUNT")


def test_doctor_machine_report(capsys):
    code, out, _ = run(capsys, "doctor")
    assert code == 0
    for what in ("python: parsl", "python: flux bindings", "flux", "mpi: mpiexec", "runtime: apptainer",
                 "batch: sbatch"):
        assert what in out


def test_doctor_says_when_the_flux_extra_is_missing(capsys, monkeypatch):
    monkeypatch.setattr("parsl_flux.driver.preflight.MANAGER_MODULES", ("_cffi_backend", "no_such_module_here"))
    code, out, _ = run(capsys, "doctor")
    assert code == 1
    assert "cannot import no_such_module_here: pip install 'parsl-flux[flux]'" in out


def test_doctor_site_says_what_is_missing(capsys, monkeypatch):
    monkeypatch.setenv("FLUX_PATH", "/nonexistent/flux")
    code, out, _ = run(capsys, "doctor", "--site", "local")
    assert code == 1
    assert "MISSING" in out and "flux (on the host)" in out and "site local: missing: flux (on the host)" in out


def test_doctor_site_with_a_keyword_it_does_not_take(capsys):
    code, out, err = run(capsys, "doctor", "--site", "local", "--queue", "debug")
    assert code == 1 and "site 'local' does not take 'queue'" in out and "Traceback" not in err


def test_doctor_site_with_unbuildable_config(capsys):
    code, out, _ = run(capsys, "doctor", "--site", "polaris")
    assert code == 1
    assert "PARSL_FLUX_IMAGE" in out and "submit: qsub" in out and "launcher: mpiexec" in out


@pytest.mark.flux
def test_doctor_local_with_flux(capsys, monkeypatch, flux_path):
    monkeypatch.setenv("FLUX_PATH", flux_path)
    code, out, _ = run(capsys, "doctor", "--site", "local")
    assert "ok       flux (on the host)" in out
    assert code == (0 if shutil.which("mpiexec") else 1)


def test_doctor_compares_the_compute_sides_versions_with_the_drivers():
    here = versions.this_side()
    python = here[versions.PYTHON]
    ok, detail = cli.compatible_versions(f"parsl-flux {parsl_flux.__version__} python {python}")
    assert ok and detail == f"Python {python} and parsl-flux {parsl_flux.__version__}"
    major, minor, micro = python.split(".")
    assert cli.compatible_versions(f"parsl-flux {parsl_flux.__version__} python {major}.{minor}.99")[0]
    ok, detail = cli.compatible_versions(f"parsl-flux 0.0.1 python {python}")
    assert not ok and "parsl-flux 0.0.1" in detail and f"parsl-flux {parsl_flux.__version__}" in detail
    ok, detail = cli.compatible_versions(f"parsl-flux {parsl_flux.__version__} python {major}.{int(minor) + 1}.0")
    assert not ok and f"Python {major}.{int(minor) + 1}.0" in detail and f"only Python {major}.{minor} runs" in detail
    ok, detail = cli.compatible_versions("parsl-flux 0.0.1")  # a probe line of another shape
    assert not ok and detail.startswith("parsl-flux 0.0.1: not parsl-flux's version line")


SIF = Path(os.environ.get("PARSL_FLUX_CLUSTER_SIF", Path(__file__).resolve().parents[1] / "parsl-flux.sif"))


def test_doctor_with_the_image_before_the_first_run(capsys):
    """What docs/site-user.md has a user run in a fresh directory: the run
    directory the site binds does not exist yet, and the check must not fail
    on it (Apptainer refused the missing bind: 'flux (in the image)' MISSING)."""
    if not SIF.is_file() or shutil.which("apptainer") is None:
        pytest.skip(f"needs apptainer and {SIF} (make sif)")
    code, out, _ = run(capsys, "doctor", "--site", "local", "--image", str(SIF), "--set", "runtime=apptainer")
    assert not os.path.exists("runinfo"), "doctor made the run directory"
    for what, detail in (("flux", "0.88"), ("mpi", "OpenRTE"), ("parsl-flux", f"and parsl-flux {parsl_flux.__version__}")):
        assert re.search(rf"^  ok +{what} \(in the image\) .*{re.escape(detail)}", out, re.MULTILINE), out
    assert code == 0, out


@pytest.mark.parametrize("command, module", [("image", "images"), ("bench", "bench")])
def test_delegated_commands(capsys, monkeypatch, command, module):
    seen = {}

    def main(argv):
        seen["argv"] = argv
        return 3

    fake = types.ModuleType(f"parsl_flux.tools.{module}")
    fake.main = main
    monkeypatch.setitem(sys.modules, f"parsl_flux.tools.{module}", fake)
    import parsl_flux.tools
    monkeypatch.setattr(parsl_flux.tools, module, fake, raising=False)
    code, _, _ = run(capsys, command, "sub", "--flag", "x")
    assert seen["argv"] == ["sub", "--flag", "x"] and code == 3


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("parsl-flux")
    if not exe.exists():
        pytest.skip("parsl-flux console script not installed in this environment")
    proc = subprocess.run([str(exe), "sites", "show", "nowhere"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "unknown site 'nowhere'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.flux
def test_run_workflow_on_local_site(tmp_path, flux_path):
    workflow = tmp_path / "wf.py"
    workflow.write_text(
        "import sys\n"
        "from parsl import python_app\n\n"
        "@python_app\n"
        "def add(a, b):\n"
        "    return a + b\n\n"
        "print('sum', add(int(sys.argv[1]), 2).result(timeout=120))\n")
    env = {**os.environ, "FLUX_PATH": flux_path}
    proc = subprocess.run([sys.executable, "-m", "parsl_flux.cli", "run", "--site", "local", str(workflow), "40"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sum 42" in proc.stdout


@pytest.mark.parametrize("command", ["sites", "doctor", "run", "image", "bench"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"parsl-flux {parsl_flux.__version__}"


def test_sites_without_any_config_says_so(monkeypatch, capsys):
    monkeypatch.setattr("parsl_flux.sites.names", lambda: [])
    assert cli.main(["sites"]) != 0
    assert "no site configs found" in capsys.readouterr().err


def test_missing_settings_are_reported_together(capsys):
    code, _, err = run(capsys, "sites", "show", "theta")
    assert_clean_error(code, err, "site 'theta' needs account and image: pass make_config(account=..., image=...) "
                                  "(parsl-flux: --account, --image) or set PARSL_FLUX_ACCOUNT, PARSL_FLUX_IMAGE")


def test_loopback_address_is_warned_about(capsys, monkeypatch, tmp_path):
    code, out, err = run(capsys, "sites", "show", "slurm", "--set", "address=127.0.0.1")
    assert code == 0 and "--url tcp://127.0.0.1:" in out
    assert err.startswith("# warning: managers would dial 127.0.0.1") and "compute nodes cannot reach" in err

    code, out, _ = run(capsys, "doctor", "--site", "slurm", "--set", "address=127.0.0.1")
    assert code == 1 and "MISSING  driver address" in out and "driver address" in out.splitlines()[-1]
    _, out, _ = run(capsys, "doctor", "--site", "slurm", "--set", "address=10.1.2.3")
    assert re.search(r"^  ok +driver address +managers dial 10\.1\.2\.3$", out, re.MULTILINE), out

    def stop(config):
        raise cli.CliError("stopped before starting blocks")

    monkeypatch.setattr("parsl.load", stop)
    (tmp_path / "wf.py").write_text("")
    code, _, err = run(capsys, "run", "--site", "slurm", "--set", "address=127.0.0.1", str(tmp_path / "wf.py"))
    assert code == 1 and err.startswith("parsl-flux: warning: managers would dial 127.0.0.1")
