"""The communicator's fast path (collectives/_fast_path.py) in C and in Python: the same
answer for every input, the same kept plan run with the same arguments.

A stand-in communicator holds the kept plans and records what ``_run_kept`` is given, so
every case runs both implementations in this process. (The refusals of bad calls after good
ones, through real communicators, are in test_arguments.py, on both.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from collectives import ReduceOp, _fast_path
from collectives.config import Config

KINDS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast")


class _Comm:
    """What the fast path reads of a communicator: ``_plans``, ``size``, ``rank``, ``_run_kept``
    (``_kept_run`` None: the C path calls ``_run_kept`` too)."""

    def __init__(self, plans: dict[Any, Any], size: int = 2, rank: int = 0) -> None:
        self._plans, self.size, self.rank = plans, size, rank
        self._kept_run = None
        self.ran: list[tuple[Any, ...]] = []

    def _run_kept(self, key: Any, plan: Any, x: np.ndarray, out: Any) -> None:
        self.ran.append((key, plan, None if x is None else x.__array_interface__["data"][0], None if x is None else x.shape,
                         None if out is None else (out.__array_interface__["data"][0], out.shape, out is x)))


def test_the_c_fast_path_is_built_and_chosen_unless_pure_python() -> None:
    assert _fast_path.C is not None, "collectives._fast_c was not built (or reads ndarray headers wrongly)"
    assert _fast_path.paths(False) is _fast_path.C
    assert _fast_path.paths(True) is _fast_path.PYTHON
    assert Config.from_env({"COLLECTIVES_PURE_PYTHON": "1"}).pure_python


def test_the_c_fast_path_reads_array_headers_as_numpy_does() -> None:
    from collectives import _fast_c  # type: ignore[attr-defined]

    base = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    frozen = np.ones(3)
    frozen.flags.writeable = False
    cases = [base, base[:, 1], base[..., ::2], base[::-1], np.asfortranarray(base), base.T, np.ones(()),
             np.broadcast_to(np.ones(3), (4, 3)), frozen, np.empty((0, 5), np.int8), np.zeros(7, np.complex64),
             np.zeros(3, [("a", np.int32), ("b", np.float64)])]
    for a in cases:
        assert _fast_c.header(a) == (a.flags.c_contiguous, a.flags.writeable, a.size, a.dtype)
    with pytest.raises(TypeError, match="ndarray"):
        _fast_c.header([1, 2])


def _arrays() -> dict[str, np.ndarray]:
    """Arrays of every layout the checks tell apart, each holding values of its own (so that
    a copy the fast path makes, a broadcast's into ``out`` on the root, shows)."""
    base = np.arange(1, 17, dtype=np.float32)
    frozen = np.full(4, -1, np.float32)
    frozen.flags.writeable = False
    arrays = {
        "x": np.zeros(4, np.float32), "x2d": np.zeros((2, 2), np.float32), "strided": base[::4],
        "frozen": frozen, "f64": np.zeros(4, np.float64), "short": np.zeros(2, np.float32),
        "long": np.zeros(8, np.float32), "empty": np.zeros(0, np.float32), "overlap": base[2:6],
        "overlap_in": base[0:4], "apart": base[8:12], "same_start": base[0:4].view(),
        "out_2d": np.zeros((2, 4), np.float32), "fortran": np.asfortranarray(np.zeros((2, 2), np.float32)),
    }
    for i, a in enumerate(arrays.values()):
        if a.flags.writeable and a.base is None:
            a[...] = np.arange(a.size).reshape(a.shape) + 100 * (i + 1)
    return arrays


def _plans(arrays: dict[str, np.ndarray]) -> dict[Any, Any]:
    """A kept plan for every (collective, dtype, count) the arrays have, under ReduceOp.SUM,
    "max" and root 0 and 1."""
    plans: dict[Any, Any] = {}
    for a in arrays.values():
        for op in (ReduceOp.SUM, "max"):
            plans[("all_reduce", a.dtype, a.size, op, None)] = f"all_reduce plan {a.size}"
            plans[("reduce_scatter", a.dtype, a.size, op, None)] = f"reduce_scatter plan {a.size}"
        plans[("all_gather", a.dtype, a.size, None)] = f"all_gather plan {a.size}"
        plans[("all_to_all", a.dtype, a.size, None)] = f"all_to_all plan {a.size}"
        for root in (0, 1):
            plans[("broadcast", a.dtype, a.size, root, None)] = f"broadcast plan {a.size}"
            for op in (ReduceOp.SUM, "max"):
                plans[("reduce", a.dtype, a.size, op, root, None)] = f"reduce plan {a.size}"
            plans[("gather", a.dtype, a.size, root, None)] = f"gather plan {a.size}"
            plans[("scatter", a.dtype, a.size, root, None)] = f"scatter plan {a.size}"
    return plans


def _outcome(paths: _fast_path.Paths, kind: str, x: Any, out: Any, third: Any, rank: int = 0) -> tuple[Any, ...]:
    arrays = _arrays()
    comm = _Comm(_plans(arrays), rank=rank)
    x, out = (arrays[x] if isinstance(x, str) else x), (arrays[out] if isinstance(out, str) else out)
    if kind == "all_reduce":
        result: Any = paths.all_reduce(comm, x, third, out)
        result = "x" if result is x else "out" if result is out and out is not None else result
    elif kind == "reduce_scatter":
        result = paths.reduce_scatter(comm, x, out, third)
    elif kind == "all_gather":
        result = paths.all_gather(comm, x, out)
    elif kind == "all_to_all":
        result = paths.all_to_all(comm, x, out)
    elif kind in ("gather", "scatter"):  # third: the root
        result = getattr(paths, kind)(comm, x, out, third)
    elif kind == "reduce":  # third: (root, op)
        result = paths.reduce(comm, x, *third, out)
        result = "x" if result is x else "out" if result is out and out is not None else result
    else:
        result = paths.broadcast(comm, x, third, out)
    at = {}  # data addresses -> the names of the arrays there (runs differ in addresses, not in names)
    for name, a in arrays.items():
        at.setdefault(a.__array_interface__["data"][0], []).append(name)
    ran = [(key, plan, None if address is None else at[address], shape, None if o is None else (at[o[0]], *o[1:])) for key, plan, address, shape, o in comm.ran]
    return result, ran, {name: a.tobytes() for name, a in arrays.items()}


NAMES = list(_arrays())
CASES = (
    [("all_reduce", x, out, op) for x in NAMES for out in [None, *NAMES] for op in (ReduceOp.SUM, "max", ReduceOp.MIN)]
    + [("all_reduce", "x", None, ["unhashable"])]
    + [("reduce_scatter", x, out, ReduceOp.SUM) for x in NAMES for out in NAMES]
    + [("all_gather", x, out, None) for x in NAMES for out in NAMES]
    + [("all_to_all", x, out, None) for x in NAMES for out in NAMES]
    + [(kind, x, out, root) for kind in ("gather", "scatter") for x in [None, *NAMES] for out in [None, *NAMES]
       for root in (0, 1, True)]
    + [(kind, "x", "long", root) for kind in ("gather", "scatter") for root in (2, 0.0)]
    + [("broadcast", x, None, root) for x in NAMES for root in (0, 1, 2, True, 0.0)]
    + [("broadcast", x, out, root) for x in NAMES for out in NAMES for root in (0, 1, True)]
    + [("reduce", x, out, (root, op)) for x in NAMES for out in [None, *NAMES] for root in (0, 1)
       for op in (ReduceOp.SUM, "max")]
    + [("reduce", "x", None, (root, op)) for root in (2, True, 0.0) for op in (ReduceOp.SUM, ReduceOp.MIN)]
    + [("reduce", "x", None, (0, ["unhashable"])), ("reduce", "x", [1.0, 2.0, 3.0, 4.0], (0, "max"))]
    + [(kind, "x", [1.0, 2.0], ReduceOp.SUM) for kind in ("all_reduce", "reduce_scatter", "all_gather", "all_to_all")]
    + [("broadcast", "x", [1.0, 2.0, 3.0, 4.0], 0)]
    + [(kind, [1.0, 2.0, 3.0, 4.0], "x", 0) for kind in KINDS]
    + [("reduce", [1.0, 2.0, 3.0, 4.0], "x", (0, "max")), ("all_to_all", [1.0, 2.0, 3.0, 4.0], "x", None)]
)


@pytest.mark.parametrize(("kind", "x", "out", "third"), CASES)
def test_c_and_python_give_the_same_answer_and_run_the_same_plan(kind: str, x: Any, out: Any, third: Any) -> None:
    assert _fast_path.C is not None
    for rank in (0, 1):
        assert _outcome(_fast_path.C, kind, x, out, third, rank) == _outcome(_fast_path.PYTHON, kind, x, out, third, rank)


def test_the_fast_path_runs_the_kept_plan_where_the_checks_pass() -> None:
    """The comparison above would pass if both refused everything: these must run."""
    assert _fast_path.C is not None
    for paths in (_fast_path.C, _fast_path.PYTHON):
        result, ran, _ = _outcome(paths, "all_reduce", "x2d", None, ReduceOp.SUM)
        assert result == "x" and ran[0][0] == ("all_reduce", np.dtype(np.float32), 4, ReduceOp.SUM, None)
        assert ran[0][3] == (4,) and ran[0][4][1:] == ((4,), True)  # flat, in place
        assert _outcome(paths, "all_reduce", "x", "apart", "max")[0] == "out"
        assert _outcome(paths, "all_reduce", "overlap_in", "overlap", "max")[:2] == (None, [])
        assert _outcome(paths, "reduce_scatter", "x", "short", ReduceOp.SUM)[0] is True
        assert _outcome(paths, "all_gather", "x", "long", None)[0] is True
        assert _outcome(paths, "all_to_all", "x", "apart", None)[0] is True
        assert _outcome(paths, "all_to_all", "x", "long", None)[0] is False
        result, ran, _ = _outcome(paths, "all_gather", "x", "out_2d", None)
        assert result is True and ran[0][4][1] == (8,)  # out is passed flat
        assert _outcome(paths, "broadcast", "frozen", None, 0, rank=0)[0] is True  # the root's may be read-only
        assert _outcome(paths, "broadcast", "frozen", None, 0, rank=1)[0] is False
        for rank in (0, 1):  # into out: the root's x copied there first, the plan run on out (flat)
            result, ran, after = _outcome(paths, "broadcast", "x2d", "apart", 0, rank=rank)
            assert result is True and ran[0][2] == ["apart"] and ran[0][3] == (4,)
            assert (after["apart"] == after["x2d"]) == (rank == 0)
        assert _outcome(paths, "broadcast", "frozen", "x", 0, rank=1)[0] is True  # x is only read, on the root
        assert _outcome(paths, "broadcast", "x", "frozen", 0)[0] is False


def test_a_kept_reduce_runs_on_x_or_on_the_roots_out() -> None:
    """Reduce's fast path (C and Python): in place on the root's writable ``x``, on any
    ``x`` elsewhere (where ``out`` is not used), into the root's ``out`` filled from ``x``."""
    for paths in (_fast_path.C, _fast_path.PYTHON):
        assert paths is not None
        for rank, x_name, out_name, ran_on, result in (
                (0, "x", None, "x", "x"), (0, "frozen", None, None, None), (1, "frozen", None, "frozen", "x"),
                (0, "x2d", "apart", "apart", "out"), (1, "x", "apart", "x", "x"), (0, "x", "f64", None, None),
                (0, "overlap_in", "overlap", None, None)):
            arrays = _arrays()
            plans = {("reduce", a.dtype, a.size, "sum", 0, None): "reduce plan" for a in arrays.values()}
            comm = _Comm(plans, rank=rank)
            x, out = arrays[x_name], None if out_name is None else arrays[out_name]
            before = x.tobytes()
            got = paths.reduce(comm, x, 0, "sum", out)
            assert (None if got is None else "x" if got is x else "out") == result, (rank, x_name, out_name)
            at = {a.__array_interface__["data"][0]: name for name, a in arrays.items()}
            assert [at[address] for _, _, address, _, _ in comm.ran] == ([] if ran_on is None else [ran_on])
            assert x.tobytes() == before
            if result == "out":
                assert out.tobytes() == x.tobytes() and comm.ran[0][3] == (4,)


def test_a_kept_gather_or_scatter_runs_where_the_checks_pass() -> None:
    """Gather's and scatter's fast path (C and Python): the root's buffers checked (one
    dtype, the world's count, C-contiguous, its output writable), the others' only for what
    they pass; anything else goes to the full path, which says what is wrong."""
    for paths in (_fast_path.C, _fast_path.PYTHON):
        assert paths is not None
        for rank, kind, x_name, out_name, ran in (
                (0, "gather", "x", "long", ("x", "long")), (1, "gather", "x", None, ("x", None)),
                (0, "gather", "x", None, None), (0, "gather", "x", "f64", None), (0, "gather", "strided", "long", None),
                (0, "gather", "x", "frozen", None), (0, "gather", "x2d", "out_2d", ("x2d", "out_2d")),
                (0, "scatter", "long", "x", ("long", "x")), (1, "scatter", None, "x", (None, "x")),
                (0, "scatter", None, "x", None), (0, "scatter", "f64", "x", None), (1, "scatter", None, "frozen", None),
                (0, "scatter", "out_2d", "x2d", ("out_2d", "x2d"))):
            arrays = _arrays()
            plans = {(c, a.dtype, a.size, 0, None): f"{c} plan" for a in arrays.values() for c in ("gather", "scatter")}
            comm = _Comm(plans, size=2, rank=rank)
            x = None if x_name is None else arrays[x_name]
            out = None if out_name is None else arrays[out_name]
            done = getattr(paths, kind)(comm, x, out, 0)
            at = {a.__array_interface__["data"][0]: name for name, a in arrays.items()}
            got = [(None if a is None else at[a], None if o is None else at[o[0]]) for _, _, a, _, o in comm.ran]
            assert (done, got) == ((True, [ran]) if ran else (False, [])), (kind, rank, x_name, out_name)


def test_a_call_that_names_an_algorithm_runs_the_plan_kept_for_that_algorithm() -> None:
    """The requested algorithm is the plan key's last item, in C as in Python: a call naming
    ``ring`` runs the plan kept for ``ring`` (not the automatic one), a call naming an
    algorithm with no plan kept, or an unhashable one, takes the full path."""
    dtype = np.dtype(np.float32)
    plans = {("all_reduce", dtype, 4, "sum", "ring"): "ring all_reduce", ("all_reduce", dtype, 4, "sum", None): "auto",
             ("reduce_scatter", dtype, 4, "sum", "ring"): "ring reduce_scatter",
             ("all_gather", dtype, 2, "ring"): "ring all_gather", ("all_to_all", dtype, 4, "pairwise"): "pairwise",
             ("broadcast", dtype, 4, 0, "tree"): "tree broadcast", ("reduce", dtype, 4, "sum", 0, "tree"): "tree reduce",
             ("gather", dtype, 4, 0, "direct"): "direct gather", ("scatter", dtype, 2, 0, "direct"): "direct scatter"}
    calls = {  # kind: (arguments before the algorithm, the algorithm kept)
        "all_reduce": (lambda a: (a["x"], "sum", None), "ring"),
        "reduce_scatter": (lambda a: (a["x"], a["short"], "sum"), "ring"),
        "all_gather": (lambda a: (a["short"], a["x"]), "ring"),
        "all_to_all": (lambda a: (a["x"], a["apart"]), "pairwise"),
        "broadcast": (lambda a: (a["x"], 0, None), "tree"),
        "reduce": (lambda a: (a["x"], 0, "sum", None), "tree"),
        "gather": (lambda a: (a["x"], a["long"], 0), "direct"),
        "scatter": (lambda a: (a["x"], a["short"], 0), "direct"),
    }
    for paths in (_fast_path.C, _fast_path.PYTHON):
        assert paths is not None
        for kind, (arguments, kept) in calls.items():
            for algorithm, ran in ((kept, plans[_key_of(kind, dtype, kept)]), ("no such", None),
                                   (["unhashable"], None)):
                comm = _Comm(plans)
                done = getattr(paths, kind)(comm, *arguments(_arrays()), algorithm)
                assert [plan for _, plan, *_ in comm.ran] == ([] if ran is None else [ran]), (paths, kind, algorithm)
                assert bool(done is not None and done is not False) == (ran is not None), (paths, kind, algorithm)
    comm = _Comm(plans)  # the automatic choice's plan, as before
    assert _fast_path.C.all_reduce(comm, _arrays()["x"], "sum", None) is not None and comm.ran[0][1] == "auto"


def _key_of(kind: str, dtype: np.dtype, algorithm: Any) -> tuple[Any, ...]:
    """The plan key the cases above keep for ``kind`` (count 4, root 0, operator "sum")."""
    return {"all_reduce": ("all_reduce", dtype, 4, "sum", algorithm),
            "reduce_scatter": ("reduce_scatter", dtype, 4, "sum", algorithm),
            "all_gather": ("all_gather", dtype, 2, algorithm), "all_to_all": ("all_to_all", dtype, 4, algorithm),
            "broadcast": ("broadcast", dtype, 4, 0, algorithm), "reduce": ("reduce", dtype, 4, "sum", 0, algorithm),
            "gather": ("gather", dtype, 4, 0, algorithm), "scatter": ("scatter", dtype, 2, 0, algorithm)}[kind]
