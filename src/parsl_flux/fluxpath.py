"""Finding and checking the ``flux`` command: one rule for every caller.

The executor's default ``flux_path``, the example workflow, the tests,
``parsl-flux doctor`` and the benchmarks all ask :func:`find_flux`, so they
cannot disagree about which Flux they use. The order is:

1. ``$FLUX_PATH``: the ``flux`` binary, or a directory holding ``flux`` or
   ``bin/flux`` (an installation prefix);
2. ``flux`` on ``PATH``;
3. the prefix that ``make flux`` builds (:func:`default_prefix`).

:func:`check_flux` turns what is wrong with a candidate into one line that
names the path and the fix, so a block never starts with a command that cannot
run (instead of a broker log that says ``flux: command not found``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Mapping, Optional

FLUX_CORE_VERSION = "0.88.0"
"""The flux-core release ``make flux`` builds and the tests run against."""

SUPPORTED_MAJOR = 0
"""flux-core major version whose Python API and ``flux start`` options we use."""

FIX = ("set FLUX_PATH to the flux binary or its installation prefix, put flux on PATH, "
       "or run `make flux` to build flux-core " + FLUX_CORE_VERSION)


class FluxNotFound(RuntimeError):
    """No usable ``flux`` command: the message is one line naming the path and the fix."""


def default_prefix(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where ``make flux`` (``mk/build-flux.sh``) installs flux-core: a per-user
    cache keyed by version, shared by every checkout of this project."""
    env = os.environ if environ is None else environ
    cache = env.get("PARSL_FLUX_CACHE") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "parsl-flux")
    return Path(cache) / f"flux-core-{FLUX_CORE_VERSION}"


def _in_directory(directory: Path) -> Path:
    """``flux`` inside an installation prefix or a bin directory; the directory
    itself when it holds neither (so :func:`problem` says exactly that)."""
    for candidate in (directory / "bin" / "flux", directory / "flux"):
        if candidate.is_file():
            return candidate
    return directory


def find_flux(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The ``flux`` command by the module's rule, or None when there is none.

    A ``$FLUX_PATH`` that is set wins even when it is wrong, so that the mistake
    is reported by :func:`check_flux` instead of silently using another Flux.
    """
    env = os.environ if environ is None else environ
    given = env.get("FLUX_PATH")
    if given:
        path = Path(given).expanduser()
        return str(_in_directory(path) if path.is_dir() else path)
    on_path = shutil.which("flux", path=env.get("PATH"))
    if on_path:
        return on_path
    built = default_prefix(env) / "bin" / "flux"
    return str(built) if built.is_file() and os.access(built, os.X_OK) else None


def problem(path: str) -> Optional[str]:
    """What is wrong with ``path`` as a ``flux`` command, or None (no process is run)."""
    p = Path(path)
    if p.is_dir():
        return f"flux command {path!r} is a directory without flux or bin/flux in it"
    if not p.exists():
        return f"flux command {path!r} does not exist"
    if not os.access(p, os.X_OK):
        return f"flux command {path!r} is not executable"
    return None


def flux_version(path: str, timeout: float = 20.0) -> str:
    """The version ``flux version`` reports (``commands:`` line).

    Raises
    ------
    FluxNotFound
        When it does not run or reports no version.
    """
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FluxNotFound(f"flux command {path!r} does not run ({exc}); {FIX}") from None
    match = re.search(r"^commands:\s+(\S+)", out.stdout, re.MULTILINE)
    if out.returncode != 0 or match is None:
        detail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [f"exit {out.returncode}"]
        raise FluxNotFound(f"flux command {path!r} failed: {detail[0]}; {FIX}")
    return match.group(1)


def check_flux(path: Optional[str], run: bool = True) -> str:
    """Return a usable ``flux`` command, or raise :class:`FluxNotFound`.

    Parameters
    ----------
    path : str, optional
        The candidate; None means "none was found".
    run : bool
        Also run ``flux version`` and check the major version (skip this where
        the command is only valid on another machine, such as a compute node).
    """
    if path is None:
        raise FluxNotFound(f"no flux command found; {FIX}")
    wrong = problem(path)
    if wrong:
        raise FluxNotFound(f"{wrong}; {FIX}")
    if run:
        version = flux_version(path)
        major = version.lstrip("v").split(".")[0]
        if major != str(SUPPORTED_MAJOR):
            raise FluxNotFound(f"flux command {path!r} is flux-core {version}; parsl-flux needs "
                               f"{SUPPORTED_MAJOR}.x ({FLUX_CORE_VERSION} is tested); {FIX}")
    return path


def require_flux(environ: Optional[Mapping[str, str]] = None) -> str:
    """:func:`find_flux` then :func:`check_flux`: the command, or one clear error."""
    return check_flux(find_flux(environ))
