"""The documentation site builds with ``mkdocs build --strict``, as the README says.

mkdocs.yml (at the repository root) makes a warning fail the build: a broken link or
anchor, a page left out of the nav, a docstring the API reference cannot parse. The docs
tools come from the ``docs`` extra (``pip install -e ".[docs]"``), which the README's test
command installs; without them this test fails rather than skips, so CI cannot pass
without building the site.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300.0

REQUIRED = {
    "mkdocs": "mkdocs",
    "material": "mkdocs-material",
    "mkdocstrings": "mkdocstrings",
    "mkdocstrings_handlers.python": "mkdocstrings[python]",
}
"""Module to import: the distribution that provides it."""

RENDERED = {
    "reference/collectives/index.html": "collectives.Communicator.all_reduce",
    "reference/errors/index.html": "collectives.errors.CollectiveTimeoutError",
    "reference/ops/index.html": "collectives.ops.ReduceOp",
    "reference/config/index.html": "collectives.config.Config",
    "reference/store/index.html": "collectives.store.TCPStore",
    "reference/testing/index.html": "collectives.testing.run_world",
    "reference/torch_backend/index.html": "collectives.torch_backend.CollectivesProcessGroup",
}
"""A page of the API reference: the anchor of one object it must document."""


def _missing() -> list[str]:
    missing = []
    for module, distribution in REQUIRED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is absent
            found = False
        if not found:
            missing.append(distribution)
    return missing


def test_site_builds_strict(tmp_path: Path) -> None:
    missing = _missing()
    assert not missing, f"the docs tools are not installed ({', '.join(missing)}): pip install -e '.[docs]'"
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}{proc.stderr[-8000:]}"
    for page, anchor in RENDERED.items():
        html = (site / page).read_text(encoding="utf-8")
        assert f'id="{anchor}"' in html, f"{page} does not document {anchor}"
