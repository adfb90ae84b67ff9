"""Small collectives on one host, latency over bandwidth: one flag per call.

Every rank owns a small shared window: two halves, then the slots of pipelined
broadcasts. Call s uses half ``s % 2``: a rank copies what peers need into its half,
publishes ``SMALL = s`` and reads what it needs straight out of the peers' halves.
Nothing is framed or queued, and the only synchronisation is that one counter per rank.

Before writing half ``s % 2`` a rank waits until every peer has posted ``s - 1``: a peer
posts ``s - 1`` when it starts call s - 1, so it has finished call s - 2, the last one
that read that half. (All-reduce, where everyone waits for everyone within a call, never
actually waits there; broadcast, where the root waits for nobody, needs it.) The window's
slots, after the halves, carry the one-way calls (broadcast, reduce, gather, scatter:
engines/slots.py), which count on their own flag, ``BROADCAST``.

Every call also writes how many bytes it put in its half (or slot) beside its flag
(``direct.HALF_LEN``, ``direct.SLOT_LEN``), and a rank reading a peer's half compares that
with its own count first: ranks that passed different counts raise
``MessageMismatchError`` rather than reduce or copy a short or long half.

Where ``small_native`` built a C plan for a shape (``plan.native``), the caller
(plans/windowed.py) runs it first and hands its result to the plan's ``resume``, which
finishes the call in Python from where C stopped; ``resume(0, ...)`` runs a whole call.

Repeated calls of one shape run a *plan*: the views and flag words a call needs, looked
up once. Reductions run in rank order 0..p-1 on the same operands everywhere, so every
rank gets the same bits. Every call returns the new serial (the same on every rank).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..buffers import address_of, copy_array
from ..ops import ReduceOp, kernel_of
from . import small_native
from .direct import BARRIER_LEN, EXITED, HALF_LEN, REDUCED, SMALL, Window, count_mismatch
from ..algorithms import direct_routes
from ..algorithms.direct_routes import ALL_REDUCE_HALVES_BYTES, BROADCAST_BYTES, HALF_BYTES  # the engine's own (tests shrink them)
from ..algorithms.schedule import partition

OnTimeout = Callable[[list[int]], BaseException]

EXIT_WAIT_SECONDS = 2e-3
"""How long the rank that completes a barrier waits for peers that waited it out beyond their
spin to run again (``BarrierPlan._await_exits``; engines/_small_c.c's EXIT_WAIT_NS)."""


IN_PLACE_SKIP_BYTES = 64 << 10
"""From here an in-place all-gather leaves my block where it is instead of copying it back
from the window (below, the extra check cost more than the copy it saves)."""


PIPELINED_BROADCAST_BYTES = 256 << 10
"""The largest broadcast taken through the pipelined slots (``PipelinedBroadcastPlan``).
Measured: docs/performance.md, "Thresholds", PIPELINED_BROADCAST_BYTES."""

PIPELINED_BROADCAST_SLOTS = 8
"""How many broadcasts the root may run ahead of the slowest rank."""

EAGER_BROADCAST_BYTES = 32 << 10
"""Pipelined broadcasts up to here take slots of their own, EAGER_BROADCAST_SLOTS of them:
a root of back-to-back small broadcasts then runs that many calls ahead before it waits on
the slowest rank, as an MPI root does with its eager cells. Eight slots made the root of
twenty calls (nccl-tests' default) wait for a round of its sleeping peers at eight ranks on
two cores. Measured: docs/performance.md, "Thresholds", EAGER_BROADCAST_SLOTS."""

EAGER_BROADCAST_SLOTS = 32
"""How many small broadcasts (at most EAGER_BROADCAST_BYTES) the root may run ahead."""

SLOT_LENS = max(PIPELINED_BROADCAST_SLOTS, EAGER_BROADCAST_SLOTS)
"""Pipelined broadcast b writes its byte count at flag ``SLOT_LEN + b % SLOT_LENS``, whichever
slots it takes: the word is rewritten only once the call that last wrote it is done
everywhere (a root waits for that before it reuses a slot of either kind), and a rank that
expects the other kind of slot (another count) finds this call's count, never a stale one."""


def window_bytes() -> int:
    """The small window's size: two halves, then the pipelined broadcasts' slots, then the
    small broadcasts' eager slots."""
    return 2 * _half_bytes() + PIPELINED_BROADCAST_SLOTS * PIPELINED_BROADCAST_BYTES + \
        EAGER_BROADCAST_SLOTS * EAGER_BROADCAST_BYTES


def _half_bytes() -> int:
    return max(HALF_BYTES, BROADCAST_BYTES, direct_routes.GATHER_BYTES)


def halves_take(nbytes: int) -> bool:
    """Whether a contribution of ``nbytes`` fits the small window's halves."""
    return nbytes <= _half_bytes()


def all_reduce_halves_take(nbytes: int) -> bool:
    """Whether an all-reduce of ``nbytes`` (bytes of ``x``) goes through the halves (the other
    reductions up to ``HALF_BYTES``)."""
    return nbytes <= ALL_REDUCE_HALVES_BYTES


def gather_bytes(window: Window) -> int:
    """The largest all-gather contribution to take through ``window``."""
    return direct_routes.gather_window_bytes(window.oversubscribed)


def _reduce_with(kernel: np.ufunc, sources: Sequence[np.ndarray], out: np.ndarray) -> None:
    """``out = sources[0] op sources[1] op ...`` in that order (out is none of them)."""
    if len(sources) == 1:
        copy_array(out, sources[0])
        return
    kernel(sources[0], sources[1], out=out)
    for source in sources[2:]:
        kernel(out, source, out=out)


class _Plan:
    """Small collectives of one shape (dtype, element count) over one window, with what
    every call needs looked up once: both halves' views of every rank's copy and the
    peers' flag words. A repeated small call (a loss, a norm, a flag) then spends its time
    on the copies and one flag; the lookups were half of it (docs/performance.md,
    "Thresholds", small plans)."""

    def __init__(self, window: Window, dtype: np.dtype, size: int) -> None:
        nbytes = dtype.itemsize * size
        half = _half_bytes()
        if nbytes > half:
            raise ValueError(f"a small collective takes at most {half} bytes per rank, not {nbytes}")
        self.window = window
        self.nbytes = nbytes
        self.mine: Any = window.flags(window.rank)  # written: this rank's halves' byte counts
        self.me = window.ranks.index(window.rank)
        self.halves = tuple(window.slices(h * half, h * half + nbytes, dtype) for h in (0, 1))
        self.peers = tuple((q, window.flags(q)) for q in window.ranks if q != window.rank)
        self.native: small_native.NativePlan | None = None

    def _begin(self, serial: int, deadline: float, on_timeout: OnTimeout) -> int:
        """The new serial s, once half s % 2 is free: every peer has begun call s - 1."""
        s = serial + 1
        for q, flags in self.peers:
            if flags[SMALL] < s - 1:
                self.window.wait(q, SMALL, s - 1, deadline, on_timeout)
        return s

    def _post(self, x: np.ndarray, serial: int, deadline: float, on_timeout: OnTimeout) -> int:
        """Begin call ``serial + 1`` (once its half is free): copy ``x`` into my half, say how
        many bytes it holds and post. Returns the call's serial."""
        s = self._begin(serial, deadline, on_timeout)
        copy_array(self.halves[s & 1][self.me], x)
        self.mine[HALF_LEN + (s & 1)] = self.nbytes
        self.window.post(SMALL, s)
        return s

    def _wait(self, q: int, flags: Sequence[int], s: int, deadline: float, on_timeout: OnTimeout) -> None:
        """Wait until rank q has posted call s, and check that its half holds as many
        bytes as mine."""
        if flags[SMALL] < s:
            self.window.wait(q, SMALL, s, deadline, on_timeout)
        if flags[HALF_LEN + (s & 1)] != self.nbytes:
            raise count_mismatch(q, flags[HALF_LEN + (s & 1)], self.nbytes)

    def _native(self, kind: int, dtype: np.dtype, op: int = small_native.NO_FOLD,
                reduced: tuple[int, int] | None = None) -> small_native.NativePlan | None:
        """The C plan of this shape (``small_native``), or None."""
        return small_native.plan(self.window, kind, self.halves, flag=SMALL, len_slot=HALF_LEN, nbytes=self.nbytes,
                                 len_word=self.nbytes, dtype=dtype, op=op, reduced=reduced)


class BarrierPlan:
    """Barriers: post the next serial, return once every peer has posted it. A barrier
    takes a serial like any small call (so the halves' turns stay the same on every rank)
    and writes ``BARRIER_LEN`` where a data call writes its byte count, so that a barrier
    meeting a data call raises on both sides instead of passing data to neither."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.mine: Any = window.flags(window.rank)  # written: the word where data calls put their byte count
        self.peers = tuple((q, window.flags(q)) for q in window.ranks if q != window.rank)
        self.native = small_native.plan(window, small_native.BARRIER, (), flag=SMALL, len_slot=HALF_LEN, nbytes=0,
                                        len_word=BARRIER_LEN)

    def resume(self, code: int, serial: int, deadline: float, on_timeout: OnTimeout) -> int:
        """Finish the barrier after ``serial`` from where the C plan's result ``code`` left it
        (0: nothing done, or no C plan: the whole barrier here)."""
        if code > 0:
            return code
        if code < 0:  # posted; a peer is late (or met a data call)
            return self._arrive(-code, deadline, on_timeout)
        s = serial + 1
        window = self.window
        for q, flags in self.peers:  # my word of half s % 2 is free once every peer began s - 1
            if flags[SMALL] < s - 1:
                window.wait(q, SMALL, s - 1, deadline, on_timeout)
        self.mine[HALF_LEN + (s & 1)] = BARRIER_LEN  # a data call meeting it raises, as below
        window.post(SMALL, s)
        return self._arrive(s, deadline, on_timeout)

    def _arrive(self, s: int, deadline: float, on_timeout: OnTimeout) -> int:
        """Wait until every peer has posted barrier ``s``. This rank's ``EXITED`` word says
        meanwhile that it may be asleep, and the ranks leave together (``_await_exits``)."""
        window = self.window
        length = HALF_LEN + (s & 1)
        self.mine[EXITED] = 2 * s
        try:
            for q, flags in self.peers:
                if flags[SMALL] < s:
                    window.wait(q, SMALL, s, deadline, on_timeout)
                if flags[length] != BARRIER_LEN:
                    raise count_mismatch(q, flags[length], BARRIER_LEN)
        finally:
            self.mine[EXITED] = 2 * s + 1
        self._await_exits(s)
        return s

    def _await_exits(self, s: int) -> None:
        """Yield until no peer is still waiting out barrier ``s`` (woken, it may not run yet),
        at most ``EXIT_WAIT_SECONDS``: as engines/_small_c.c's ``await_exits``, for the
        barriers that finish here."""
        until = 0.0
        for _, flags in self.peers:
            while flags[EXITED] == 2 * s:
                now = time.monotonic()
                if not until:
                    until = now + EXIT_WAIT_SECONDS
                elif now >= until:
                    return
                os.sched_yield()


class AllReducePlan(_Plan):
    """Small all-reduces of one shape and operator."""

    def __init__(self, window: Window, dtype: np.dtype, size: int, op: ReduceOp,
                 reduced: tuple[int, int] | None = None) -> None:
        super().__init__(window, dtype, size)
        self.averages = op is ReduceOp.AVG  # the caller divides (ops.finalize)
        self.kernel = kernel_of(op)
        self.operands = self.halves  # per half: what this rank reduces (every rank's copy)
        self.fold = small_native.fold_code(dtype, op)
        self.native = self._native(small_native.ALL_REDUCE, dtype, self.fold, reduced)

    def resume(self, code: int, x: np.ndarray, out: np.ndarray, serial: int, deadline: float,
               on_timeout: OnTimeout) -> int:
        """Every rank reduces the whole of ``x`` itself out of every rank's copy, into
        ``out`` (which may be ``x``: the sources are the window copies)."""
        if code > 0:
            if self.fold == small_native.NO_FOLD:
                _reduce_with(self.kernel, self.operands[code & 1], out)
            return code
        s = -code if code < 0 else self._post(x, serial, deadline, on_timeout)  # (< 0: posted; a peer late)
        return self._gather(s, out, deadline, on_timeout)

    def _gather(self, s: int, out: np.ndarray, deadline: float, on_timeout: OnTimeout) -> int:
        """Wait for every peer's copy of call ``s``, then reduce them into ``out``."""
        for q, flags in self.peers:
            self._wait(q, flags, s, deadline, on_timeout)
        _reduce_with(self.kernel, self.operands[s & 1], out)
        return s


class TwoShotAllReducePlan(_Plan):
    """Small all-reduces of one shape and operator in two shots through the halves: every
    rank posts ``x`` in its half; rank r folds block r of every half in rank order into its
    ``out``, copies it back over block r of its own half (no other rank reads that block of
    it this call) and posts ``REDUCED``; every rank then copies each peer's reduced block out
    of that peer's half. Block r is folded once, by rank r: every rank gets the same bits."""

    def __init__(self, window: Window, dtype: np.dtype, size: int, op: ReduceOp) -> None:
        super().__init__(window, dtype, size)
        self.averages = op is ReduceOp.AVG  # the caller divides (ops.finalize)
        self.kernel = kernel_of(op)
        self.fold = small_native.fold_code(dtype, op)
        self.blocks = tuple(slice(offset, offset + length) for offset, length in partition(size, len(window.ranks)))
        self.native = small_native.plan(window, small_native.ALL_REDUCE_TWO_SHOT, self.halves, flag=SMALL,
                                        len_slot=HALF_LEN, nbytes=self.nbytes, len_word=self.nbytes, dtype=dtype,
                                        op=self.fold, red_flag=REDUCED)

    def resume(self, code: int, x: np.ndarray, out: np.ndarray, serial: int, deadline: float,
               on_timeout: OnTimeout) -> int:
        """Finish the call from where the C plan's ``code`` left it: > 0 done; -2s posted, a
        peer late; -(2s + 1) my block posted reduced, a peer's late; 0 (or no C plan) the
        whole call here. ``out`` may be ``x``."""
        if code > 0:
            return code
        s, folded = (-code >> 1, -code & 1) if code < 0 else (self._post(x, serial, deadline, on_timeout), 0)
        halves, mine = self.halves[s & 1], self.blocks[self.me]
        if not folded:
            for q, flags in self.peers:
                self._wait(q, flags, s, deadline, on_timeout)
            _reduce_with(self.kernel, [half[mine] for half in halves], out[mine])
            copy_array(halves[self.me][mine], out[mine])
            self.window.post(REDUCED, s)
        for i, q in enumerate(self.window.ranks):
            if i != self.me:
                self.window.wait(q, REDUCED, s, deadline, on_timeout)
                copy_array(out[self.blocks[i]], halves[i][self.blocks[i]])
        return s


def all_reduce_plan(window: Window, dtype: np.dtype, size: int, op: ReduceOp) -> AllReducePlan | TwoShotAllReducePlan:
    """The plan of small all-reduces of this shape over ``window``: two shots where
    ``direct_routes.two_shot`` says (the same choice on every rank) and every rank has an
    element of its own to fold, else one."""
    if direct_routes.two_shot(dtype.itemsize * size, window.oversubscribed) and size >= len(window.ranks):
        return TwoShotAllReducePlan(window, dtype, size, op)
    return AllReducePlan(window, dtype, size, op)


class ReduceScatterPlan(AllReducePlan):
    """Small reduce-scatters of one shape (``size``: elements of ``x``) and operator."""

    def __init__(self, window: Window, dtype: np.dtype, size: int, op: ReduceOp) -> None:
        # rank r reduces block r of every rank's copy, into ``out`` (which may be a view of x)
        offset, length = partition(size, len(window.ranks))[window.ranks.index(window.rank)]
        super().__init__(window, dtype, size, op, reduced=(offset * dtype.itemsize, length * dtype.itemsize))
        self.operands = tuple([source[offset : offset + length] for source in half] for half in self.halves)


class AllToAllPlan(_Plan):
    """Small all-to-alls of one shape (``size``: the elements of ``x``, p blocks of k): every
    rank copies its whole ``x`` into its half, then takes block ``rank`` of every rank's copy,
    in rank order, into ``out`` (which may be ``x``: the sources are the window copies)."""

    def __init__(self, window: Window, dtype: np.dtype, size: int) -> None:
        super().__init__(window, dtype, size)
        k = size // len(window.ranks)
        flags = dict(self.peers)
        mine = slice(self.me * k, (self.me + 1) * k)
        self.blocks = tuple((q, flags.get(q), tuple(half[i][mine] for half in self.halves), slice(i * k, (i + 1) * k))
                            for i, q in enumerate(window.ranks))
        self.native = self._native(small_native.ALL_TO_ALL, dtype)

    def resume(self, code: int, x: np.ndarray, out: np.ndarray, serial: int, deadline: float,
               on_timeout: OnTimeout) -> int:
        """The C plan's result ``code`` if it did the call, the rest of it if it posted (a
        negative serial: a peer late or another count), else the whole call. Returns the new serial."""
        if code > 0:
            return code
        s = -code if code < 0 else self._post(x, serial, deadline, on_timeout)
        h = s & 1
        for q, flags, sources, block in self.blocks:
            if flags is not None:
                self._wait(q, flags, s, deadline, on_timeout)
            copy_array(out[block], sources[h])
        return s


class AllGatherPlan(_Plan):
    """Small all-gathers of one shape."""

    def __init__(self, window: Window, dtype: np.dtype, size: int) -> None:
        super().__init__(window, dtype, size)
        flags = dict(self.peers)
        self.blocks = tuple((i, q, flags.get(q), slice(i * size, (i + 1) * size)) for i, q in enumerate(window.ranks))
        self.native = self._native(small_native.ALL_GATHER, dtype)

    def resume(self, code: int, x: np.ndarray, out: np.ndarray, serial: int, deadline: float,
               on_timeout: OnTimeout) -> int:
        """Every rank copies every peer's ``x`` out of its half into ``out`` (rank order);
        ``x`` may be this rank's block of ``out``."""
        if code > 0:
            return code
        s = -code if code < 0 else self._post(x, serial, deadline, on_timeout)  # (< 0: posted; a peer late)
        return self._collect(s, x, out, deadline, on_timeout)

    def _collect(self, s: int, x: np.ndarray, out: np.ndarray, deadline: float, on_timeout: OnTimeout) -> int:
        """Copy every rank's block of call ``s`` into ``out``, waiting for each in turn."""
        sources = self.halves[s & 1]
        me = self.me
        # In place (x is my block of out) my block is already there; taking it back from
        # the window anyway kept the tiniest calls a little faster (no address check), but
        # costs a copy as large as the block: from IN_PLACE_SKIP_BYTES it is skipped.
        skip_mine = x.nbytes >= IN_PLACE_SKIP_BYTES and address_of(out[self.blocks[me][3]]) == address_of(x)
        for i, q, flags, block in self.blocks:
            if flags is not None:
                self._wait(q, flags, s, deadline, on_timeout)
            elif skip_mine:
                continue
            copy_array(out[block], sources[i])
        return s


class BroadcastPlan(_Plan):
    """Broadcasts of one shape through the halves (those too large for the pipelined
    slots, up to BROADCAST_BYTES)."""

    def __init__(self, window: Window, dtype: np.dtype, size: int) -> None:
        super().__init__(window, dtype, size)
        self.index = {q: i for i, q in enumerate(window.ranks)}

    def __call__(self, x: np.ndarray, root: int, serial: int, deadline: float, on_timeout: OnTimeout) -> int:
        """The root copies ``x`` into its half; every other rank copies it out. Returns
        the new serial."""
        window = self.window
        s = self._begin(serial, deadline, on_timeout)
        source = self.halves[s & 1][self.index[root]]
        if window.rank == root:
            copy_array(source, x)
            self.mine[HALF_LEN + (s & 1)] = self.nbytes
        window.post(SMALL, s)
        if window.rank != root:
            window.wait(root, SMALL, s, deadline, on_timeout)
            if window.flags(root)[HALF_LEN + (s & 1)] != self.nbytes:
                raise count_mismatch(root, window.flags(root)[HALF_LEN + (s & 1)], self.nbytes)
            copy_array(x, source)
        return s


class PiecewiseBroadcastPlan:
    """Broadcasts larger than BROADCAST_BYTES through the halves, a piece of at most
    BROADCAST_BYTES per small call (``BroadcastPlan``): the root copies piece k + 1 into the
    other half while the others copy piece k out of this one. Where ranks outnumber cores
    these copies through shared memory beat the single-copy reads, whose page pinning every
    reader pays (``direct_routes.broadcast_by_halves``)."""

    def __init__(self, window: Window, dtype: np.dtype, size: int) -> None:
        step = max(1, BROADCAST_BYTES // dtype.itemsize)
        self.pieces = [(lo, min(step, size - lo)) for lo in range(0, size, step)]
        self.plans = {n: BroadcastPlan(window, dtype, n) for n in {n for _, n in self.pieces}}

    def __call__(self, x: np.ndarray, root: int, serial: int, deadline: float, on_timeout: OnTimeout) -> int:
        """Every piece in turn, each one small call. Returns the new serial."""
        flat = x.reshape(-1)
        for lo, n in self.pieces:
            serial = self.plans[n](flat[lo : lo + n], root, serial, deadline, on_timeout)
        return serial
