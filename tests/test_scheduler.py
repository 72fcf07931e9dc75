"""Which scheduler a block's Flux instance runs.

The published base image (``fluxrm/flux-sched``) runs Fluxion, so users'
blocks do; the stand-in built here must too, or the in-image suite and the
2-node Apptainer block would test sched-simple instead (its start-up scripts
were once installed where flux-core never looked). Expected: the scheduler
named by ``PARSL_FLUX_EXPECT_SCHEDULER`` (the in-image suite sets it to
``sched-fluxion-qmanager``), else Fluxion wherever the Flux installation has
its modules, else sched-simple.
"""

import os
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

pytestmark = pytest.mark.flux

cloudpickle.register_pickle_by_value(sys.modules[__name__])

FLUXION = "sched-fluxion-qmanager"
SIMPLE = "sched-simple"


def loaded_modules() -> list:
    """In the job: the modules of the instance it runs in (its block)."""
    out = subprocess.run(["flux", "module", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


def expected_scheduler(flux_path: str) -> str:
    given = os.environ.get("PARSL_FLUX_EXPECT_SCHEDULER")
    if given:
        return given
    prefix = Path(flux_path).resolve().parents[1]
    return FLUXION if any(prefix.glob(f"lib*/flux/modules/{FLUXION}*")) else SIMPLE


def test_block_runs_the_installed_scheduler(make_executor, flux_path):
    modules = make_executor().submit(loaded_modules, {}).result(timeout=120)
    want = expected_scheduler(flux_path)
    assert want in modules, f"the block runs {[m for m in modules if m.startswith('sched')]}, not {want}"
    if want == FLUXION:
        assert SIMPLE not in modules
