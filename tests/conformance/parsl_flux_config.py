"""Config module for Parsl's own test suite, run against ``parsl_flux.FluxExecutor``.

Used as Parsl's CI uses its ``parsl/tests/configs/*.py`` modules::

    pytest <site-packages>/parsl/tests/ --config tests/conformance/parsl_flux_config.py

(``make conformance`` does this with the options of Parsl's per-config CI runs.)
Parsl's ``conftest.py`` loads this file by path, calls :func:`fresh_config`
once, ``parsl.load``\\ s the result around the whole session, and then sets the
executor's ``working_dir`` to its per-run ``pytest-parsl/parsltest-current``
directory under the current directory.

It is shaped like Parsl's ``htex_local.py``: one ``LocalProvider`` block
(``init_blocks=1``, ``max_blocks=1``) and ``strategy='none'``, so the block --
one ``flux start`` whose initial program is ``python -m parsl_flux.allocation.manager`` --
lives for the whole session. The ``flux`` command is the one
:func:`parsl_flux.fluxpath.find_flux` finds (``$FLUX_PATH``, then ``PATH``,
then the prefix ``make flux`` builds).

The run directory (``parsl.log``, ``flux_local/executor.log``, the provider's
submit scripts and the broker's stderr) is ``runinfo`` in a fresh temporary
directory, ``$TMPDIR/parsl-flux-conformance-*/``, or
``$PARSL_FLUX_CONFORMANCE_RUN_DIR`` when set (``make conformance`` sets it,
removes it after a green run and prints it after a red one). The block's
``manager.log`` is under the executor's ``working_dir``, which Parsl's conftest
sets (``pytest-parsl/parsltest-current/block-0/``).

This file is deliberately not named ``test_*.py``: the project's own
``pytest`` run (``testpaths = tests``) does not collect it.
"""

import os
import tempfile

from parsl.config import Config
from parsl.providers import LocalProvider

from parsl_flux import FluxExecutor
from parsl_flux.fluxpath import find_flux

RUN_DIR_ENV = "PARSL_FLUX_CONFORMANCE_RUN_DIR"


def run_dir() -> str:
    """``$PARSL_FLUX_CONFORMANCE_RUN_DIR``, else ``runinfo`` in a new temporary directory."""
    given = os.environ.get(RUN_DIR_ENV)
    if given:
        return os.path.abspath(given)
    return os.path.join(tempfile.mkdtemp(prefix="parsl-flux-conformance-"), "runinfo")


def fresh_config() -> Config:
    return Config(
        executors=[
            FluxExecutor(
                label="flux_local",
                flux_path=find_flux(),
                provider=LocalProvider(
                    init_blocks=1,
                    max_blocks=1,
                ),
            )
        ],
        run_dir=run_dir(),
        strategy='none',
    )
