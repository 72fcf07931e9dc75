"""The allocation side imports no Parsl; the job side imports nothing heavy.

The manager runs inside every block, often in the image's interpreter: it must
not pay for (or depend on) Parsl's 120-odd modules, which it once imported by
accident through ``resources`` -> ``errors`` -> ``parsl.executors.errors``.
Each check imports the module in a fresh interpreter and lists what came in.
"""

import json
import subprocess
import sys

import pytest

ALLOCATION_SIDE = ["parsl_flux.manager", "parsl_flux.flux_backend", "parsl_flux.task_server",
                   "parsl_flux.leftovers", "parsl_flux.bytecode", "parsl_flux.mpi_allocation",
                   "parsl_flux.peers", "parsl_flux.node_watch", "parsl_flux.shape"]
JOB_SIDE = ["parsl_flux.runner", "parsl_flux.mpi_job"]
HEAVY = ("parsl", "zmq", "cloudpickle", "flux", "tblib", "typeguard")


def _modules_after_import(module: str) -> list:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("module", ALLOCATION_SIDE)
def test_allocation_side_imports_no_parsl(module):
    parsl = [m for m in _modules_after_import(module) if m == "parsl" or m.startswith("parsl.")]
    assert parsl == [], f"{module} imports {len(parsl)} Parsl modules, e.g. {parsl[:5]}"


@pytest.mark.parametrize("module", JOB_SIDE)
def test_job_side_imports_nothing_heavy(module):
    heavy = [m for m in _modules_after_import(module) if m.split(".")[0] in HEAVY]
    assert heavy == [], f"{module} imports {heavy[:8]}"
