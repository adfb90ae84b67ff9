"""Every code example in README.md and docs/**/*.md runs as written.

A fenced block is classified by its language and by an optional marker, an HTML comment on
the last non-blank line before its opening fence (invisible on GitHub and on the site):

- ```` ```python ```` (or ``py``) without a marker runs alone: ``python example.py``.
- ``<!-- example: world=N -->`` runs at N ranks under our launcher:
  ``python -m collectives.run -n N example.py``.
- ``<!-- example: world=N launcher=torchrun -->``:
  ``python -m torch.distributed.run --standalone --nproc-per-node N example.py``.
- ``<!-- example: world=N launcher=mpiexec -->``: ``mpiexec -n N python example.py``.
- ``<!-- example: skip (reason) -->`` is not run. The reason is required, and ``SKIPPED``
  below lists every such block, so a new skip fails ``test_skips_are_listed`` until it is
  listed here. GPU-only examples take the reason "needs a CUDA device".
- Every other block (sh, bash, text, no language) is not run: those are commands to type,
  which install packages, start benchmarks or need other hardware. A marker before one is
  an error, so that nobody believes it runs.

Each example runs in a fresh empty folder, in a process group of its own (killed after
``TIMEOUT`` seconds), with this checkout first on PYTHONPATH and no launcher variables
inherited from the environment. Examples under a launcher the machine lacks (torch, mpi4py
with mpiexec) are skipped with the reason. The examples that start a Ray cluster of their
own (``SIDE_BY_SIDE``) run side by side, all those selected started at the first one's
test: each leaves a core idle part of the time, waiting on its cluster's processes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess

REPO = Path(__file__).resolve().parents[2]
SOURCES = (REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")))
TIMEOUT = 120.0
"""Seconds one example may take, launcher included (each takes 1 to 10 s on 2 cores)."""

SKIPPED = {
    ("docs/gpu.md", "needs a CUDA device"),
    ("docs/ray.md", "one line of a TorchTrainer script, not a program; tests/ray/test_train.py runs it"),
    (
        "docs/torch.md",
        "four alternative calls, not one program: r, n and the store are yours; "
        "tests/torch_backend/test_torch_scenarios.py runs the env://, tcp:// and file:// forms",
    ),
    ("docs/fault-tolerance.md", "needs a dead rank and torch; tests/recovery/test_recovery_torch.py runs it"),
}
"""(file, reason) of every ``<!-- example: skip (reason) -->`` block."""

PYTHON = {"python", "py"}
LAUNCHERS = {"collectives-run", "torchrun", "mpiexec"}
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*example:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>.*)\)$")
_RUN = re.compile(r"^world=(?P<world>[1-9]\d*)(?:\s+launcher=(?P<launcher>[\w-]+))?$")
# Variables by which a launcher tells a process its rank: not inherited by examples.
_LAUNCH_PREFIXES = ("COLLECTIVES_", "PMI_", "OMPI_", "MV2_", "PMIX_", "MPI_LOCAL", "TORCHELASTIC_")
_LAUNCH_VARIABLES = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"}


@dataclasses.dataclass(frozen=True)
class Example:
    """One fenced block: where it is, its language, its code and what its marker says."""

    source: str  # path relative to the repository
    line: int  # line of the opening fence, from 1
    language: str
    code: str
    marker: str | None  # the marker's text after "example:", stripped

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        match = _SKIP.match(self.marker or "")
        return match["reason"].strip() if match else None

    def command(self, script: Path) -> list[str]:
        """The command that runs this example, as its marker says (ValueError if it says nothing valid)."""
        if self.marker is None:
            return [sys.executable, str(script)]
        match = _RUN.match(self.marker)
        if match is None:
            raise ValueError(f"{self.id}: marker {self.marker!r} is neither 'skip (reason)' nor 'world=N [launcher=...]'")
        world, launcher = match["world"], match["launcher"] or "collectives-run"
        if launcher == "collectives-run":
            return [sys.executable, "-m", "collectives.run", "-n", world, str(script)]
        if launcher == "torchrun":
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", world, str(script)]
        if launcher == "mpiexec":
            from collectives.mpi import find_mpiexec

            return [find_mpiexec() or "mpiexec", "-n", world, sys.executable, str(script)]
        raise ValueError(f"{self.id}: unknown launcher {launcher!r} (one of {', '.join(sorted(LAUNCHERS))})")


def parse(path: Path) -> tuple[list[Example], list[str]]:
    """The fenced blocks of one markdown file, and what is wrong with its markers."""
    source = path.relative_to(REPO).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    examples: list[Example] = []
    problems: list[str] = []
    marker: tuple[int, str] | None = None  # (line, text) of a marker awaiting its fence
    i = 0
    while i < len(lines):
        text = lines[i]
        found = _MARKER.match(text)
        fence = _FENCE.match(text)
        if found:
            if marker:
                problems.append(f"{source}:{marker[0]}: marker not followed by a code block")
            marker = (i + 1, found["body"].strip())
        elif fence:
            indent, mark, language = len(fence["indent"]), fence["fence"], fence["lang"].lower()
            body: list[str] = []
            i += 1
            while i < len(lines) and not re.match(rf"^\s*{re.escape(mark[0])}{{{len(mark)},}}\s*$", lines[i]):
                line = lines[i]
                body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
                i += 1
            note = marker[1] if marker else None
            if note is not None and language not in PYTHON:
                problems.append(f"{source}:{marker[0]}: marker before a {language or 'plain'} block, which never runs")
            examples.append(Example(source, i - len(body), language, "\n".join(body) + "\n", note))
            marker = None
        elif text.strip() and marker:
            problems.append(f"{source}:{marker[0]}: marker not followed by a code block")
            marker = None
        i += 1
    if marker:
        problems.append(f"{source}:{marker[0]}: marker not followed by a code block")
    return examples, problems


def _collect() -> tuple[list[Example], list[str]]:
    examples: list[Example] = []
    problems: list[str] = []
    for path in SOURCES:
        found, wrong = parse(path)
        examples += found
        problems += wrong
    return examples, problems


EXAMPLES, PROBLEMS = _collect()
PYTHON_EXAMPLES = [e for e in EXAMPLES if e.language in PYTHON]


def test_markers_are_well_formed() -> None:
    problems = list(PROBLEMS)
    for example in PYTHON_EXAMPLES:
        if example.marker is not None and example.marker.startswith("skip"):
            if not example.skip_reason:
                problems.append(f"{example.id}: a skip marker needs a reason: <!-- example: skip (why) -->")
            continue
        try:
            example.command(Path("example.py"))
        except ValueError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)


def test_skips_are_listed() -> None:
    skipped = {(e.source, e.skip_reason) for e in PYTHON_EXAMPLES if e.skip_reason}
    assert skipped == SKIPPED, (
        f"skip markers in the docs differ from SKIPPED in {Path(__file__).name}:\n"
        f"  not listed: {sorted(skipped - SKIPPED)}\n  listed, not in the docs: {sorted(SKIPPED - skipped)}"
    )


def test_examples_were_found() -> None:
    # A parser that stopped finding blocks would make every test below vanish silently.
    assert len(PYTHON_EXAMPLES) >= 10, [e.id for e in PYTHON_EXAMPLES]
    assert any(e.marker and "torchrun" in e.marker for e in PYTHON_EXAMPLES)


def _missing_launcher(example: Example) -> str | None:
    """Why this example's launcher cannot run on this machine, or None."""
    marker = example.marker or ""
    if "launcher=torchrun" in marker and importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install -r requirements-test.txt)"
    if "launcher=mpiexec" in marker:
        from collectives.mpi import find_mpiexec

        if importlib.util.find_spec("mpi4py") is None:
            return "mpi4py is not installed (pip install mpi4py mpich)"
        if find_mpiexec() is None:
            return "no mpiexec on PATH or beside this Python (pip install mpich)"
    return None


