"""One-way calls through the small window's slots: broadcast, reduce, gather, scatter.

After the two halves (engines/small.py), every rank's small window holds
PIPELINED_BROADCAST_SLOTS slots of PIPELINED_BROADCAST_BYTES and EAGER_BROADCAST_SLOTS of
EAGER_BROADCAST_BYTES. A call here has writers and readers: a broadcast's or scatter's root
writes and the others read; a reduce's or gather's others write and the root reads. A writer
copies into slot ``b % slots`` of its own window, posts ``BROADCAST = b`` and returns; a reader
waits for that post, reads, and posts b too. Every rank counts these calls with one serial
(``SharedWindows.broadcast_serial``), so the serials agree whatever the mix of kinds and roots.

A writer waits only to reuse a slot that a reader may still be reading: before writing call b
it waits until every peer has posted ``b - slots``. So writers run up to a round of slots
ahead of the readers, as MPI's senders do with their eager buffers: back-to-back calls cost a
writer one copy, not a round trip with every peer, which on an oversubscribed host is a round
of context switches. Every call writes its byte count beside its flag (``SLOT_LEN + b %
SLOT_LENS``); a reader that finds another count raises ``MessageMismatchError``.

Where ``small_native`` built a C plan for a shape (``plan.native``), the caller
(plans/windowed.py) runs it first; it returns b when it did the call, 0 when it did nothing
(a slot still being read, a writer late, another count), and ``resume(0, ...)`` then runs the
whole call in Python with its sleeping waits, timeouts and errors.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..buffers import address_of, copy_array
from ..ops import ReduceOp, kernel_of
from . import small_native
from .direct import BROADCAST, SLOT_LEN, Window, count_mismatch
from .small import (EAGER_BROADCAST_BYTES, EAGER_BROADCAST_SLOTS, PIPELINED_BROADCAST_BYTES, PIPELINED_BROADCAST_SLOTS,
                    SLOT_LENS, OnTimeout, _half_bytes, _reduce_with)

PAGE_BYTES = 4096


_MAPPED: weakref.WeakKeyDictionary[Any, dict[tuple[int, int], int]] = weakref.WeakKeyDictionary()
"""Per window, per run of slots (its first byte and stride): the bytes of each slot whose
pages :func:`_map_pages` has touched in this process. A plan per shape is made again and
again (the plan cache is bounded), and the pages stay mapped: only a longer slot touches
new ones."""


def _map_slots(window: Window, first: int, stride: int, nbytes: int, slots: Sequence[Sequence[np.ndarray]]) -> None:
    """:func:`_map_pages` of ``slots`` (``nbytes`` each, from ``first`` by ``stride`` in
    ``window``), unless this process has touched them already."""
    try:
        mapped = _MAPPED.setdefault(window, {})
    except TypeError:  # a window that cannot be referenced weakly: touch them every time
        mapped = {}
    if mapped.get((first, stride), -1) < nbytes:
        _map_pages(slots)
        mapped[(first, stride)] = nbytes


def _map_pages(areas: Sequence[Sequence[np.ndarray]]) -> None:
    """Read a byte of every page of ``areas`` (every rank's view of each), so that the calls
    that rotate through them do not take their page faults one by one: a broadcast takes the
    next slot, on the first round a page new to every rank's page table (docs/performance.md,
    eleventh round). Only reads: a peer may be reading a slot of this window meanwhile."""
    for area in areas:
        for view in area:
            raw = view.view(np.uint8)
            if raw.size:
                raw[::PAGE_BYTES].max()
                raw[-1].item()


class _SlotPlan:
    """Calls of one shape through the slots: ``size`` elements of ``dtype`` in each writer's
    slot, at most PIPELINED_BROADCAST_BYTES (up to EAGER_BROADCAST_BYTES the eager slots)."""

    kind = small_native.BROADCAST

    def __init__(self, window: Window, dtype: np.dtype, size: int, op: int = small_native.NO_FOLD) -> None:
        nbytes = dtype.itemsize * size
        if nbytes > PIPELINED_BROADCAST_BYTES:
            raise ValueError(f"a pipelined call takes at most {PIPELINED_BROADCAST_BYTES} bytes, not {nbytes}")
        self.window = window
        self.nbytes = nbytes
        first = 2 * _half_bytes()
        if nbytes <= EAGER_BROADCAST_BYTES:
            first += PIPELINED_BROADCAST_SLOTS * PIPELINED_BROADCAST_BYTES
            stride, count = EAGER_BROADCAST_BYTES, EAGER_BROADCAST_SLOTS
        else:
            stride, count = PIPELINED_BROADCAST_BYTES, PIPELINED_BROADCAST_SLOTS
        self.slots = tuple(window.slices(first + k * stride, first + k * stride + nbytes, dtype) for k in range(count))
        _map_slots(window, first, stride, nbytes, self.slots)
        self.index = {q: i for i, q in enumerate(window.ranks)}
        self.flags = {q: window.flags(q) for q in window.ranks}
        self.mine: Any = window.flags(window.rank)  # written: the byte count of each slot
        self.peers = tuple((q, self.flags[q]) for q in window.ranks if q != window.rank)
        self.native = small_native.plan(window, self.kind, self.slots, flag=BROADCAST, len_slot=SLOT_LEN,
                                        nbytes=nbytes, len_word=nbytes, len_ring=SLOT_LENS, dtype=dtype, op=op)
        self.me = self.index[window.rank]

    def _write(self, b: int, x: np.ndarray, deadline: float, on_timeout: OnTimeout, skip: int = 0) -> None:
        """Copy ``x`` into my slot of call b once every peer is done with call ``b - slots``
        (but for its block ``me`` of ``skip`` elements, which nobody reads)."""
        free = b - len(self.slots)
        for q, flags in self.peers:
            if flags[BROADCAST] < free:
                self.window.wait(q, BROADCAST, free, deadline, on_timeout)
        slot = self.slots[b % len(self.slots)][self.me]
        if skip:
            lo, hi = self.me * skip, (self.me + 1) * skip
            copy_array(slot[:lo], x[:lo])
            copy_array(slot[hi:], x[hi:])
        else:
            copy_array(slot, x)
        self.mine[SLOT_LEN + b % SLOT_LENS] = self.nbytes

    def _await(self, q: int, b: int, deadline: float, on_timeout: OnTimeout) -> np.ndarray:
        """Rank q's slot of call b, once q has written it with as many bytes as mine."""
        flags, length = self.flags[q], SLOT_LEN + b % SLOT_LENS
        if flags[BROADCAST] < b:
            self.window.wait(q, BROADCAST, b, deadline, on_timeout)
        if flags[length] != self.nbytes:
            raise count_mismatch(q, flags[length], self.nbytes)
        return self.slots[b % len(self.slots)][self.index[q]]


