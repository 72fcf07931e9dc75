"""What a block and its driver must share beyond the wire format.

A task's function travels as a pickle, and a function defined in the user's
script (as most are) is pickled *by value*: as Python bytecode, which only an
interpreter of the same minor version runs (another may refuse it, crash, or
run it wrongly). The block also runs the driver's own modules (the launch
line's, the runner), so the parsl-flux versions must be the same too. Parsl's
HighThroughputExecutor refuses a worker manager for the same reasons
(``VersionMismatch``); the driver here refuses a block at registration
(:meth:`parsl_flux.driver.io_loop.Driver`) and ``parsl-flux doctor`` checks
an image before any run.
"""

import sys
from typing import Dict, Mapping, Optional

PYTHON = "python"
PARSL_FLUX = "parsl-flux"


def this_side() -> Dict[str, str]:
    """The versions of this interpreter and this parsl-flux."""
    from parsl_flux import __version__

    return {PYTHON: "%d.%d.%d" % sys.version_info[:3], PARSL_FLUX: __version__}


def _minor(python: Optional[str]) -> Optional[str]:
    return ".".join(python.split(".")[:2]) if python else None


def mismatch(driver: Mapping[str, str], block: Mapping[str, str]) -> Optional[str]:
    """None when a block of versions ``block`` can run the tasks of a driver of
    versions ``driver``; else why not, naming both sides' versions.

    A field the block did not report (a parsl-flux older than this check)
    counts as different.
    """
    python_differs = _minor(driver.get(PYTHON)) != _minor(block.get(PYTHON))
    if not python_differs and driver.get(PARSL_FLUX) == block.get(PARSL_FLUX):
        return None
    why = []
    if python_differs:
        why.append(f"functions defined in the workflow script travel as Python {_minor(driver.get(PYTHON))} "
                   f"bytecode, which only Python {_minor(driver.get(PYTHON))} runs: create the driver's "
                   f"environment with the block's Python (or use an image built with the driver's)")
    if driver.get(PARSL_FLUX) != block.get(PARSL_FLUX):
        why.append(f"the block runs parsl-flux code of its own version: use the image (or compute-side "
                   f"install) of parsl-flux {driver.get(PARSL_FLUX)}")
    return (f"the block runs {describe(block)}, this driver {describe(driver)}; " + "; ".join(why))


def describe(versions: Mapping[str, str]) -> str:
    """``Python 3.11.2 and parsl-flux 0.1.0`` (``unknown`` for a field not reported)."""
    return f"Python {versions.get(PYTHON, 'unknown')} and parsl-flux {versions.get(PARSL_FLUX, 'unknown')}"
