"""The communicator's fast path: a repeated call whose plan is already kept.

A call of a signature seen before (same collective, dtype, count, operator, root, and the
same algorithm asked, or none), on plain numpy arrays that pass the same checks the full path makes
(C-contiguous, outputs writable and of the right dtype and size), runs its kept plan
inline: no staging, no re-validation, no dispatch through the worker. The repeated small
all_reduce (a loss, a flag, a norm) spends its time on the data then. CPU torch tensors
take it through numpy views of their memory. Each function returns None (or False) where
the call must take the full path.

``_fast_c`` (built by ``pip install`` where a C compiler is present) makes the same checks on
plain ndarrays by reading their headers, in under half the time these functions take, and runs
the kept plan through the communicator's ``KeptRun`` (``kept_run``: ``_run_kept``'s steps in C);
``paths`` gives the communicator one set or the other (Python where ``Config.pure_python``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .buffers import plain_tensor_view, same_or_apart
from .engines.small_native import apart as _apart
from .flight_recorder import TRACE_ENTRIES
from .plans.base import nothing

if TYPE_CHECKING:
    from .communicator import Communicator


def _tensor_views(x: Any, out: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Numpy views of ``x`` and ``out`` (or None) where both are torch tensors the checks
    would take as they are (``buffers.plain_tensor_view``), else None."""
    xv = plain_tensor_view(x)
    if xv is None:
        return None
    if out is None:
        return xv, None
    ov = plain_tensor_view(out)
    return None if ov is None else (xv, ov)


def _flat(array: np.ndarray) -> np.ndarray:
    return array if array.ndim == 1 else array.reshape(-1)


def _output_ok(x: np.ndarray, out: np.ndarray, count: int) -> bool:
    """Whether ``x`` may be read and ``out`` written as they are: C-contiguous, one dtype,
    ``out`` writable and of ``count`` elements."""
    return (
        out.dtype == x.dtype
        and out.size == count
        and x.flags.c_contiguous
        and out.flags.c_contiguous
        and out.flags.writeable
    )


def _kept(comm: Communicator, key: tuple[Any, ...]) -> Any:
    """The plan kept under ``key``, or None, also where ``key`` does not hash (an unhashable
    operator or algorithm: the full path names it)."""
    try:  # plans are kept under ReduceOp members (hashed by identity) and names only
        return comm._plans.get(key)
    except TypeError:
        return None


def _same_or_apart(x: np.ndarray, out: np.ndarray) -> bool:
    """Whether ``x`` and ``out`` are the same memory or do not overlap (in C where built)."""
    return (_apart is not None and _apart(x, out)) or same_or_apart(x, out)


def _run_on_filled_out(comm: Communicator, key: tuple[Any, ...], plan: Any, x: np.ndarray, out: np.ndarray,
                       fill: bool, folds_into_out: bool = False) -> bool:
    """Whether the kept in-place plan ``key`` ran on ``out`` (as ``x`` is checked: one dtype and
    count, the same memory or apart), filled from ``x`` first where ``fill`` (a broadcast's or
    reduce's root); or, where the plan ``folds_into_out`` and ``out`` is apart from ``x``, ran on
    ``x`` into ``out`` (``x`` only read, nothing copied first)."""
    if not _output_ok(x, out, x.size) or not _same_or_apart(x, out):
        return False
    flat = _flat(out)
    if folds_into_out and out.ctypes.data != x.ctypes.data:
        comm._run_kept(key, plan, _flat(x), flat)
        return True
    if fill and out is not x:  # (the same memory under another name: copied onto itself)
        np.copyto(flat, _flat(x))
    comm._run_kept(key, plan, flat, None)
    return True


def all_reduce(comm: Communicator, x: Any, op: Any, out: Any, algorithm: Any = None) -> Any:
    """The result of a kept all-reduce, or None."""
    if type(x) is not np.ndarray:
        views = _tensor_views(x, out)
        if views is None:
            return None
        comm.all_reduce(views[0], op, out=views[1], algorithm=algorithm)
        return x if out is None else out
    if out is not None and type(out) is not np.ndarray:
        return None
    key = ("all_reduce", x.dtype, x.size, op, algorithm)
    plan = _kept(comm, key)
    if plan is None:
        return None
    if out is None:
        flags = x.flags
        if not flags.c_contiguous or not flags.writeable:
            return None
        flat = _flat(x)
        comm._run_kept(key, plan, flat, flat)
        return x
    if not x.flags.c_contiguous:
        return None
    if not _output_ok(x, out, x.size) or not _same_or_apart(x, out):
        return None
    comm._run_kept(key, plan, _flat(x), _flat(out))
    return out


