"""A site user's MPI application: LAMMPS in an image built FROM the parsl-flux image.

``examples/lammps/workflow.py`` runs LAMMPS' LJ melt as one 2-rank Flux job
through ``parsl-flux run``, as a user would:

* across both nodes of the 2-node virtual Slurm cluster, ``--site slurm`` with
  the application SIF under Apptainer (one rank per node);
* on one node, ``--site local`` with the application image under Podman.

Each run's final thermo line must equal that of the same input run by
``mpirun -n 2`` inside the same image, and LAMMPS must report one 2-rank MPI
world (two 1-rank worlds would mean PMI never reached the ranks). The time
from submit to result, less ``mpirun``'s own time, is the executor's overhead
(printed; ``-s`` shows it).

Needs: ``make app-image app-sif`` (``PARSL_FLUX_APP_SIF``,
``PARSL_FLUX_APP_IMAGE``), and for the cluster case ``make cluster-up``.
Skipped, naming what is missing, otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "lammps"))
import lj  # noqa: E402

from test_cluster import CLUSTER_CONF, DRIVER_ADDRESS, _cluster_problem  # noqa: E402

pytestmark = [pytest.mark.cluster]

APP_SIF = Path(os.environ.get("PARSL_FLUX_APP_SIF", ROOT / "parsl-flux-lammps.sif"))
APP_IMAGE = os.environ.get("PARSL_FLUX_APP_IMAGE", "parsl-flux-lammps:dev")
WORKFLOW = ROOT / "examples" / "lammps" / "workflow.py"
PARSL_FLUX = [sys.executable, "-m", "parsl_flux.cli"]
MPIRUN = ["env", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
          "mpirun", "-n", "2", "--oversubscribe", "lmp", "-in", "in.lj", "-log", "none"]


def _podman_has(image: str) -> bool:
    return shutil.which("podman") is not None and subprocess.run(
        ["podman", "image", "exists", image], capture_output=True).returncode == 0


def _reference(argv: List[str]) -> Dict:
    """The same input under ``mpirun -n 2`` in the image: final thermo line and seconds."""
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    loop = lj.loop(done.stdout)
    assert loop is not None and loop["procs"] == 2, done.stdout[-2000:]
    return {"final_thermo": lj.final_thermo(done.stdout), "seconds": seconds}


def _run_workflow(argv: List[str], result: Path, env: Dict[str, str], cwd: Path) -> Dict:
    started = time.monotonic()
    done = subprocess.run([*PARSL_FLUX, "run", *argv, str(WORKFLOW), "--result", str(result),
                           "--runs", "2", *(["--nodes", "2"] if "slurm" in argv else ["--nodes", "1"])],
                          capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    assert done.returncode == 0 and result.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    outcome = json.loads(result.read_text())
    outcome["run_seconds"] = time.monotonic() - started
    return outcome


def _report(where: str, outcome: Dict, reference: Dict) -> None:
    first, steady = outcome["app_seconds"]
    print(f"\n{where}: final thermo {outcome['final_thermo']!r}; submit to result {first:.2f} s (block start-up "
          f"included), then {steady:.2f} s; mpirun -n 2 {reference['seconds']:.2f} s; executor overhead "
          f"{steady - reference['seconds']:+.2f} s; whole `parsl-flux run` {outcome['run_seconds']:.1f} s")


def test_lammps_across_two_cluster_nodes_with_apptainer(tmp_path):
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)
    if not APP_SIF.exists():
        pytest.skip(f"no application SIF {APP_SIF} (make app-image app-sif, or set PARSL_FLUX_APP_SIF)")
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    shutil.copy(WORKFLOW.parent / "in.lj", ref_dir)
    reference = _reference(["apptainer", "exec", "--pwd", str(ref_dir), str(APP_SIF), *MPIRUN])
    env = {**os.environ, "SLURM_CONF": str(CLUSTER_CONF)}
    outcome = _run_workflow(["--site", "slurm", "--image", str(APP_SIF), "--nodes", "2", "--walltime", "00:15:00",
                             "--set", f"address={DRIVER_ADDRESS}", "--set", f"run_dir={tmp_path / 'runinfo'}"],
                            tmp_path / "result.json", env, tmp_path)
    assert outcome["loop"]["procs"] == 2, outcome  # one MPI world of 2 ranks, not two of 1
    assert outcome["same_every_run"], outcome
    assert outcome["spec"] == {"num_tasks": 2, "num_nodes": 2}
    assert outcome["final_thermo"] == reference["final_thermo"]
    _report("slurm, 2 nodes, apptainer", outcome, reference)


def test_lammps_on_one_node_with_podman(tmp_path):
    if not _podman_has(APP_IMAGE):
        pytest.skip(f"no application image {APP_IMAGE} in podman (make app-image, or set PARSL_FLUX_APP_IMAGE)")
    reference = _reference(["podman", "run", "--rm", "--user", "0:0", "-w", "/opt/lammps", "--entrypoint", "env",
                            APP_IMAGE, *MPIRUN[1:]])
    outcome = _run_workflow(["--site", "local", "--image", APP_IMAGE, "--set", "runtime=podman",
                             "--set", f"run_dir={tmp_path / 'runinfo'}"],
                            tmp_path / "result.json", dict(os.environ), tmp_path)
    assert outcome["loop"]["procs"] == 2 and outcome["same_every_run"], outcome
    assert outcome["spec"] == {"num_tasks": 2, "num_nodes": 1}
    assert outcome["final_thermo"] == reference["final_thermo"]
    _report("local, 1 node, podman", outcome, reference)
