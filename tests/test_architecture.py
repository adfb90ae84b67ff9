"""The house's layout holds: no import cycles, and imports go one way.

Every import under ``collectives/`` is read from the source (module level and inside
functions alike, so lazy imports count; only ``if TYPE_CHECKING:`` blocks, which never run,
are left out), resolved to our own modules, and the graph is checked.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "collectives"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Our modules that ``path`` imports, at any depth of its code."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(target: str) -> None:
        while target and target not in modules:  # "pkg.mod.Name" -> "pkg.mod"
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            if stem.startswith("collectives"):
                for alias in node.names:
                    resolve(f"{stem}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def _package_init_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without edges into a package's ``__init__`` from its own submodules: a
    submodule importing a sibling as ``from . import x`` names the package on its way."""
    return {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}


def test_the_import_walk_sees_what_it_should() -> None:
    """The walk itself: lazy imports are found, TYPE_CHECKING ones are not."""
    graph = _graph()
    assert "collectives.communicator" in graph["collectives.connect"]
    assert "collectives.transports.shm" in graph["collectives.engines.windows"]
    assert "collectives.communicator" not in graph["collectives._fast_path"]  # TYPE_CHECKING only


def test_no_import_cycles() -> None:
    cycles = _cycles(_package_init_edges(_graph()))
    assert not cycles, "import cycles under collectives/: " + "; ".join(" <-> ".join(c) for c in cycles)


# package -> packages it must never import (the layers: API -> plans -> engines -> algorithms
# and transports -> store; the tuner (tuning) sits below plans and above algorithms, the
# simulator (sim) on the tuner; integrations sit on top of the public API)
FORBIDDEN = {
    "collectives.plans": ("collectives.communicator", "collectives.connect", "collectives._init", "collectives.mpi"),
    "collectives.engines": ("collectives.plans", "collectives.communicator", "collectives.connect"),
    "collectives.algorithms": ("collectives.engines", "collectives.plans", "collectives.transports",
                               "collectives.communicator", "collectives.tuning", "collectives.sim"),
    "collectives.tuning": ("collectives.engines", "collectives.plans", "collectives.transports",
                           "collectives.communicator", "collectives.connect", "collectives.sim", "collectives.testing"),
    "collectives.sim": ("collectives.engines", "collectives.plans", "collectives.transports",
                        "collectives.communicator", "collectives.connect"),
    "collectives.transports": ("collectives.engines", "collectives.plans", "collectives.algorithms",
                               "collectives.communicator"),
    "collectives.recovery": ("collectives.communicator", "collectives.connect", "collectives._init"),
    "collectives.store": ("collectives.engines", "collectives.plans", "collectives.transports",
                          "collectives.communicator"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package: str) -> None:
    graph = _graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module == package or module.startswith(package + ".")
        for target in targets
        for forbidden in FORBIDDEN[package]
        if target == forbidden or target.startswith(forbidden + ".")
    )
    assert not wrong, "\n".join(wrong)


def test_the_communicator_names_no_transport() -> None:
    """Transports are chosen and built by ``connect()``: the communicator imports none and
    names none."""
    source = (ROOT / "communicator.py").read_text()
    assert not [t for t in _graph()["collectives.communicator"] if t.startswith("collectives.transports.")
                and t != "collectives.transports.base"]
    for name in ('"shm"', '"tcp"', '"mpi"', '"inproc"'):
        assert name not in source


def test_no_module_over_600_lines() -> None:
    long = {str(p.relative_to(ROOT.parent)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_the_communicator_stays_under_400_lines() -> None:
    assert len((ROOT / "communicator.py").read_text().splitlines()) < 400


def test_the_tests_mirror_the_source() -> None:
    """Every folder under tests/ is a package of collectives/ (or the top level, the perf
    harness, the docs, and the two acceptance suites the issues name: ``faults`` for the
    reliability guarantees, ``gpu`` for the device check): run environments are markers,
    not peers of the packages."""
    tests = Path(__file__).resolve().parent
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    strays = folders - packages - {"collectives", "perf", "docs", "faults", "gpu"}
    assert not strays, sorted(strays)


def test_the_ray_integration_is_a_leaf() -> None:
    """``collectives.ray`` sits on top of the public API: nothing else imports it, and its
    main path (everything but the ``ray.util.collective`` backend and the Ray Direct Transport
    tensor transport, which are for torch users) never imports Ray's collective layer, which
    imports torch, nor torch."""
    graph = _graph()
    wrong = sorted(f"{m} imports {t}" for m, targets in graph.items() if not m.startswith("collectives.ray")
                   for t in targets if t.startswith("collectives.ray"))
    assert not wrong, wrong
    main_path = [p for p in (ROOT / "ray").glob("*.py") if p.name not in ("backend.py", "tensor_transport.py")]
    assert main_path
    for path in main_path:
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
        assert not [n for n in names if n.startswith(("ray.util.collective", "ray.experimental.collective", "torch"))], path