def reduce_scatter(comm: Communicator, x: Any, out: Any, op: Any, algorithm: Any = None) -> bool:
    """Whether a kept reduce-scatter ran into ``out``."""
    if type(x) is not np.ndarray:
        views = _tensor_views(x, out)
        if views is None:
            return False
        comm.reduce_scatter(views[0], views[1], op, algorithm=algorithm)
        return True
    if type(out) is not np.ndarray:
        return False
    key = ("reduce_scatter", x.dtype, x.size, op, algorithm)
    plan = _kept(comm, key)
    if plan is None or not _output_ok(x, out, x.size // comm.size):
        return False
    comm._run_kept(key, plan, _flat(x), _flat(out))
    return True


def _into_out(comm: Communicator, name: str, x: Any, out: Any, per_element: int, algorithm: Any) -> bool:
    """Whether the kept plan of collective ``name`` (keyed by dtype and count alone) ran from
    ``x`` into ``out`` of ``per_element`` elements per element of ``x`` (torch tensors: the call
    made anew with numpy views of them)."""
    if type(x) is not np.ndarray:
        views = _tensor_views(x, out)
        if views is None:
            return False
        getattr(comm, name)(views[0], views[1], algorithm=algorithm)
        return True
    if type(out) is not np.ndarray:
        return False
    key = (name, x.dtype, x.size, algorithm)
    plan = _kept(comm, key)
    if plan is None or not _output_ok(x, out, x.size * per_element):
        return False
    comm._run_kept(key, plan, _flat(x), _flat(out))
    return True


def all_gather(comm: Communicator, x: Any, out: Any, algorithm: Any = None) -> bool:
    """Whether a kept all-gather ran into ``out``."""
    return _into_out(comm, "all_gather", x, out, comm.size, algorithm)


def all_to_all(comm: Communicator, x: Any, out: Any, algorithm: Any = None) -> bool:
    """Whether a kept all-to-all ran into ``out`` (any overlap with ``x`` is the plan's to
    handle: the window copies ``x`` before it writes, the schedule copies ``x`` where they share memory)."""
    return _into_out(comm, "all_to_all", x, out, 1, algorithm)


def broadcast(comm: Communicator, x: Any, root: Any, out: Any, algorithm: Any = None) -> bool:
    """Whether a kept broadcast ran on ``x`` (or into ``out``, filled from ``x`` on the root)."""
    if type(x) is not np.ndarray:
        views = _tensor_views(x, out)
        if views is None:
            return False
        comm.broadcast(views[0], root, out=views[1], algorithm=algorithm)
        return True
    if type(root) is not int or (out is not None and type(out) is not np.ndarray):
        return False
    key = ("broadcast", x.dtype, x.size, root, algorithm)
    plan = _kept(comm, key)
    if plan is None or not x.flags.c_contiguous:
        return False
    if out is None:
        if not (x.flags.writeable or root == comm.rank):
            return False
        comm._run_kept(key, plan, _flat(x), None)
        return True
    return _run_on_filled_out(comm, key, plan, x, out, fill=root == comm.rank)


def reduce(comm: Communicator, x: Any, root: Any, op: Any, out: Any, algorithm: Any = None) -> Any:
    """The result of a kept reduce (the root's ``x``, or its ``out``: folded into straight where the
    plan does, ``folds_into_out``, else filled from ``x`` first; ``x`` elsewhere, where ``out`` is
    not used), or None."""
    if type(x) is not np.ndarray:
        views = _tensor_views(x, out)
        if views is None:
            return None
        comm.reduce(views[0], root, op, out=views[1], algorithm=algorithm)
        return out if out is not None and root == comm.rank else x
    if type(root) is not int or (out is not None and type(out) is not np.ndarray):
        return None
    key = ("reduce", x.dtype, x.size, op, root, algorithm)
    plan = _kept(comm, key)
    if plan is None or not x.flags.c_contiguous:
        return None
    at_root = root == comm.rank
    if out is None or not at_root:
        if at_root and not x.flags.writeable:
            return None
        comm._run_kept(key, plan, _flat(x), None)
        return x
    folds = getattr(plan, "folds_into_out", False)  # (windowed.LargeReduce: x read, out written, no copy between)
    return out if _run_on_filled_out(comm, key, plan, x, out, fill=True, folds_into_out=folds) else None


def gather(comm: Communicator, x: Any, out: Any, root: Any, algorithm: Any = None) -> bool:
    """Whether a kept gather ran (into the root's ``out``; any overlap with ``x`` is the
    plan's to handle: the root copies its own ``x`` first)."""
    if type(x) is not np.ndarray or type(root) is not int:
        return False
    key = ("gather", x.dtype, x.size, root, algorithm)
    plan = _kept(comm, key)
    if plan is None or not x.flags.c_contiguous:
        return False
    if root != comm.rank:
        comm._run_kept(key, plan, _flat(x), None)
        return True
    if type(out) is not np.ndarray or not _output_ok(x, out, x.size * comm.size):
        return False
    comm._run_kept(key, plan, _flat(x), _flat(out))
    return True


def scatter(comm: Communicator, x: Any, out: Any, root: Any, algorithm: Any = None) -> bool:
    """Whether a kept scatter ran into ``out`` (from the root's ``x``; any overlap is the
    plan's to handle: the root copies all of ``x`` aside first)."""
    if type(out) is not np.ndarray or type(root) is not int:
        return False
    key = ("scatter", out.dtype, out.size, root, algorithm)
    plan = _kept(comm, key)
    if plan is None or not (out.flags.c_contiguous and out.flags.writeable):
        return False
    if root != comm.rank:
        comm._run_kept(key, plan, None, _flat(out))  # type: ignore[arg-type]
        return True
    if type(x) is not np.ndarray or x.dtype != out.dtype or x.size != out.size * comm.size or not x.flags.c_contiguous:
        return False
    comm._run_kept(key, plan, _flat(x), _flat(out))
    return True


class Paths(NamedTuple):
    """The fast path's functions, in C or in Python."""

    all_reduce: Any
    reduce_scatter: Any
    all_gather: Any
    broadcast: Any
    reduce: Any
    all_to_all: Any
    gather: Any
    scatter: Any


PYTHON = Paths(all_reduce, reduce_scatter, all_gather, broadcast, reduce, all_to_all, gather, scatter)


def _reads_headers(fast_c: Any) -> bool:
    """Whether ``fast_c`` reads ndarray headers as numpy does (their layout is numpy's
    PyArrayObject_fields; a numpy that changed it gets the Python fast path)."""
    base = np.zeros((3, 4), np.float32)
    read_only = np.arange(5)
    read_only.flags.writeable = False
    cases = [base, base.T, base[:, 1], base[1], read_only, np.empty(0, np.int8), np.zeros((2, 0, 3))]
    return all(fast_c.header(a) == (a.flags.c_contiguous, a.flags.writeable, a.size, a.dtype) for a in cases)


def _import_c() -> Any:
    try:
        from . import _fast_c  # type: ignore[attr-defined]
    except ImportError:  # no compiler at install time
        return None
    return _fast_c


_fast_c = _import_c()


def _load_c() -> Paths | None:
    if _fast_c is None:
        return None
    _fast_c.setup(np.ndarray, *PYTHON)
    if not _reads_headers(_fast_c):
        return None
    return Paths(_fast_c.all_reduce, _fast_c.reduce_scatter, _fast_c.all_gather, _fast_c.broadcast, _fast_c.reduce,
                 _fast_c.all_to_all, _fast_c.gather, _fast_c.scatter)


C: Paths | None = _load_c()
"""The fast path in C, or None where it is not built (or reads ndarray headers otherwise)."""


def paths(pure_python: bool) -> Paths:
    """The C fast path where it is built and allowed, else the Python one."""
    return PYTHON if pure_python or C is None else C


def kept_run(comm: Communicator) -> Any:
    """The C fast path's runner of ``comm``'s kept plans (``_fast_c.KeptRun``: the steps of
    ``Communicator._run_kept`` without the interpreter's frame), or None where ``comm`` takes
    the Python fast path. Call at the end of ``comm.__init__``: it keeps what never changes."""
    if comm._fast is not C or C is None:
        return None
    return _fast_c.KeptRun(comm, nothing, TRACE_ENTRIES)
