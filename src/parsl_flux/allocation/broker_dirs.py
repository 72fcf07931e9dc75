"""The directories a block's own Flux broker leaves behind when it is killed,
and whether that broker still runs.

A broker creates a run directory (``/tmp/flux-XXXXXX``: its sockets, job
shells' temporary files) and a state directory (``/var/tmp/flux-XXXXXX``: the
KVS content database, hundreds of KiB) and removes both when it shuts down. A
broker that dies by SIGKILL (the OOM killer, this manager ending a hung
broker, a fault) removes neither, and on a shared node they pile up, one pair
per lost block. The manager outlives its broker, so it removes them: only the
ones the broker created itself (``rundir-cleanup``/``statedir-cleanup`` set, as
opposed to directories a user named), and only once that broker is gone.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from typing import Any, List, Tuple

logger = logging.getLogger(__name__)

DIR_ATTRS = ("rundir", "statedir")
"""Broker attributes naming a directory; ``<name>-cleanup`` says the broker made it."""


@dataclass(frozen=True)
class BrokerDirs:
    """A broker's pid and the directories it would remove on a clean shutdown."""

    pid: int
    paths: Tuple[str, ...]


def read_broker_dirs(handle: Any, broker_pid: int) -> BrokerDirs:
    """The directories the broker behind ``handle`` created (read while it runs)."""
    paths = []
    for name in DIR_ATTRS:
        try:
            if handle.attr_get(f"{name}-cleanup") == "1":
                paths.append(handle.attr_get(name))
        except OSError:  # no such attribute: nothing this broker made
            continue
    return BrokerDirs(broker_pid, tuple(paths))


def is_live_broker(pid: int) -> bool:
    """Whether ``pid`` is a running Flux broker (a zombie or a reused pid is not).

    The manager's parent is one when the manager is its initial program (start
    mode: the block's own instance); in attach mode the parent is ``flux proxy``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            comm, rest = f.read().rsplit(")", 1)
    except (OSError, ValueError):
        return False
    return comm.split("(", 1)[-1].startswith("flux-broker") and rest.split()[0] != "Z"


def remove_when_gone(dirs: BrokerDirs, timeout: float) -> List[str]:
    """Remove ``dirs.paths`` once the broker has exited (waiting up to ``timeout``
    s for a SIGKILL to land); a broker still running keeps them. The paths removed."""
    deadline = time.monotonic() + timeout
    while is_live_broker(dirs.pid):
        if time.monotonic() >= deadline:
            logger.warning("Flux broker %d still runs; leaving its directories %s", dirs.pid, dirs.paths)
            return []
        time.sleep(0.1)
    removed = []
    for path in dirs.paths:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("could not remove the dead broker's directory %s: %s", path, exc)
            continue
        removed.append(path)
    return removed
