"""``rundir_guard``: each node's broker gets a run directory that goes however the broker ends.

Against real Flux: one ``flux start`` per node is what a block's launcher runs,
and a broker of any rank behaves the same here (rank 0's manager also cleans up
after its own broker; ranks > 0 have only the guard). The 2-node version, a
rank-1 broker SIGKILLed on the virtual cluster, is in ``tests/test_cluster.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import wait_for
from parsl_flux.allocation import leftovers, rundir_guard

START_S = 30
WHILE_BROKER_LIVES = ("sh", "-c", "while kill -0 $PPID 2>/dev/null; do sleep 0.1; done")
"""An initial program that ends with its broker: a SIGKILLed broker leaves no orphan behind."""


def _guarded(flux_path: str, *program: str) -> List[str]:
    return [sys.executable, "-m", "parsl_flux.allocation.rundir_guard", flux_path, "start", *program]


def _env(tmp_path: Path) -> Dict[str, str]:
    """Brokers make their directories under TMPDIR: the test's own."""
    return {**os.environ, "TMPDIR": str(tmp_path)}


def _run_dirs(tmp_path: Path) -> List[Path]:
    """Run directories (a broker's ``local-RANK`` socket is in its run directory)."""
    return sorted(p.parent for p in tmp_path.glob("flux-*/local-*"))


def _children(pid: int) -> List[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _started(broker: subprocess.Popen, tmp_path: Path) -> Path:
    wait_for(lambda: _run_dirs(tmp_path) or broker.poll() is not None, START_S, "the broker's run directory")
    assert broker.poll() is None, f"flux start exited with {broker.returncode}"
    (rundir,) = _run_dirs(tmp_path)
    return rundir


def test_broker_argv_puts_the_attributes_before_the_initial_program():
    assert rundir_guard.broker_argv(["/f/flux", "start", "-o,-v", "prog", "-x"], "/tmp/d") == \
        ["/f/flux", "start", "-Srundir=/tmp/d", "-Srundir-cleanup=1", "-o,-v", "prog", "-x"]
    for bad in ([], ["flux"], ["flux", "proxy", "local:///x"]):
        with pytest.raises(rundir_guard.UsageError, match="FLUX start"):
            rundir_guard.broker_argv(bad, "/tmp/d")


@pytest.mark.flux
def test_a_sigkilled_broker_leaves_no_run_directory(flux_path: str, tmp_path: Path) -> None:
    broker = subprocess.Popen(_guarded(flux_path, *WHILE_BROKER_LIVES), env=_env(tmp_path))
    try:
        rundir = _started(broker, tmp_path)
        comm = Path(f"/proc/{broker.pid}/comm").read_text()
        assert comm.startswith("flux-broker"), f"the launcher's process is {comm!r}, not the broker"
        os.kill(broker.pid, signal.SIGKILL)
        assert broker.wait(timeout=10) == -signal.SIGKILL
        wait_for(lambda: not rundir.exists(), 10, f"the killed broker's run directory {rundir} to go")
    finally:
        broker.kill()
        broker.wait()


@pytest.mark.flux
def test_without_the_guard_a_sigkilled_broker_leaves_its_run_directory(flux_path: str, tmp_path: Path) -> None:
    """The control: what the guard is for (so the test above can fail)."""
    broker = subprocess.Popen([flux_path, "start", *WHILE_BROKER_LIVES], env=_env(tmp_path))
    try:
        rundir = _started(broker, tmp_path)
        os.kill(broker.pid, signal.SIGKILL)
        broker.wait(timeout=10)
        time.sleep(1)
        assert rundir.exists()
    finally:
        broker.kill()
        broker.wait()


def _job_then_wait(mark: str) -> List[str]:
    """An initial program that starts a long job carrying ``mark`` in its environment, then lives as its broker."""
    return ["sh", "-c", f"flux submit --env=PF_GUARD_MARK={mark} sleep 300 >/dev/null; "
                        "while kill -0 $PPID 2>/dev/null; do sleep 0.1; done"]


@pytest.mark.flux
@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "control-without-guard"])
def test_a_sigkilled_brokers_job_processes_do_not_outlive_it(flux_path: str, tmp_path: Path, guarded: bool) -> None:
    """The job shells die with a SIGKILLed broker, the apps do not (reparented to
    init, found by no batch system that tracks processes by parent): the watcher
    kills them. The control shows the app outliving an unguarded broker."""
    mark = {"PF_GUARD_MARK": tmp_path.name}
    program = _job_then_wait(tmp_path.name)
    broker = subprocess.Popen(_guarded(flux_path, *program) if guarded else [flux_path, "start", *program],
                              env=_env(tmp_path))
    try:
        _started(broker, tmp_path)
        wait_for(lambda: leftovers.processes_with_env(mark), START_S, "the job's sleep to start")
        os.kill(broker.pid, signal.SIGKILL)
        broker.wait(timeout=10)
        if guarded:
            wait_for(lambda: not leftovers.processes_with_env(mark), 10, "the dead broker's job to be killed")
        else:
            time.sleep(2)
            assert leftovers.processes_with_env(mark), "without the guard the job's process outlives its broker"
    finally:
        broker.kill()
        broker.wait()
        leftovers.kill_all(leftovers.processes_with_env(mark))


