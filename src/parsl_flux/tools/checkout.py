"""Find the parsl-flux source checkout that the developer tools read.

A wheel install has no ``containers/`` and no ``tests/``; only an editable
install (or a copy such as the image's ``/opt/parsl-flux``) does. The tools
that need those files ask here, and get a clear error, rather than guessing
a path relative to the installed module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

SOURCE_ENV = "PARSL_FLUX_SOURCE"
"""Environment variable naming the checkout explicitly (also read by the image's test script)."""

MARKERS = ("pyproject.toml", "containers/Dockerfile")
"""Files that together mark a directory as a parsl-flux checkout."""


class SourceCheckoutNeeded(RuntimeError):
    """A tool command needs files that only a source checkout has."""


def is_checkout(path: Path) -> bool:
    """True when ``path`` holds every file of :data:`MARKERS`."""
    return all((path / marker).is_file() for marker in MARKERS)


def _candidates(cwd: Path) -> Iterator[Path]:
    """$PARSL_FLUX_SOURCE, then the directories above this module, then ``cwd`` and those above it."""
    explicit = os.environ.get(SOURCE_ENV)
    if explicit:
        yield Path(explicit)
        return
    yield from Path(__file__).resolve().parents
    yield cwd
    yield from cwd.parents


def source_root(purpose: str, cwd: Optional[Path] = None) -> Path:
    """The checkout's root directory.

    Parameters
    ----------
    purpose : str
        What needs it, for the error message (``"python -m parsl_flux.tools.images check"``).
    cwd : Path, optional
        Where to look when this module is not inside a checkout; default the
        current directory.

    Raises
    ------
    SourceCheckoutNeeded
        No candidate holds the marker files; the message names where it looked.
    """
    here = Path.cwd() if cwd is None else cwd
    for candidate in _candidates(here):
        if is_checkout(candidate):
            return candidate
    looked = f"at ${SOURCE_ENV}={os.environ[SOURCE_ENV]}" if os.environ.get(SOURCE_ENV) else \
        f"above {Path(__file__).resolve().parent} and above {here}"
    raise SourceCheckoutNeeded(
        f"{purpose} needs a parsl-flux source checkout ({' and '.join(MARKERS)}); none found {looked}. "
        f"Run it from a checkout, or set {SOURCE_ENV} to one.")
