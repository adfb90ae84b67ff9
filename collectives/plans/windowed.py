"""Plans on the shared-window engine: every rank on this host, over shared memory.

Small collectives go through the small window (one flag per call: ``engines.small``);
larger all-reduces and reduce-scatters through the scratch window in two shots
(``engines.direct``), or by single-copy reads of peers' memory where the kernel allows
them; all-gathers and broadcasts by single-copy reads, where a window copy does not beat
them. Each plan counts its calls with the serial of its kind (``SharedWindows``), and
opens what it needs on first use (collectively: every rank runs the same plan).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..algorithms import direct_routes
from ..algorithms.registry import DIRECT_REDUCE_BYTES
from ..algorithms.schedule import partition
from ..buffers import copy_array
from ..engines import direct, exchange_reads, slots, small
from ..engines.call import Call
from ..engines import windows as window_engine
from ..engines.small_native import NO_FOLD, OneWayBase
from ..engines.windows import SharedWindows
from ..ops import ReduceOp, finalize
from .base import Plan


class SmallReduction:
    """Small all-reduces (or reduce-scatters) of one shape and operator through the halves."""

    __slots__ = ("windows", "make", "kernel", "native", "done_in_c", "op", "averages", "size")

    def __init__(self, windows: SharedWindows, make: Callable[[Any], Any], op: ReduceOp) -> None:
        self.windows = windows
        self.make = make  # the engine's plan for the small window, once it is open
        self.kernel: Any = None
        self.native: Any = None  # the kernel's C plan (engines/small_native.py), called here directly
        self.done_in_c = False  # whether a C call that returns a serial also folded
        self.op = op
        self.averages = op is ReduceOp.AVG
        self.size = windows.size

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        windows = self.windows
        kernel = self.kernel
        if kernel is None:
            kernel = self.kernel = self.make(windows.small(call))
            self.native, self.done_in_c = kernel.native, kernel.fold != NO_FOLD
        native = self.native
        s = native(x, out, windows.small_serial) if native is not None else 0
        if s <= 0 or not self.done_in_c:
            s = kernel.resume(s, x, out, windows.small_serial, call.deadline, call.timed_out)
        windows.small_serial = s
        if self.averages:
            finalize(ReduceOp.AVG, out, self.size)


_SLOT_CALL_FIELDS = ("windows", "root", "make", "kernel", "native", "root_index")


class _SlotCall:
    """What the calls through the slots keep: the engine's plan of their shape and root, made
    on the first call (the window opens then), its C plan and the root's index in the window.
    The fields (``_SLOT_CALL_FIELDS``) are each subclass's own slots: ``OneWay``'s first base
    is a C type with a layout of its own, which a base with slots of its own would clash with."""

    if not TYPE_CHECKING:  # (mypy would take the empty slots for the fields' absence)
        __slots__ = ()
    windows: SharedWindows
    root: int
    make: Callable[[Any], Any]
    kernel: Any
    native: Any
    root_index: int

    def __init__(self, windows: SharedWindows, root: int, make: Callable[[Any], Any]) -> None:
        self.windows = windows
        self.root = root
        self.make = make  # the engine's plan, once the window is open
        self.kernel = None
        self.native = None
        self.root_index = 0

    def _open(self, call: Call) -> Any:
        kernel = self.kernel = self.make(self.windows.small(call))
        self.native, self.root_index = kernel.native, kernel.index[self.root]
        return kernel


class SlotExchange(_SlotCall):
    """Small gathers or scatters of one shape and root, one way through the slots of the small
    window (``slots.PipelinedGatherPlan``, ``slots.PipelinedScatterPlan``): a gather's other
    ranks copy their ``x`` into their slot and go on, and the root copies every slot into its
    ``out``; a scatter's root copies its ``x`` into its slot and goes on, and every rank copies
    its block out. Messages of a schedule cost more than these copies on one host."""

    __slots__ = _SLOT_CALL_FIELDS

    def __call__(self, x: np.ndarray | None, out: np.ndarray | None, call: Call) -> None:
        windows = self.windows
        kernel = self.kernel or self._open(call)
        native = self.native
        b = native(x, out, self.root_index, windows.broadcast_serial) if native is not None else 0
        if b <= 0:  # nothing done
            b = kernel.resume(b, x, out, self.root, windows.broadcast_serial, call.deadline, call.timed_out)
        windows.broadcast_serial = b


class ReadsExchange:
    """All-to-alls, gathers and scatters by single-copy reads of peers' memory where the kernel
    allows them (``engines.exchange_reads.ExchangeByReads``) and ``suits`` the window (None: any),
    else ``fallback`` (the window's plan, or a schedule). The route is found on the first call
    (the probe is collective and the window's ``oversubscribed`` agreed: every rank agrees) and kept."""

    __slots__ = ("windows", "make", "fallback", "suits", "route", "reads")

    def __init__(self, windows: SharedWindows, make: Callable[[Any, Any], Any], fallback: Callable[[], Plan],
                 suits: Callable[[Any], bool] | None = None) -> None:
        self.windows = windows
        self.make = make  # (window, peer memory) -> the engine's plan
        self.fallback = fallback
        self.suits = suits
        self.route: Any = None
        self.reads = False

    def __call__(self, x: np.ndarray | None, out: np.ndarray | None, call: Call) -> None:
        windows = self.windows
        if self.route is None:
            memory = windows.peer_memory(call)
            window = windows.small(call)
            self.reads = memory is not None and (self.suits is None or self.suits(window))
            self.route = self.make(window, memory) if self.reads else self.fallback()
        if self.reads:
            windows.memory_serial = self.route(x, out, windows.memory_serial, call.deadline, call.timed_out)
        else:
            self.route(x, out, call)


class SmallAllToAll:
    """Small all-to-alls of one shape through the halves (``small.AllToAllPlan``): one copy
    in, one flag, a block out of each peer's half, instead of a message per pair."""

    __slots__ = ("windows", "dtype", "count", "kernel")

    def __init__(self, windows: SharedWindows, dtype: np.dtype, count: int) -> None:
        self.windows = windows
        self.dtype, self.count = dtype, count
        self.kernel: Any = None

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        windows = self.windows
        kernel = self.kernel
        if kernel is None:
            kernel = self.kernel = small.AllToAllPlan(windows.small(call), self.dtype, self.count)
        native = kernel.native
        s = native(x, out, windows.small_serial) if native is not None else 0
        if s <= 0:
            s = kernel.resume(s, x, out, windows.small_serial, call.deadline, call.timed_out)
        windows.small_serial = s


class SmallBarrier:
    """Barriers through the small window's flags: one post and a read of every peer's flag,
    where the scheduled barrier sends ceil(lg p) rounds of messages."""

    __slots__ = ("windows", "kernel", "native")

    def __init__(self, windows: SharedWindows) -> None:
        self.windows = windows
        self.kernel: Any = None
        self.native: Any = None

    def __call__(self, x: np.ndarray, out: None, call: Call) -> None:
        windows = self.windows
        kernel = self.kernel
        if kernel is None:
            kernel = self.kernel = small.BarrierPlan(windows.small(call))
            self.native = kernel.native
        native = self.native
        s = native(windows.small_serial) if native is not None else 0
        if s <= 0:
            s = kernel.resume(s, windows.small_serial, call.deadline, call.timed_out)
        windows.small_serial = s


class PiecewiseAllReduce:
    """All-reduces too large for one call through the halves, where ranks outnumber cores
    (``direct_routes.all_reduce_pieces``): through them a piece at a time, each piece one small
    all-reduce (``SmallReduction`` over ``small.all_reduce_plan`` of its length: at most two
    lengths, each with its C plan). The halves alternate from call to call, so a rank copies piece
    k + 1 into one while its peers still read piece k out of the other. Each piece's blocks are
    folded in rank order by their owner: every rank gets the same bits, those of one whole call."""

    __slots__ = ("pieces",)

    def __init__(self, windows: SharedWindows, dtype: np.dtype, count: int, op: ReduceOp, pieces: int) -> None:
        calls: dict[int, SmallReduction] = {}  # one plan per piece length
        for _, n in partition(count, pieces):
            if n not in calls:
                calls[n] = SmallReduction(windows, functools.partial(small.all_reduce_plan, dtype=dtype, size=n, op=op), op)
        self.pieces = tuple((lo, lo + n, calls[n]) for lo, n in partition(count, pieces))

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        flat_x, flat_out = x.reshape(-1), out.reshape(-1)
        for lo, hi, reduction in self.pieces:
            reduction(flat_x[lo:hi], flat_out[lo:hi], call)


class WindowReduction:
    """All-reduces (``scatter=False``) or reduce-scatters too large for the halves: by reads
    of peers' memory from ``direct_routes.reads_from`` where allowed, else two shots through the
    scratch window; those that ``direct_routes.reduce_scatter_by_halves`` or
    ``direct_routes.all_reduce_halves_crowded`` send there (where ranks outnumber cores) through the
    halves after all (``halves``: the engine's plan, made once the window is open), all-reduces
    larger than one call takes piece by piece (``PiecewiseAllReduce``)."""

    def __init__(self, windows: SharedWindows, op: ReduceOp, *, scatter: bool, nbytes: int,
                 halves: Callable[[Any], Any] | None = None) -> None:
        self.windows = windows
        self.op = op
        self.scatter = scatter
        self.nbytes = nbytes
        self.halves = halves
        self.small: SmallReduction | PiecewiseAllReduce | None = None
        self.try_reads: bool | None = None  # found on the first call (the window says whether ranks outnumber cores)
        self.by_reads = direct.reduce_scatter_by_reads if scatter else direct.all_reduce_by_reads
        self.native: direct.FoldPlan | None = None  # the C plan by reads (made on the first call by reads)
        self.native_made = False
        self.two_shot: Callable[..., int] = direct.reduce_scatter if scatter else direct.all_reduce

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        if self.try_reads is None:
            crowded = self.windows.small(call).oversubscribed
            self.try_reads = self.nbytes >= direct_routes.reads_from(self.scatter, crowded)
            by_halves = direct_routes.reduce_scatter_by_halves if self.scatter else direct_routes.all_reduce_halves_crowded
            if self.halves is not None and by_halves(self.nbytes, crowded):
                pieces = 1 if self.scatter else direct_routes.all_reduce_pieces(self.nbytes, crowded)
                if pieces > 1:
                    self.small = PiecewiseAllReduce(self.windows, x.dtype, x.size, self.op, pieces)
                elif small.halves_take(self.nbytes):
                    self.small = SmallReduction(self.windows, self.halves, self.op)
        if self.small is not None:
            self.small(x, out, call)
            return
        if not (self.try_reads and self._by_reads(x, out, call)):
            windows = self.windows
            into: dict[str, np.ndarray] = {}
            if not self.scatter and out is not x:
                if windows.is_registered(x) or np.may_share_memory(x, out):  # peers read x itself; out overlaps x
                    copy_array(out, x)
                else:  # peers read my copy of x in the scratch window: the result straight into out
                    into["out"] = out
            # Every rank asks for the same size (even one whose input lives in a registered
            # window and needs no scratch), so all agree on when the scratch grows.
            source = x if self.scatter or into else out
            scratch = windows.scratch(source.nbytes, call)
            buffers = (source, out) if self.scatter else (source,)
            step = max(1, window_engine.DIRECT_STEP_BYTES // source.itemsize)
            windows.window_serial = self.two_shot(
                scratch, windows.registered, *buffers, self.op, step, windows.window_serial, call.deadline,
                call.timed_out, **into,
            )
        finalize(self.op, out, self.windows.size)

    def _by_reads(self, x: np.ndarray, out: np.ndarray, call: Call) -> bool:
        """Run the reads algorithm if the kernel allows reads of peers' memory and no rank's
        buffers live in a registered window (those take the window scheme, which copies
        nothing, where reads of shared mappings are slow). Returns whether it ran; every
        rank gets the same answer."""
        windows = self.windows
        reads = windows.reads(call)
        if reads is None:
            return False
        registered = windows.is_registered(x) or windows.is_registered(out)
        ok, windows.memory_serial = direct.agree(
            windows.small_window, not registered, windows.memory_serial, call.deadline, call.timed_out
        )
        if ok:
            if not self.native_made:
                self.native_made = True
                self.native = exchange_reads.fold_plan(reads.window, reads.memory, x.dtype, x.size, self.op, None,
                                                       reads.step(x), every=not self.scatter)
            windows.memory_serial = self.by_reads(reads, x, out, self.op, windows.memory_serial, self.native)
        return ok


class LargeReduce:
    """Reduces too large for one slot. By reads of peers' memory from
    ``direct_routes.reduce_reads_from`` where the kernel allows them (``direct.reduce_by_reads``:
    every rank folds a block, the root reads the folded blocks); below, where
    ``direct_routes.reduce_by_pieces`` says, through the slots piece by piece
    (``PiecewiseReduce``); else ``fallback`` (a schedule). The route is found on the first call
    (the probe is collective and the window's ``oversubscribed`` agreed: every rank agrees) and
    kept. The root's ``out`` (apart from its ``x``; None: in place) is folded into straight by
    the reads; the other routes run in place on it, filled from ``x`` first. The reads run in C
    where ``exchange_reads.fold_plan`` makes a plan (``direct_routes.folds_in_c``)."""

    __slots__ = ("windows", "op", "root", "dtype", "count", "fallback", "route", "kept", "native")
    folds_into_out = True  # the fast paths pass a reduce's root ``out`` (apart from ``x``) as it is

    def __init__(self, windows: SharedWindows, op: ReduceOp, root: int, dtype: np.dtype, count: int,
                 fallback: Callable[[], Plan]) -> None:
        self.windows = windows
        self.op, self.root = op, root
        self.dtype, self.count = dtype, count
        self.fallback = fallback
        self.route: Any = None  # pieces or the fallback plan, where the call is below the reads' size or they are refused
        self.kept: np.ndarray | None = None  # where this rank folds its block (reads: found on the first call)
        self.native: direct.FoldPlan | None = None  # the reads' C plan (``exchange_reads.fold_plan``), with ``kept``

    def __call__(self, x: np.ndarray, out: np.ndarray | None, call: Call) -> None:
        windows = self.windows
        if self.kept is None and self.route is None:
            self._find_route(call)
        if self.route is not None:
            if out is not None:
                copy_array(out, x)
            self.route(x if out is None else out, None, call)
            return
        reads = windows.reads(call)
        assert reads is not None and self.kept is not None  # allowed on the first call, kept
        windows.memory_serial = direct.reduce_by_reads(reads, x, self.kept, self.op, self.root, windows.memory_serial,
                                                       out, self.native)
        if self.op is ReduceOp.AVG and windows.rank == self.root:
            finalize(ReduceOp.AVG, x if out is None else out, windows.size)

    def _find_route(self, call: Call) -> None:
        windows = self.windows
        crowded = windows.small(call).oversubscribed
        nbytes = self.count * self.dtype.itemsize
        if direct_routes.reduce_by_pieces(nbytes, crowded, windows.size):
            self.route = PiecewiseReduce(windows, self.root, self.dtype, self.count, self.op)
        elif nbytes < direct_routes.reduce_reads_from(crowded, windows.size) or windows.peer_memory(call) is None:
            self.route = self.fallback()
        else:
            self.kept = np.empty(-(-self.count // windows.size), self.dtype)
            reads = windows.reads(call)
            assert reads is not None  # peer_memory allowed them just above
            chunk = max(1, reads.piece.nbytes // self.dtype.itemsize)  # reads.step's
            self.native = exchange_reads.fold_plan(reads.window, reads.memory, self.dtype, self.count, self.op,
                                                   self.root, chunk)


class PiecewiseReduce:
    """Reduces too large for one slot, through the slots in pieces of at most a slot, each a
    one-way call (``OneWay`` over ``slots.PipelinedReducePlan``): the other ranks copy a piece
    into a slot and go on to the next, up to a round of slots ahead of the root, which folds
    each piece as it comes. Every piece is folded in rank order: the bits of one whole call."""

    __slots__ = ("pieces", "averages", "size")

    def __init__(self, windows: SharedWindows, root: int, dtype: np.dtype, count: int, op: ReduceOp) -> None:
        per_piece = DIRECT_REDUCE_BYTES // dtype.itemsize  # what one one-way reduce takes (the planner's limit)
        blocks = partition(count, -(-count // per_piece))
        calls: dict[int, OneWay] = {}  # one plan per piece length (at most two)
        for _, n in blocks:
            if n not in calls:
                calls[n] = OneWay(windows, root, functools.partial(slots.PipelinedReducePlan, dtype=dtype, size=n, op=op))
        self.pieces = tuple((lo, lo + n, calls[n]) for lo, n in blocks)
        self.averages = op is ReduceOp.AVG and windows.rank == root
        self.size = windows.size

    def __call__(self, x: np.ndarray, out: None, call: Call) -> None:
        for lo, hi, one_way in self.pieces:
            one_way(x[lo:hi], None, call)
        if self.averages:
            finalize(ReduceOp.AVG, x, self.size)


class WindowAllGather:
    """All-gathers of one shape: through the small window where the contribution fits it,
    by single-copy reads where they are allowed and the window does not win, else
    ``fallback`` (a schedule). The route is found on the first call (it depends on the
    window and the kernel, the same on every rank) and kept."""

    def __init__(self, windows: SharedWindows, dtype: np.dtype, count: int, fallback: Callable[[], Plan]) -> None:
        self.windows = windows
        self.dtype, self.count = dtype, count
        self.fallback = fallback
        self.route: Any = None
        self.serial = ""  # the windows' serial the route counts with ("" for a schedule)

    def _find_route(self, call: Call) -> None:
        windows = self.windows
        nbytes = self.count * self.dtype.itemsize
        window = windows.small(call)
        fits_window = nbytes <= small.gather_bytes(window)  # (at most direct_routes.GATHER_BYTES)
        memory = windows.peer_memory(call) if direct_routes.all_gather_by_reads(nbytes, window.oversubscribed) else None
        if fits_window and memory is None:
            self.route, self.serial = small.AllGatherPlan(windows.small_window, self.dtype, self.count), "small_serial"
        elif memory is not None:
            self.route = exchange_reads.ExchangeByReads(
                exchange_reads.ALL_GATHER, windows.small_window, memory, self.dtype.itemsize, self.count)
            self.serial = "memory_serial"
        else:
            self.route = self.fallback()

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        if self.route is None:
            self._find_route(call)
        windows = self.windows
        if self.serial == "small_serial":
            route, native = self.route, self.route.native
            s = native(x, out, windows.small_serial) if native is not None else 0
            if s <= 0:
                s = route.resume(s, x, out, windows.small_serial, call.deadline, call.timed_out)
            windows.small_serial = s
        elif self.serial:
            windows.memory_serial = self.route(x, out, windows.memory_serial, call.deadline, call.timed_out)
        else:
            self.route(x, out, call)


class OneWay(OneWayBase, _SlotCall):
    """Small broadcasts or reduces of one shape and root, one way through the slots of the
    small window (``slots.PipelinedBroadcastPlan``, ``slots.PipelinedReducePlan``): the ranks
    that only write (a broadcast's root, a reduce's others) copy ``x`` into their slot and go
    on; the readers copy or fold it. Back-to-back calls then cost a writer one copy, as an MPI
    sender's eager message does, not a wait for the readers. ``averages``: this rank divides
    its result by the world size (an AVG reduce's root). Once the window is open, a shape with a
    C plan that nothing follows in Python (no average) is armed: its calls run in C
    (``small_native.OneWayBase``), ``run`` only where C did nothing."""

    __slots__ = (*_SLOT_CALL_FIELDS, "averages")

    def __init__(self, windows: SharedWindows, root: int, make: Callable[[Any], Any], averages: bool = False) -> None:
        _SlotCall.__init__(self, windows, root, make)
        self.averages = averages

    def _open(self, call: Call) -> Any:
        kernel = _SlotCall._open(self, call)
        if self.native is not None and not self.averages:
            self.arm(self.native, self.windows, self.root_index)
        return kernel

    def run(self, x: np.ndarray, out: None, call: Call) -> None:
        """The call in Python: the C plan first where there is one, else or where it did nothing
        the engine's plan."""
        windows = self.windows
        kernel = self.kernel or self._open(call)
        native = self.native
        b = native(x, self.root_index, windows.broadcast_serial) if native is not None else 0
        if b <= 0:  # nothing done
            b = kernel.resume(b, x, self.root, windows.broadcast_serial, call.deadline, call.timed_out)
        windows.broadcast_serial = b
        if self.averages:
            finalize(ReduceOp.AVG, x, windows.size)


class WindowBroadcast:
    """Broadcasts too large for the slots: through the halves up to ``small.BROADCAST_BYTES``,
    beyond it through them piece by piece where ranks outnumber cores
    (``direct_routes.broadcast_by_halves``), else by single-copy reads (the root writing its share
    unless ranks outnumber cores), else ``fallback`` (a schedule) where reads are refused."""

    def __init__(self, windows: SharedWindows, root: int, dtype: np.dtype, count: int,
                 fallback: Callable[[], Plan]) -> None:
        self.windows = windows
        self.root = root
        self.dtype, self.count = dtype, count
        self.halves: bool | None = True if count * dtype.itemsize <= small.BROADCAST_BYTES else None
        self.fallback = fallback
        self.kernel: Any = None

    def __call__(self, x: np.ndarray, out: None, call: Call) -> None:
        windows = self.windows
        if self.halves is None:  # found on the first call (the window says whether ranks outnumber cores)
            crowded = windows.small(call).oversubscribed
            self.halves = direct_routes.broadcast_by_halves(self.count * self.dtype.itemsize, crowded)
        if self.halves:
            if self.kernel is None:
                whole = self.count * self.dtype.itemsize <= small.BROADCAST_BYTES
                plan = small.BroadcastPlan if whole else small.PiecewiseBroadcastPlan
                self.kernel = plan(windows.small(call), self.dtype, self.count)
            windows.small_serial = self.kernel(x, self.root, windows.small_serial, call.deadline, call.timed_out)
            return
        memory = windows.peer_memory(call)
        if memory is None:
            if self.kernel is None:
                self.kernel = self.fallback()
            self.kernel(x, None, call)
            return
        window = windows.small_window
        windows.memory_serial = direct.broadcast(
            window, memory, x.view(np.uint8), self.root, windows.memory_serial, call.deadline, call.timed_out,
            root_writes=not window.oversubscribed,
        )