def _environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_LAUNCH_PREFIXES) and key not in _LAUNCH_VARIABLES
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("RAY_AUTH_MODE", "disabled")  # docs/ray.md: else ray.init writes ~/.ray/auth_token
    return env


def _run(command: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``command`` in its own process group; kill the whole group after TIMEOUT."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return -1, f"did not finish in {TIMEOUT:g} s\n{output}"
    return proc.returncode, output


def _side_by_side(example: Example) -> bool:
    """Whether ``example`` starts a Ray cluster of its own (``ray.init(`` at the start of a line)."""
    return re.search(r"^ray\.init\(", example.code, re.MULTILINE) is not None


SIDE_BY_SIDE = [e for e in PYTHON_EXAMPLES if _side_by_side(e) and not e.skip_reason]
"""The examples run together: much of each one's time goes to starting and stopping its
Ray cluster, partly waiting on the cluster's processes."""


def _execute(example: Example, folder: Path) -> tuple[list[str], int, str]:
    """Run ``example`` as its marker says, in ``folder``: (command, exit status, output)."""
    script = folder / "example.py"
    script.write_text(example.code, encoding="utf-8")
    command = example.command(script)
    return (command, *_run(command, folder))


class SideBySide:
    """Runs of the ``SIDE_BY_SIDE`` examples among ``selected``, all started when the first
    is asked for."""

    def __init__(self, folders: pytest.TempPathFactory, selected: set[str]) -> None:
        self.folders = folders
        self.selected = selected
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None
        self.runs: dict[str, Future[tuple[list[str], int, str]]] = {}

    def result(self, example: Example) -> tuple[list[str], int, str]:
        with self.lock:
            if self.pool is None:
                runnable = [e for e in SIDE_BY_SIDE
                            if (e.id in self.selected or e is example) and _missing_launcher(e) is None]
                self.pool = ThreadPoolExecutor(max(1, len(runnable)), thread_name_prefix="docs-example")
                for other in runnable:
                    folder = self.folders.mktemp(re.sub(r"\W", "_", other.id))
                    self.runs[other.id] = self.pool.submit(_execute, other, folder)
        return self.runs[example.id].result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def side_by_side(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SideBySide]:
    params = [getattr(getattr(item, "callspec", None), "params", {}) for item in request.session.items]
    selected = {p["example"].id for p in params if isinstance(p.get("example"), Example)}
    runs = SideBySide(tmp_path_factory, selected)
    yield runs
    runs.close()


@pytest.mark.parametrize("example", PYTHON_EXAMPLES, ids=[e.id for e in PYTHON_EXAMPLES])
def test_example_runs(example: Example, tmp_path: Path, side_by_side: SideBySide) -> None:
    if example.skip_reason:
        pytest.skip(example.skip_reason)
    reason = _missing_launcher(example)
    if reason:
        pytest.skip(reason)
    if example in SIDE_BY_SIDE:
        command, status, output = side_by_side.result(example)
    else:
        command, status, output = _execute(example, tmp_path)
    assert status == 0, f"{example.id} failed (exit {status}) under {' '.join(command)}:\n{output[-6000:]}"
