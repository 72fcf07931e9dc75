"""What the manager's interpreter must import, checked before a block starts.

The manager imports Flux's Python bindings, which come with flux-core but
need ``cffi`` (and ``yaml``, ``ply``) in the interpreter that imports them:
the ``flux`` extra. Without it every block failed only once running, each
task with ``No module named '_cffi_backend'``, then the workflow with
``TooManyJobFailuresError``; here it is one line, with the fix, at start.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import List, Optional

MANAGER_MODULES = ("_cffi_backend", "yaml", "ply", "zmq")
"""Modules Flux's bindings (the first three) and the manager need."""
FIX = "pip install 'parsl-flux[flux]'"


class ManagerPythonIncomplete(RuntimeError):
    """The interpreter that would run the manager lacks a module it needs."""


def missing_modules(python: str) -> List[str]:
    """Which of :data:`MANAGER_MODULES` ``python`` cannot import (this
    interpreter is asked directly; another one in a subprocess)."""
    if python == sys.executable:
        return [m for m in MANAGER_MODULES if importlib.util.find_spec(m) is None]
    probe = ("import importlib.util as u; print(' '.join(m for m in %r if u.find_spec(m) is None))"
             % (MANAGER_MODULES,))
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"(cannot run {python}: {exc})"]
    if out.returncode != 0:
        return [f"(cannot run {python}: {(out.stderr.strip().splitlines() or ['exit %d' % out.returncode])[-1]})"]
    return out.stdout.split()


def problem(python: str) -> Optional[str]:
    """One line saying what ``python`` lacks to run a manager and how to fix it; None when nothing."""
    missing = missing_modules(python)
    if not missing:
        return None
    return (f"the manager's Python ({python}) cannot import {', '.join(missing)}, which Flux's Python "
            f"bindings and the manager need: {FIX}")


def check(python: str) -> None:
    """Raise :class:`ManagerPythonIncomplete` with :func:`problem`'s line when there is one."""
    line = problem(python)
    if line is not None:
        raise ManagerPythonIncomplete(line)
