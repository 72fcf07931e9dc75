"""The package's places keep their promises about what they import.

``parsl_flux.allocation`` runs in every block, often in the image's
interpreter: it must not pay for (or depend on) Parsl's 120-odd modules, which
the manager once imported by accident through ``resources`` -> ``errors`` ->
``parsl.executors.errors``. ``parsl_flux.job`` starts once per Flux job: it
imports nothing heavy. ``parsl_flux.wire`` is imported by all three programs.
Two kinds of check: the layering of the source (which place may import which,
read from every module's ``import`` statements), and what a fresh interpreter
holds after importing each module of a place.
"""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import parsl_flux

PACKAGE = Path(parsl_flux.__file__).parent
MAY_IMPORT = {
    "wire": {"wire"},
    "job": {"job", "wire"},
    "allocation": {"allocation", "job", "wire"},
    "driver": {"driver", "job", "wire", "<root>"},
}
"""Which places each place may import from (``<root>``: the user-facing
modules at the package's top, such as ``errors``, ``container``, ``fluxpath``)."""
EVERYWHERE = {"parsl_flux", "parsl_flux.__version__"}
"""The package's version, which every place may read: the package root imports
nothing on import (its names load on first access)."""
HEAVY = ("parsl", "zmq", "cloudpickle", "flux", "tblib", "typeguard")


def _modules(place: str) -> list:
    return sorted(f"parsl_flux.{place}.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE / place)]))


def _place_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in MAY_IMPORT else "<root>"


def _imports(path: Path) -> set:
    """Every module a source file must import, at any depth of its code.

    An import inside ``try: ... except ImportError`` is optional (the job's bash
    path asks Parsl for its own error where Parsl happens to be installed) and
    is not counted."""
    found = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _modules_after_import(module: str) -> list:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("place", sorted(MAY_IMPORT))
def test_each_place_imports_only_the_places_below_it(place):
    wrong = {}
    for path in sorted((PACKAGE / place).glob("*.py")):
        for name in _imports(path):
            parsl = name == "parsl" or name.startswith("parsl.")
            if (name.startswith("parsl_flux.") and name not in EVERYWHERE and _place_of(name) not in MAY_IMPORT[place]
                    or parsl and place != "driver"):
                wrong.setdefault(path.name, []).append(name)
    assert wrong == {}, f"parsl_flux.{place} imports what its place may not: {wrong}"


def test_the_layering_check_sees_a_violation(tmp_path):
    """The check above can fail: an allocation module importing the driver is named."""
    (tmp_path / "bad.py").write_text("def f():\n    from parsl_flux.driver.executor import FluxExecutor\n")
    names = _imports(tmp_path / "bad.py")
    assert "parsl_flux.driver.executor" in names and _place_of("parsl_flux.driver.executor") == "driver"
    assert "driver" not in MAY_IMPORT["allocation"]


@pytest.mark.parametrize("module", _modules("allocation") + _modules("wire"))
def test_allocation_side_imports_no_parsl(module):
    parsl = [m for m in _modules_after_import(module) if m == "parsl" or m.startswith("parsl.")]
    assert parsl == [], f"{module} imports {len(parsl)} Parsl modules, e.g. {parsl[:5]}"


@pytest.mark.parametrize("module", ["parsl_flux.job.runner", "parsl_flux.job.mpi_job", "parsl_flux.job.bash",
                                    "parsl_flux.wire.protocol", "parsl_flux.wire.payload"])
def test_job_side_imports_nothing_heavy(module):
    heavy = [m for m in _modules_after_import(module) if m.split(".")[0] in HEAVY]
    assert heavy == [], f"{module} imports {heavy[:8]}"


def test_every_module_has_a_place():
    """Nothing new lands loose at the top: the root holds only the user's surface."""
    root = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]) if not m.ispkg)
    assert root == ["cli", "container", "errors", "fluxpath", "imagepull", "imageref", "sites"]
