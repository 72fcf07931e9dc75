"""Processes a task leaves behind, found by the environment they inherited.

A Flux job ends when its task's processes close their output, so an app that
starts a daemon (which keeps stdout open, or leaves the job's process group
with ``setsid``) can keep its job, its cores and its future busy forever, and
survive the end of its block. Every process a runner starts inherits the
runner's environment, including this manager's task-server address and the
task id, unless it scrubs its environment on purpose. So the manager can find
what a task left behind on its own node by reading ``/proc/<pid>/environ``
(possible for processes of the same user), without cgroups or a systemd.
"""

from __future__ import annotations

import os
import signal
from typing import Callable, List, Mapping


def processes_where(match: Callable[[List[bytes]], bool]) -> List[int]:
    """PIDs (not ours) whose environment, as its ``NAME=value`` entries, satisfies ``match``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:  # gone, or another user's
            continue
        if match(env):
            found.append(int(entry.name))
    return found


def processes_with_env(wanted: Mapping[str, str]) -> List[int]:
    """PIDs (not ours) whose environment holds every ``wanted`` assignment."""
    needles = [f"{k}={v}".encode() for k, v in wanted.items()]
    return processes_where(lambda env: all(n in env for n in needles))


def kill_all(pids: List[int]) -> int:
    """SIGKILL each of ``pids``; the number that were still there."""
    killed = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except OSError:
            pass
    return killed
