"""CI (.ci/run) runs exactly the test command the README gives, so what a person runs and
what CI runs cannot drift apart (the docs extra, which builds the site, included)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_test_command() -> str:
    """The one command in the sh block under the README's **Tests** heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"\*\*Tests\*\*[^\n]*\n+```sh\n(?P<command>[^\n]+)\n```", text)
    assert match, "README.md has no **Tests** paragraph followed by a one-line sh block"
    return match["command"].strip()


def test_ci_runs_the_readme_command() -> None:
    command = readme_test_command()
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert command in lines, f".ci/run does not run the README's test command {command!r}"


def test_readme_command_installs_the_docs_extra() -> None:
    assert re.search(r'pip install -e "\.\[[^\]]*\bdocs\b[^\]]*\]"', readme_test_command())
