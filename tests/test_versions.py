"""A block whose Python or parsl-flux differs from the driver's is refused.

Functions defined in a workflow script travel as bytecode of the driver's
Python, and blocks run parsl-flux's own modules: a block of another Python
minor version or parsl-flux version would fail each task in its own way, or
run it wrongly. As with Parsl's HighThroughputExecutor (``VersionMismatch``),
the driver refuses the block when it registers, before sending it any task,
and every future fails with one error that names both sides' versions.
"""

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import parsl_flux
from parsl_flux.allocation import leftovers
from parsl_flux.wire import versions

HERE = versions.this_side()
PY = HERE[versions.PYTHON]
MAJOR, MINOR, _ = PY.split(".")


def test_the_same_minor_version_and_parsl_flux_are_compatible():
    assert versions.mismatch(HERE, HERE) is None
    assert versions.mismatch(HERE, {**HERE, versions.PYTHON: f"{MAJOR}.{MINOR}.99"}) is None


def test_another_python_minor_version_is_refused_naming_both():
    other = f"{MAJOR}.{int(MINOR) + 1}.0"
    problem = versions.mismatch(HERE, {**HERE, versions.PYTHON: other})
    assert problem is not None
    assert f"the block runs Python {other} and parsl-flux" in problem
    assert f"this driver Python {PY} and parsl-flux" in problem
    assert f"only Python {MAJOR}.{MINOR} runs" in problem
    assert "use the image (or compute-side install)" not in problem


def test_another_parsl_flux_is_refused_naming_both():
    problem = versions.mismatch(HERE, {**HERE, versions.PARSL_FLUX: "0.0.1"})
    assert problem is not None and "parsl-flux 0.0.1" in problem
    assert f"install) of parsl-flux {parsl_flux.__version__}" in problem and "bytecode" not in problem


def test_a_block_that_reports_no_versions_is_refused():
    """An older manager's REGISTER carries no versions: it cannot prove it can run the tasks."""
    problem = versions.mismatch(HERE, {})
    assert problem is not None and "the block runs Python unknown and parsl-flux unknown" in problem


def _other_parsl_flux(root: Path) -> Path:
    """A copy of this parsl-flux that calls itself another version: real code,
    as an image of another release holds."""
    package = root / "parsl_flux"
    shutil.copytree(Path(parsl_flux.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    init = package / "__init__.py"
    text = init.read_text()
    assert f'__version__ = "{parsl_flux.__version__}"' in text
    init.write_text(text.replace(f'__version__ = "{parsl_flux.__version__}"', '__version__ = "0.0.0+other"'))
    return root


@pytest.mark.flux
def test_a_block_of_another_parsl_flux_is_refused_and_every_future_fails_with_why(tmp_path, flux_path):
    other = _other_parsl_flux(tmp_path / "other")
    script = tmp_path / "workflow.py"
    script.write_text(textwrap.dedent(f"""
        import json, time
        import parsl
        from parsl.config import Config
        from parsl.providers import LocalProvider
        from parsl_flux import FluxExecutor

        @parsl.python_app
        def double(x):
            return 2 * x

        provider = LocalProvider(init_blocks=1, max_blocks=2, worker_init="export PYTHONPATH={other} PF_TEST_BLOCK={tmp_path.name}")
        config = Config(executors=[FluxExecutor(flux_path={flux_path!r}, provider=provider)], retries=2,
                        strategy_period=0.5, run_dir={str(tmp_path / "runinfo")!r})
        with parsl.load(config) as dfk:
            start = time.monotonic()
            futures = [double(i) for i in range(3)]
            errors = [repr(f.exception(timeout=60)) for f in futures]
            seconds = time.monotonic() - start
            executor = dfk.executors["FluxExecutor"]
            blocks = [len(executor.blocks_to_job_id)]
            later = double(7)
            later_error = repr(later.exception(timeout=60))
            time.sleep(3)  # a few strategy ticks: no block is launched after the refusal
            blocks.append(len(executor.blocks_to_job_id))
        print(json.dumps({{"errors": errors, "seconds": seconds, "later": later_error, "blocks": blocks}}))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = (f"the block runs Python {PY} and parsl-flux 0.0.0+other, "
                f"this driver Python {PY} and parsl-flux {parsl_flux.__version__}")
    for error in out["errors"] + [out["later"]]:
        assert error.startswith("VersionMismatch(") and expected in error, error
    assert out["seconds"] < 30, out
    assert out["blocks"][0] == out["blocks"][1], f"a block was launched after the refusal: {out}"
    manager_logs = list((tmp_path / "runinfo").rglob("*.stderr")) + list((tmp_path / "runinfo").rglob("*.log"))
    said = [p for p in manager_logs if "the driver refused this block" in p.read_text(errors="replace")]
    assert said, f"no block log says it was refused: {manager_logs}"
    deadline = time.monotonic() + 15
    mark = {"PF_TEST_BLOCK": tmp_path.name}
    while leftovers.processes_with_env(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers.processes_with_env(mark) == [], "the refused block left processes"
