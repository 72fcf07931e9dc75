"""Shared fixtures: locating a real Flux, and executors running on it.

Flux tests are marked ``flux`` and skip, with the reason, when no Flux is found
by :func:`parsl_flux.fluxpath.find_flux` (``FLUX_PATH``, then PATH, then the
prefix ``make flux`` builds). There is no fake Flux: everything that touches
Flux runs against a real broker. In CI (``PARSL_FLUX_NO_SKIPS=1``) every skip
is a failure, so no test can silently not run there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

from parsl_flux import fluxpath

ROOT = Path(__file__).resolve().parents[1]


NO_FLUX_REASON = ("no Flux found: set FLUX_PATH to the flux binary or its prefix, put flux on PATH, "
                  "or run `make flux` (builds flux-core from ../shared/vendor)")


def find_flux() -> Optional[str]:
    """The flux command by the package's one rule (:mod:`parsl_flux.fluxpath`), if it works."""
    path = fluxpath.find_flux()
    return path if path is not None and fluxpath.problem(path) is None else None


@pytest.fixture(scope="session")
def flux_path() -> str:
    path = find_flux()
    if path is None:
        pytest.skip(NO_FLUX_REASON)
    return path


@pytest.fixture
def clean_site_env(monkeypatch, tmp_path):
    """No PARSL_FLUX_* or FLUX_PATH from the caller's shell; run in a scratch directory."""
    for name in list(os.environ):
        if name.startswith("PARSL_FLUX_") or name == "FLUX_PATH":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


AS_FROM_A_TERMINAL = ["env", "--default-signal=INT"]
"""Prefix for a workflow script that a test interrupts with SIGINT, as Ctrl-C
in a terminal does. A shell that starts a command in the background (``&``,
as a CI runner or ``nohup ... &`` may) makes it ignore SIGINT, its children
inherit that, and Python then installs no KeyboardInterrupt handler: the
script would never see the test's SIGINT (what made two SIGINT tests time
out in runs started that way)."""


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def start_blocks(executor, n: int = 1, timeout: float = 60) -> None:
    """Scale out ``n`` blocks and wait until their managers registered."""
    before = sum(1 for b in executor.blocks.values() if b.live)
    executor.scale_out_facade(n)
    wait_for(lambda: sum(1 for b in executor.blocks.values() if b.live) >= before + n, timeout,
             f"{n} Flux block(s) to register")


@pytest.fixture(scope="session", autouse=True)
def broker_scratch() -> Iterator[Path]:
    """TMPDIR of every process the tests start, brokers included, removed after the session.

    Many tests SIGKILL brokers on purpose, and those of their own launch lines
    (``flux start --test-size=2``) have no ``rundir_guard``: their run and state
    directories would be left in ``/tmp`` and ``/var/tmp`` of the user's machine
    (7 from the failure tests alone). The path is short because Unix socket
    paths (MPI's, under a job's temporary directory) are limited to 108 bytes.
    This process's ``tempfile`` keeps its own directory (pytest's ``tmp_path``).
    """
    scratch = Path(tempfile.mkdtemp(prefix="pf-tests-", dir=tempfile.gettempdir()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(scratch))
        yield scratch
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def make_executor(flux_path: str, tmp_path: Path) -> Iterator:
    """Factory for started FluxExecutors on a local Flux; all are shut down after the test."""
    from parsl_flux import FluxExecutor

    made = []

    def make(blocks: int = 1, **kwargs) -> "FluxExecutor":
        kwargs.setdefault("flux_path", flux_path)
        kwargs.setdefault("heartbeat_threshold", 5.0)
        ex = FluxExecutor(**kwargs)
        ex.run_dir = str(tmp_path / f"run{len(made)}")
        ex.start()
        made.append(ex)
        if blocks:
            start_blocks(ex, blocks)
        return ex

    yield make
    for ex in made:
        if ex._driver.running:
            ex.shutdown(wait=False)


def pytest_collection_modifyitems(config, items):
    """Skip ``flux``-marked tests up front (one clear reason) when Flux is absent."""
    if find_flux() is not None:
        return
    skip = pytest.mark.skip(reason=NO_FLUX_REASON)
    for item in items:
        if "flux" in item.keywords:
            item.add_marker(skip)


NO_SKIP_ENV = "PARSL_FLUX_NO_SKIPS"
"""When set (CI sets it), a test that would skip fails instead: in CI a skip is a
test that did not run. Tests marked ``gpu`` may still skip on machines without
a GPU, with that reason."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get(NO_SKIP_ENV) or not report.skipped or "gpu" in item.keywords:
        return
    if hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped, but {NO_SKIP_ENV} is set (CI): {reason}"
