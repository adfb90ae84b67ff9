"""The C happy path of the small-window plans (``_small_c``), where it is built and allowed.

A small collective's own work is a few copies and flag words; in Python its interpreter
dispatch costs more than that work (docs/performance.md, "Ninth round"). ``_small_c`` runs
a whole call in one C function, spinning briefly on a late peer, and returns how far it
got; the Python plans in ``small.py`` finish what it could not (sleeping waits, liveness,
timeouts, errors), so both paths give the same results, the same bits and the same errors.

The extension is built by ``pip install`` where a C compiler is present; without one, or
with ``COLLECTIVES_PURE_PYTHON=1`` (``Config.pure_python``, which clears the small window's
``in_c``), every call runs in Python.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..algorithms.direct_routes import ALL_REDUCE_HALVES_CROWDED_BYTES, REDUCE_SCATTER_HALVES_CROWDED_BYTES
from ..algorithms.registry import DIRECT_REDUCE_BYTES
from ..buffers import ALIASED_COPY_BYTES, address_of
from ..ops import ReduceOp
from ..transports.progress import LATE_PEER_YIELD_SECONDS, compiled_yield_seconds
from .direct import CPU, EXITED

try:
    from . import _small_c  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time: the Python plans do everything
    _small_c = None

PURE_PYTHON_ENV = "COLLECTIVES_PURE_PYTHON"
"""Set to 1 (``Config.pure_python``): the small window's calls (and the fast path's checks,
``_fast_path.paths``) run in Python only."""

ALL_REDUCE, ALL_GATHER, BARRIER, BROADCAST, REDUCE, GATHER, SCATTER, ALL_TO_ALL, ALL_REDUCE_TWO_SHOT = range(9)
"""Kinds of C plan (reduce-scatter is an all-reduce of one block; broadcast, reduce, gather and
scatter: the one-way calls through the slots, engines/slots.py; the two-shot all-reduce,
``small.TwoShotAllReducePlan``, folds in C or not at all)."""

NativePlan = Callable[..., int]
"""A C plan: ``(x, out, serial)``, ``(x, root index, serial)`` (broadcast, reduce), ``(x, out, root
index, serial)`` (gather, scatter; ``None`` for the buffer a rank does not have) or ``(serial,)``
(barrier) -> the call's serial when done, 0 when nothing was done, -serial when posted but
a peer is late or passed another count."""

NO_FOLD = -1
"""The C plan synchronises and copies, the caller folds (with numpy)."""

MAX_BYTES = ALIASED_COPY_BYTES[0]
"""The largest contribution taken in C: beyond it the interpreter's share of a call is
small, and from here ``buffers.copy_array`` sidesteps a slow memcpy that C would meet."""

CROWDED_TWO_SHOT_BYTES = ALL_REDUCE_HALVES_CROWDED_BYTES
"""Where ranks outnumber CPUs the two-shot all-reduce is taken in C up to this size (every size
the halves hold) rather than ``MAX_BYTES``: with eight ranks on two cores the Python plan's wait
per peer and shot, each a turn of the interpreter while the peers queue for a core, cost more
than the copies (docs/performance.md, "Twenty-ninth round, eight ranks at 256 KiB and the 2 MiB
all_gather"). Where every rank has a core the bound stays ``MAX_BYTES``."""

CROWDED_REDUCE_SCATTER_BYTES = REDUCE_SCATTER_HALVES_CROWDED_BYTES
"""The same for the reduce-scatter through the halves (an all-reduce of one block, ``reduced``):
where ranks outnumber CPUs taken in C at every size the halves take it, for the same reason
(docs/performance.md, "Thirty-first round, crowded reduce-scatters in C")."""

CROWDED_REDUCE_BYTES = DIRECT_REDUCE_BYTES
"""Where ranks outnumber CPUs the one-way reduce through the slots is taken in C up to a whole
slot (every size the slots take a reduce, and each piece of a larger one, ``PiecewiseReduce``)
rather than ``MAX_BYTES`` (docs/performance.md, "Thirty-second round, crowded reduces")."""

SLOT_BROADCAST_BYTES = 256 << 10
"""The one-way broadcast through the slots is taken in C up to a whole slot
(``small.PIPELINED_BROADCAST_BYTES``, every size the slots take a broadcast), whether ranks
outnumber CPUs or not, rather than ``MAX_BYTES``: from 192 KiB every call ran in Python, its
readers' waits and the root's wait for a free slot turns of the interpreter (at 4 ranks on 2 cores
while the ranks queue for a core), and the reader's copy goes by ``copy_bytes`` as ``copy_array``'s
would (docs/performance.md, "Thirty-fifth round, the 256 KiB cells that swing")."""

CROWDED_REDUCE_YIELD_SECONDS = LATE_PEER_YIELD_SECONDS
"""How long a crowded reduce's root yields in C to a late writer before it hands the call back to
the Python plan's sleeping waits (``YIELD_SECONDS`` for the writers and the other kinds;
``progress.compiled_yield_seconds``). The writers keep the short window: seven of them yielding
rather than sleeping while the root folds took the root's core."""

CROWDED_POLL_BYTES: int = 64 << 10 if _small_c is None else _small_c.CROWDED_POLL_BYTES
"""Where ranks outnumber CPUs a C plan of fewer bytes waits for its peers' flags yielding at
every poll, a larger one every 64th poll (``_small_c``; docs/performance.md, "Twenty-eighth
round, crowded waits by size")."""

_DTYPES = {np.dtype(t): code for code, t in enumerate(
    (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64))}
_OPS = {ReduceOp.SUM: 0, ReduceOp.AVG: 0, ReduceOp.PROD: 1, ReduceOp.MIN: 2, ReduceOp.MAX: 3,
        ReduceOp.BAND: 4, ReduceOp.BOR: 5, ReduceOp.BXOR: 6}


apart: Callable[[Any, Any], bool | None] | None = None if _small_c is None else _small_c.apart
"""``apart(a, b)``: whether two buffers are the same memory or do not overlap (None where
either is not one contiguous buffer), as ``buffers.same_or_apart`` says, in C; None where the
extension is not built."""


class _OneWayInPython:
    """``OneWayBase`` where the extension is not built: every call runs the plan's ``run``."""

    __slots__ = ()
    done = 0  # calls done in C: none here

    def __call__(self, x: Any, out: Any, call: Any) -> None:
        self.run(x, out, call)  # type: ignore[attr-defined]

    def arm(self, plan: Any, windows: Any, root_index: int) -> None:
        """Nothing to arm: no C plans."""


if TYPE_CHECKING:
    OneWayBase = _OneWayInPython
else:
    OneWayBase = _OneWayInPython if _small_c is None else _small_c.OneWayCall
"""The base of a one-way call's plan (plans/windowed.py's ``OneWay``): called as ``plan(x, out,
call)``, once ``arm(plan, windows, root_index)`` gave it its shape's C plan (a broadcast or a
reduce) it runs the call in C, counting it in ``done`` and the serial in
``windows.broadcast_serial``, without a Python frame of its own; unarmed, or where the C plan did
nothing (a slot still being read, a writer late, another count), it calls ``run(x, out, call)``."""


def built() -> bool:
    """Whether the C extension was built (and imports)."""
    return _small_c is not None


def fold_code(dtype: np.dtype, op: ReduceOp) -> int:
    """The operator code the C plan folds with for ``dtype`` and ``op``, or NO_FOLD where
    numpy must (float16, bfloat16, complex, bool; float MIN/MAX, whose signed zeros and NaNs
    numpy's vector loops order in their own way)."""
    dtype_code, op_code = _DTYPES.get(dtype), _OPS.get(op)
    if _small_c is None or dtype_code is None or op_code is None or not _small_c.folds(dtype_code, op_code):
        return NO_FOLD
    return op_code


def dtype_code(dtype: np.dtype) -> int:
    """The C folds' code of ``dtype`` (``_fold.h``), -1 where it has none."""
    return _DTYPES.get(dtype, -1)


def _bound(kind: int, scatter: bool, crowded: bool) -> int:
    """The largest call (bytes per rank) of ``kind`` taken in C: ``MAX_BYTES``, except the slots'
    broadcast (a whole slot) and, where ranks outnumber CPUs, the two-shot all-reduce, the
    reduce-scatter (``scatter``: an all-reduce of one block) and the slots' reduce up to their
    crowded bounds."""
    if crowded and kind == ALL_REDUCE_TWO_SHOT:
        return CROWDED_TWO_SHOT_BYTES
    if crowded and kind == ALL_REDUCE and scatter:
        return CROWDED_REDUCE_SCATTER_BYTES
    if crowded and kind == REDUCE:
        return CROWDED_REDUCE_BYTES
    if kind == BROADCAST:
        return SLOT_BROADCAST_BYTES
    return MAX_BYTES


def _yield_seconds(kind: int, crowded: bool, root: bool = False) -> float:
    """How long a C plan of ``kind`` yields to a late peer before handing the call back: none
    where every rank has a CPU (it spins), ``CROWDED_REDUCE_YIELD_SECONDS`` for a crowded reduce's
    ``root``, else ``YIELD_SECONDS``."""
    return compiled_yield_seconds(crowded, waits_for_late_peers=kind == REDUCE and root)


def plan(window: Any, kind: int, areas: Sequence[Sequence[np.ndarray]], *, flag: int, len_slot: int,
         nbytes: int, len_word: int, dtype: np.dtype | None = None, op: int = NO_FOLD,
         reduced: tuple[int, int] | None = None, len_ring: int = 0, red_flag: int = -1) -> NativePlan | None:
    """A C plan over ``window`` (``areas``: each area of the call as every window rank's
    view, in window-rank order), or None where calls run in Python (not built, too large, or a
    window whose ``in_c`` is false: turned off, or not a shared-memory window; a reduce whose
    ``op`` C does not fold). ``reduced`` is the (byte offset, bytes) of the areas this rank folds
    (its block, for a reduce-scatter). A broadcast or reduce finds call b's byte count at flag
    ``len_slot + b % len_ring`` (0: as many words as areas). A two-shot all-reduce posts its
    reduced block at flag ``red_flag``."""
    bound = _bound(kind, reduced is not None, getattr(window, "oversubscribed", False))
    if _small_c is None or not getattr(window, "in_c", False) or nbytes > bound or (nbytes == 0 and kind != BARRIER):
        return None
    if kind in (REDUCE, ALL_REDUCE_TWO_SHOT) and op == NO_FOLD:
        return None
    flags = [window.flag_area(q) for q in window.ranks]
    bells = window.transport.doorbells()
    offset, length = reduced if reduced is not None else (0, nbytes)
    keep = (flags, [list(a) for a in areas], bells)  # the views that keep every mapping alive
    return cast(NativePlan, _small_c.SmallPlan(
        kind=kind, me=window.ranks.index(window.rank), flags=[address_of(f) for f in flags],
        areas=[address_of(view) for area in areas for view in area],
        doorbells=[ctypes.addressof(d) for d, _ in bells], sleepers=[ctypes.addressof(s) for _, s in bells],
        flag=flag, len_slot=len_slot, nbytes=nbytes, len_word=len_word,
        dtype=_DTYPES.get(dtype, -1) if dtype is not None else -1, op=op, red_offset=offset, red_bytes=length,
        # Where ranks outnumber CPUs nobody spins, and a late peer is waited for by yielding the
        # CPU to it, in C first (a check and a sched_yield per turn, not a Python loop's).
        spin_ns=int(window.spin_seconds * 1e9), yield_ns=int(_yield_seconds(kind, window.oversubscribed) * 1e9),
        root_yield_ns=int(_yield_seconds(kind, window.oversubscribed, root=True) * 1e9),
        keep=keep, cpu_slot=CPU, len_ring=len_ring, exit_slot=EXITED if kind == BARRIER else -1,
        red_flag=red_flag))
