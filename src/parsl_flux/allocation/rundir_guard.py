"""Start one node's Flux broker with a run directory that goes when the broker does.

Every broker of a block creates a run directory (``${TMPDIR:-/tmp}/flux-XXXXXX``:
its sockets, job shells' files) and removes it only on a clean shutdown. A
broker killed by SIGKILL (the OOM killer, a fault, a hung broker ended) leaves
it, and on a shared node they pile up, one per lost block. Rank 0's manager
removes its own broker's directories (:mod:`parsl_flux.allocation.broker_dirs`),
but the other ranks run no parsl-flux process to do it.

So the launch line runs ``python -m parsl_flux.allocation.rundir_guard FLUX
start ARGS...`` on every node. It makes the directory itself, forks a watcher,
and then *execs* ``FLUX start -Srundir=DIR -Srundir-cleanup=1 ARGS...``: the
launcher's process stays the broker (same pid, signals, PMI file descriptors
and exit status as a plain ``flux start``). The watcher leaves the process group
and ignores the signals a launcher sends to a step, waits for the broker to
exit, however it exits, and removes the directory if it is still there (a
clean broker has removed it already). Only a kill of the watcher itself (a node
lost, a Slurm step's cgroup killed before the broker) leaves it.

A broker that did not shut down cleanly also leaves its jobs' processes
running, reparented to init: the job shells go with the broker, the apps do not,
and they hold the node's cores and memory until they end by themselves. A batch
system that tracks a job's processes by parent or group (Slurm's
``proctrack/linuxproc`` or ``pgid``, a container without cgroups) does not find
them when the block's job ends. So the watcher first kills them: each carries,
in its environment, the job temporary directory its shell made under the
broker's run directory (``FLUX_JOB_TMPDIR=RUNDIR/jobtmp-...``).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import tempfile
import time
from typing import List, NoReturn, Sequence

from parsl_flux.allocation import leftovers

POLL_S = 0.5
"""How often the watcher checks its parent where ``pidfd_open`` is missing (Linux < 5.3)."""
KILL_ROUNDS = 5
"""Scans for the dead broker's job processes, 0.1 s apart: one that forked while
the others were killed is found by the next."""


class UsageError(ValueError):
    """The command is not ``FLUX start ...``."""


def broker_argv(command: Sequence[str], rundir: str) -> List[str]:
    """``FLUX start ARGS...`` with the broker told to use ``rundir`` and remove it.

    The attributes go right after ``start``, before the initial program.
    """
    if len(command) < 2 or command[1] != "start":
        raise UsageError(f"expected 'FLUX start [ARGS...]', got {list(command)!r}")
    return [command[0], "start", f"-Srundir={rundir}", "-Srundir-cleanup=1", *command[2:]]


def _wait_for_exit(pid: int) -> None:
    """Return once process ``pid`` (our parent, the broker-to-be) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        with os.fdopen(fd) as pidfd:
            if os.getppid() == pid:  # else it died before the pidfd was opened
                select.select([pidfd], [], [])
        return
    while os.getppid() == pid:
        time.sleep(POLL_S)


def jobs_left(rundir: str) -> List[int]:
    """Processes of the Flux jobs of the broker whose run directory is ``rundir``."""
    mark = f"FLUX_JOB_TMPDIR={rundir}/".encode()
    return leftovers.processes_where(lambda env: any(entry.startswith(mark) for entry in env))


def _end_jobs_left(rundir: str) -> None:
    for _ in range(KILL_ROUNDS):
        if not leftovers.kill_all(jobs_left(rundir)):
            return
        time.sleep(0.1)


def _watch(parent: int, rundir: str) -> NoReturn:
    """The watcher process: outlive the broker, then end what its jobs left and remove ``rundir``."""
    try:
        os.setsid()  # a signal to the step's process group is the broker's, not ours
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the launcher waits for the step's output to close: not for us
            os.dup2(devnull, fd)
        os.closerange(3, max(os.sysconf("SC_OPEN_MAX"), 1024))  # PMI's and the launcher's sockets
        _wait_for_exit(parent)
        _end_jobs_left(rundir)
        shutil.rmtree(rundir, ignore_errors=True)
    finally:
        os._exit(0)


def main(argv: Sequence[str]) -> NoReturn:
    """Make the run directory, fork its watcher, exec the broker."""
    try:
        broker_argv(argv, "-")
    except UsageError as exc:
        sys.exit(f"rundir_guard: {exc}")
    rundir = tempfile.mkdtemp(prefix="flux-")  # 0700, under ${TMPDIR:-/tmp} as the broker's own would be
    parent = os.getpid()
    if os.fork() == 0:
        _watch(parent, rundir)
    try:
        os.execvp(argv[0], broker_argv(argv, rundir))
    except OSError as exc:
        shutil.rmtree(rundir, ignore_errors=True)
        sys.exit(f"rundir_guard: cannot run {argv[0]!r}: {exc}")


if __name__ == "__main__":
    main(sys.argv[1:])
