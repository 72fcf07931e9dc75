"""The Slurm site config against a real one-node Slurm (started by .ci/setup.d/20-slurm.sh).

A block goes SlurmProvider -> sbatch -> srun -> flux start -> manager, exactly as
`parsl-flux sites show slurm` prints it. Skipped (with the reason) where no
Slurm controller answers; CI starts one, so there they run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import TimeoutError as FutureTimeout

import parsl
import pytest
from parsl import python_app
from parsl_flux import sites
from parsl_flux.providers import SlurmProvider

pytestmark = pytest.mark.slurm


class _FastPollSlurmProvider(SlurmProvider):
    """SlurmProvider polling squeue every 2 s instead of 60 s, so that a failed
    block is noticed within seconds in a test."""

    status_polling_interval = 2  # type: ignore[assignment]


def _slurm_problem() -> str | None:
    if not shutil.which("sbatch"):
        return "sbatch is not on PATH"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`scontrol ping` failed: {exc}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"no Slurm controller answers `scontrol ping`: {(ping.stdout + ping.stderr).strip()}"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    problem = _slurm_problem()
    if problem:
        pytest.skip(f"{problem} (start one with .ci/setup.d/20-slurm.sh)")


def _load(tmp_path, flux_path: str, **options) -> parsl.DataFlowKernel:
    config = sites.make_config("slurm", flux_path=flux_path, address="127.0.0.1", walltime="00:05:00",
                               run_dir=str(tmp_path / "runinfo"), **options)
    executor = sites.flux_executor(config)
    executor.provider.__class__ = _FastPollSlurmProvider
    return parsl.load(config)


def _cleanup() -> None:
    try:
        parsl.dfk().cleanup()
    finally:
        parsl.clear()


def _squeue_jobs() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=20).stdout
    return set(out.split())


def test_status_command_reports_ended_jobs(slurm):
    """Without accounting, block status must come from ``squeue --states=all``,
    or a block that failed at once reads as COMPLETED and its tasks hang."""
    provider = SlurmProvider()
    if provider._cmd.startswith("sacct"):
        pytest.skip("this Slurm has accounting; sacct reports ended jobs itself")
    assert provider._cmd.startswith("squeue --states=all ")


def test_submits_through_sbatch(slurm, tmp_path):
    """The site config's provider really submits: the script lands in
    submit_scripts and Slurm knows the job."""
    before = _squeue_jobs()
    dfk = _load(tmp_path, "/nonexistent/flux")
    try:
        executor = dfk.executors["flux"]
        deadline = time.monotonic() + 60
        while not executor.blocks_to_job_id and time.monotonic() < deadline:
            time.sleep(0.2)
        assert executor.blocks_to_job_id, "no block was submitted within 60s"
        job_id = next(iter(executor.blocks_to_job_id.values()))
        assert job_id.isdigit()
        show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=20)
        assert f"JobId={job_id} " in show.stdout and job_id not in before, show.stdout + show.stderr
        # a block Slurm requeued would start for a driver that has replaced it
        assert "Requeue=0" in show.stdout.split(), show.stdout
        scripts = os.listdir(executor.provider.script_dir)
        assert any(s.startswith("parsl.flux.block-0") and not s.endswith((".stdout", ".stderr")) for s in scripts)
    finally:
        _cleanup()


def test_missing_flux_fails_future_in_bounded_time(slurm, tmp_path):
    """With no Flux where the job runs, the block fails and the app's future
    fails with an error naming the missing binary, within two minutes."""
    _load(tmp_path, "/nonexistent/flux")
    try:
        @python_app
        def answer():
            return 42

        start = time.monotonic()
        future = answer()
        try:
            error = future.exception(timeout=120)
        except FutureTimeout:
            pytest.fail("the future of an app on a block without Flux did not resolve in 120 s")
        assert error is not None, "an app ran although Flux does not exist"
        assert "/nonexistent/flux" in str(error), f"error does not name the missing flux: {error!r}"
        assert time.monotonic() - start < 120
    finally:
        _cleanup()


@pytest.mark.flux
def test_app_runs_through_slurm_and_flux(slurm, flux_path, tmp_path):
    """SlurmProvider -> sbatch -> srun -> flux start -> manager -> Flux job -> result."""
    dfk = _load(tmp_path, flux_path)
    try:
        @python_app
        def square(x):
            import os
            return x * x, os.environ.get("FLUX_URI") is not None

        futures = [square(i) for i in range(4)]
        assert [f.result(timeout=180) for f in futures] == [(i * i, True) for i in range(4)]
        assert dfk.executors["flux"].provider.resources, "no Slurm job was used"
    finally:
        _cleanup()


def test_blocks_are_not_requeued_unless_the_user_asks():
    """Pure: the option is in every block's script; a user's own ``--requeue`` wins."""
    assert SlurmProvider().scheduler_options.startswith("#SBATCH --no-requeue\n")
    asked = SlurmProvider(scheduler_options="#SBATCH --requeue")
    assert "--no-requeue" not in asked.scheduler_options and "#SBATCH --requeue" in asked.scheduler_options
