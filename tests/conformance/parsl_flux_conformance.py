"""pytest plugin for ``make conformance``: Parsl's test suite with this executor.

Loaded with ``-p parsl_flux_conformance`` (``tests/conformance`` on
``PYTHONPATH``) next to Parsl's own ``conftest.py``. It marks every test listed
in ``known_failures.txt`` (beside this file) as xfail with the reason given
there: ``xfail(strict=True)`` for kind ``fails`` (the run turns red once the
test passes, so the list cannot outlive the fix), ``xfail(strict=False)`` for
kind ``flaky``. A listed id that names no test of the installed Parsl is an
error.

The ids are relative to ``parsl/tests/``, so they do not depend on where Parsl
is installed or on pytest's rootdir.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

KNOWN_FAILURES = Path(__file__).with_name("known_failures.txt")
ANCHOR = "parsl/tests/"


KINDS = {"fails": True, "flaky": False}
"""Kind of known failure -> ``strict`` of its xfail mark."""


def load_known_failures(path: Path = KNOWN_FAILURES) -> Dict[str, Tuple[str, str]]:
    """``{test id relative to parsl/tests/: (kind, reason)}`` from ``path``."""
    known: Dict[str, Tuple[str, str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        where = f"{path}:{number}"
        if len(fields) < 3:
            raise pytest.UsageError(f"{where}: expected '<test id> <kind> <reason>', got {line!r}")
        test_id, kind, reason = fields
        if kind not in KINDS:
            raise pytest.UsageError(f"{where}: kind {kind!r} of {test_id!r} is not one of {sorted(KINDS)}")
        if test_id in known:
            raise pytest.UsageError(f"{where}: {test_id!r} is listed twice")
        known[test_id] = (kind, reason)
    return known


def relative_id(nodeid: str) -> str:
    """A node id relative to ``parsl/tests/`` (unchanged when it is not under it)."""
    index = nodeid.replace(os.sep, "/").rfind(ANCHOR)
    return nodeid[index + len(ANCHOR):] if index >= 0 else nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Mark the known failures. Runs first, on every collected test (before -k/-m
    deselect and before Parsl's conftest drops the tests of other configs).

    A listed id is an error when its file does not exist in the installed
    ``parsl/tests``, or when its file was collected without that test (renamed
    or removed); a file left out of a narrower run is not looked at."""
    import parsl.tests

    known = load_known_failures()
    unmatched = set(known)
    collected_files = set()
    for item in items:
        test_id = relative_id(item.nodeid)
        collected_files.add(test_id.split("::", 1)[0])
        entry = known.get(test_id)
        if entry is None:
            continue
        kind, reason = entry
        unmatched.discard(test_id)
        item.add_marker(pytest.mark.xfail(reason=f"known failure, {kind} ({KNOWN_FAILURES.name}): {reason}",
                                          strict=KINDS[kind]))
    tests_dir = Path(parsl.tests.__file__).parent
    stale = sorted(test_id for test_id in unmatched
                   if test_id.split("::", 1)[0] in collected_files
                   or not (tests_dir / test_id.split("::", 1)[0]).is_file())
    if stale:
        raise pytest.UsageError(f"{KNOWN_FAILURES}: no test in {tests_dir} has the id(s) {stale}; "
                                "remove or correct these lines")