@pytest.mark.flux
def test_a_daemon_a_job_left_is_killed_when_its_broker_ends_cleanly(flux_path: str, tmp_path: Path) -> None:
    """A task that started a daemon (``setsid``, every fd of the job closed, so
    its job finished): on nodes other than the manager's nothing else finds it
    when the block ends."""
    mark = {"PF_GUARD_MARK": tmp_path.name}
    program = ["sh", "-c", f"flux run --env=PF_GUARD_MARK={tmp_path.name} "
                           "bash -c 'eval \"exec $PMI_FD>&-\"; setsid sleep 300 </dev/null >/dev/null 2>&1 & sleep 1'"]
    try:
        done = subprocess.run(_guarded(flux_path, *program), env=_env(tmp_path), capture_output=True, text=True,
                              timeout=START_S)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: not leftovers.processes_with_env(mark), 10, "the daemon to be killed")
    finally:
        leftovers.kill_all(leftovers.processes_with_env(mark))


@pytest.mark.flux
def test_the_group_signal_ends_the_broker_cleanly_and_nothing_stays(flux_path: str, tmp_path: Path) -> None:
    """A provider's cancel signals the block's process group: the broker shuts
    down (its exit status is the initial program's, as without the guard) and
    the watcher, which ignores it, is not left behind."""
    broker = subprocess.Popen(_guarded(flux_path, *WHILE_BROKER_LIVES), env=_env(tmp_path), start_new_session=True)
    try:
        rundir = _started(broker, tmp_path)
        watchers = [pid for pid in _children(broker.pid)
                    if b"rundir_guard" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(watchers) == 1, "the broker's watcher is its child"
        os.killpg(broker.pid, signal.SIGTERM)
        assert broker.wait(timeout=30) != 0
        wait_for(lambda: not rundir.exists(), 10, f"the run directory {rundir} to go")
        wait_for(lambda: not Path(f"/proc/{watchers[0]}").exists(), 10, "the watcher to exit")
    finally:
        broker.kill()
        broker.wait()


@pytest.mark.flux
def test_exit_status_is_the_initial_programs_and_nothing_stays(flux_path: str, tmp_path: Path) -> None:
    done = subprocess.run(_guarded(flux_path, "sh", "-c", "exit 3"), env=_env(tmp_path), capture_output=True,
                          text=True, timeout=START_S)
    assert done.returncode == 3, done.stderr
    wait_for(lambda: not list(tmp_path.iterdir()), 10, f"{sorted(tmp_path.iterdir())} to go")


def test_a_command_that_is_not_flux_start_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "parsl_flux.allocation.rundir_guard", "flux", "proxy", "x"],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "expected 'FLUX start" in done.stderr
    assert not list(tmp_path.iterdir()), "nothing is made for a command that does not run"
