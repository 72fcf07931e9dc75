"""Reading LAMMPS' screen output: the final thermo line, the ranks, the loop time.

Shared by the workflow (``workflow.py``) and the test that compares its run
under Flux with the same input under ``mpirun`` (``tests/test_app_image.py``).
"""

from __future__ import annotations

import re
from typing import List, Optional

_LOOP = re.compile(r"^Loop time of ([\d.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", re.M)


def thermo_lines(output: str) -> List[str]:
    """The thermo rows of the last run: the lines under the ``Step ...`` header
    up to ``Loop time``, whitespace normalised."""
    rows: List[str] = []
    inside = False
    for line in output.splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            inside, rows = True, []
        elif line.startswith("Loop time"):
            inside = False
        elif inside and words and all(re.fullmatch(r"[-+\d.eE]+", w) for w in words):
            rows.append(" ".join(words))
    return rows


def final_thermo(output: str) -> Optional[str]:
    """The last thermo row (``Step Temp E_pair E_mol TotEng Press``), or None."""
    rows = thermo_lines(output)
    return rows[-1] if rows else None


def loop(output: str) -> Optional[dict]:
    """``{"seconds", "procs", "steps", "atoms"}`` from the ``Loop time`` line, or None.

    ``procs`` is the size of the MPI world LAMMPS saw: 2 for a 2-rank job, 1
    for each of two ranks that failed to join one world (then there are two
    such lines, and two sets of thermo rows).
    """
    found = _LOOP.findall(output)
    if len(found) != 1:
        return None
    seconds, procs, steps, atoms = found[0]
    return {"seconds": float(seconds), "procs": int(procs), "steps": int(steps), "atoms": int(atoms)}
