"""The documentation site builds with warnings as errors, and its API pages
come from the docstrings (``make docs``; CI builds it the same way)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strictly_with_api_pages(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    container = (site / "api" / "container" / "index.html").read_text()
    for documented in ("parsl_flux.imageref.cache_file", "parsl_flux.container.Container.prepare",
                       "parsl_flux.tools.release.tag_problem"):
        assert f'id="{documented}"' in container, f"{documented} has no API entry"
    assert "per-user cache" in container  # docstring text, not only the signature
    assert (site / "api" / "sites" / "index.html").read_text().count('id="parsl_flux.sites.') > 10
