"""The package type-checks: ``python -m mypy collectives``, with the settings in pyproject.toml,
reports no error (so CI, which runs this suite, checks the annotations), and those settings
do catch a wrong argument or return type.

mypy is part of the ``test`` extra: without it these tests fail rather than skip, since a
type check that quietly does not run checks nothing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Cold, mypy reads the stubs of numpy, torch and mpi4py (about 20 s); warm, under a second.
# The cache is the default one, .mypy_cache/ at the repository root (git ignores it).
pytestmark = pytest.mark.slow


def _mypy(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("mypy") is None:
        pytest.fail('mypy is not installed: pip install -e ".[test]"', pytrace=False)
    return subprocess.run(
        [sys.executable, "-m", "mypy", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_collectives_type_checks() -> None:
    done = _mypy("collectives")
    if done.returncode != 0:
        pytest.fail(f"python -m mypy collectives failed (exit {done.returncode}):\n{done.stdout}{done.stderr}",
                    pytrace=False)


def test_settings_catch_wrong_argument_and_return_types(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""\
        def length(text: str) -> int:
            return text

        def untyped(x):
            return x

        length(3)
    """))
    done = _mypy("--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"),
                 str(probe), cwd=tmp_path)
    report = done.stdout + done.stderr
    assert done.returncode == 1, report
    assert 'Incompatible return value type (got "str", expected "int")' in report, report
    assert 'Argument 1 to "length" has incompatible type "int"; expected "str"' in report, report
    assert "Function is missing a type annotation" in report, report