class PipelinedBroadcastPlan(_SlotPlan):
    """Broadcasts of one shape: the root copies ``x`` into its slot and returns; every other
    rank copies it out."""

    def resume(self, code: int, x: np.ndarray, root: int, serial: int, deadline: float, on_timeout: OnTimeout) -> int:
        """Copy the root's ``x`` into every rank's ``x``: the C plan's result ``code`` if it
        broadcast, else the whole broadcast here (0: it did nothing, a slot still being read or
        the root late; or there is no C plan). Returns the new serial."""
        if code > 0:
            return code
        b = serial + 1
        if self.window.rank == root:
            self._write(b, x, deadline, on_timeout)
        else:
            copy_array(x, self._await(root, b, deadline, on_timeout))
        self.window.post(BROADCAST, b)
        return b


class PipelinedReducePlan(_SlotPlan):
    """Reduces of one shape and operator: every rank but the root copies ``x`` into its slot
    and returns; the root waits for them all and folds every rank's contribution, in rank
    order, into its ``x``."""

    kind = small_native.REDUCE

    def __init__(self, window: Window, dtype: np.dtype, size: int, op: ReduceOp) -> None:
        self.kernel = kernel_of(op)
        super().__init__(window, dtype, size, small_native.fold_code(dtype, op))

    def resume(self, code: int, x: np.ndarray, root: int, serial: int, deadline: float, on_timeout: OnTimeout) -> int:
        """Reduce every rank's ``x`` into the root's: the C plan's result ``code`` if it did
        (the caller divides an average), else the whole call here. Returns the new serial."""
        if code > 0:
            return code
        b = serial + 1
        if self.window.rank == root:
            sources = [self._await(q, b, deadline, on_timeout) if q != root else None for q in self.window.ranks]
            mine = self.slots[b % len(self.slots)][self.me]  # free: every peer has posted b
            copy_array(mine, x)
            _reduce_with(self.kernel, [mine if s is None else s for s in sources], x)
        else:
            self._write(b, x, deadline, on_timeout)
        self.window.post(BROADCAST, b)
        return b


class PipelinedGatherPlan(_SlotPlan):
    """Gathers of one shape (``size`` elements from each rank): every rank but the root copies
    ``x`` into its slot and returns; the root, once every slot is there with its count, copies
    its own ``x`` and every peer's slot into block q of ``out``."""

    kind = small_native.GATHER

    def resume(self, code: int, x: np.ndarray, out: np.ndarray | None, root: int, serial: int, deadline: float,
               on_timeout: OnTimeout) -> int:
        """The C plan's result ``code`` if it gathered, else the whole call here. Returns the new serial."""
        if code > 0:
            return code
        b = serial + 1
        if self.window.rank == root:
            assert out is not None  # the root's out: checked by the caller
            k = x.size
            sources = [self._await(q, b, deadline, on_timeout) if q != root else None for q in self.window.ranks]
            np.copyto(out[self.me * k:(self.me + 1) * k], x)  # first: x may lie in out (in place)
            for i, source in enumerate(sources):
                if source is not None:
                    copy_array(out[i * k:(i + 1) * k], source)
        else:
            self._write(b, x, deadline, on_timeout)
        self.window.post(BROADCAST, b)
        return b


class PipelinedScatterPlan(_SlotPlan):
    """Scatters of one shape (``size`` elements of the root's ``x``, p blocks): the root copies
    every block of ``x`` but its own into its slot, posts, then copies its own block into
    ``out`` while the others copy theirs out of the slot (a root that copied all of ``x`` in
    first kept them waiting for its own block: docs/performance.md, fourteenth round)."""

    kind = small_native.SCATTER

    def resume(self, code: int, x: np.ndarray | None, out: np.ndarray, root: int, serial: int, deadline: float,
               on_timeout: OnTimeout) -> int:
        """The C plan's result ``code`` if it scattered, else the whole call here. Returns the new serial."""
        if code > 0:
            return code
        b = serial + 1
        k = out.size
        if self.window.rank == root:
            assert x is not None  # the root's x: checked by the caller
            self._write(b, x, deadline, on_timeout, skip=k)
            self.window.post(BROADCAST, b)
            own = x[self.me * k:(self.me + 1) * k]
            if address_of(out) != address_of(own):  # in place: already there
                copy_array(out, own)
            return b
        copy_array(out, self._await(root, b, deadline, on_timeout)[self.me * k:(self.me + 1) * k])
        self.window.post(BROADCAST, b)
        return b
