"""Blocks that fail to start: a fault is survived, a broken configuration is not.

Regression of the 30-minute cluster soak (seed 11): after a driver restart, a
node was killed while the new run's first block started. Parsl's default block
error handler then set the executor to bad state (its only block had failed),
so every task of that run, with every retry, failed with
``TooManyJobFailuresError``. Here the first start fails for real, as a batch
job whose node is not ready does: the provider's ``worker_init`` exits 1.
"""

import json
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.flux


def _run(tmp_path, flux_path, worker_init: str, timeout: float) -> dict:
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

        provider = LocalProvider(init_blocks=1, max_blocks=1, worker_init={worker_init!r})
        config = Config(executors=[FluxExecutor(flux_path={flux_path!r}, provider=provider)], retries=1,
                        strategy_period=0.5, run_dir={str(tmp_path / "runinfo")!r})
        with parsl.load(config) as dfk:
            start = time.monotonic()
            futures = [double(i) for i in range(3)]
            outcomes = []
            for f in futures:
                error = f.exception(timeout={timeout})
                outcomes.append(repr(error) if error is not None else f.result())
            blocks = len(dfk.executors["FluxExecutor"].blocks_to_job_id)
        print(json.dumps({{"outcomes": outcomes, "seconds": time.monotonic() - start, "blocks": blocks}}))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout + 60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_first_block_that_fails_to_start_once_does_not_end_the_run(tmp_path, flux_path):
    failed_once = tmp_path / "first-start-failed"
    out = _run(tmp_path, flux_path, f"test -e {failed_once} || {{ touch {failed_once}; exit 1; }}", 90)
    assert failed_once.exists(), "the first block did not fail to start"
    assert out["outcomes"] == [0, 2, 4], out
    assert out["blocks"] == 2, out


def test_a_configuration_that_never_starts_a_block_still_ends_the_run(tmp_path, flux_path):
    """Three failed launches in a row, none ever registered (the second at once,
    the third after the back-off): every task fails with Parsl's error and the
    blocks' output, as with Parsl's default handler, only later."""
    started = time.monotonic()
    out = _run(tmp_path, flux_path, "echo 'no such module: flux' >&2; exit 1", 120)
    assert all(o.startswith("TooManyJobFailuresError(") for o in out["outcomes"]), out
    assert "no such module: flux" in out["outcomes"][0], out
    assert out["blocks"] == 3, out
    assert time.monotonic() - started < 90, out
