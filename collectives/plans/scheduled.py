"""Plans that run a schedule on the executor: every collective, over any transport.

Each plan holds what its signature fixes (the schedule's factory and arguments, blocks,
the segment) and, per call, generates the steps and hands them to the executor with the
call's sequence number as the tag. Short schedules keep their steps (``steps_of``): for them the
generator costs more than the messages. Out of place from ``PENDING_COPY_BYTES``, the work
buffer takes the input's values only where a step needs them there (``engines/pending_copy.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..algorithms.schedule import PENDING_COPY_BYTES, Step, partition
from ..buffers import copy_array
from ..engines.call import Call
from ..engines.executor import Executor
from ..engines.pending_copy import PendingCopy
from ..engines.tcp_pair import PairLoop
from ..ops import ReduceOp, finalize

Steps = Callable[[], Iterable[Step]]


KEPT_STEPS = 64
"""The most steps a plan keeps: a schedule of more is generated anew each call (its messages
outweigh the generator, and its steps would hold memory for as long as the plan is kept)."""


def pends(x: np.ndarray, work: np.ndarray | None = None) -> bool:
    """Whether a work buffer may take ``x``'s values range by range: ``x`` large enough, and
    apart from ``work`` (the caller's; None: one of the executor's own)."""
    return x.nbytes >= PENDING_COPY_BYTES and (work is None or not np.may_share_memory(x, work))


def steps_of(factory: Callable[..., Iterable[Step]], *args: Any) -> Steps:
    """The steps of ``factory(*args)``: generated once and kept where there are at most
    ``KEPT_STEPS`` of them (the same steps every call: the schedule is a pure function of its
    arguments), else generated per call."""
    kept: list[Step] = []
    for step in factory(*args):
        if len(kept) == KEPT_STEPS:
            return lambda: factory(*args)
        kept.append(step)
    steps = tuple(kept)
    return lambda: steps


class _Scheduled:
    """A schedule's steps for one signature, and the executor that runs them."""

    def __init__(self, executor: Executor, steps: Steps, op: ReduceOp | None = None, tag_bits: int = 0) -> None:
        self.executor = executor
        self.steps = steps
        self.op = op
        self.tag_bits = tag_bits

    def _run(self, buffers: list[np.ndarray], call: Call, source: np.ndarray | None = None) -> PendingCopy | None:
        return self.executor.run(self.steps(), buffers, op=self.op, tag=self.tag_bits | call.seq, deadline=call.deadline,
                          on_timeout=call.timed_out, source=source)

    def _run_pending(self, x: np.ndarray, work: np.ndarray, call: Call) -> PendingCopy:
        """Run with ``work`` taking ``x``'s values only where a step needs them there; the ranges
        left for the caller to copy as far as it reads them."""
        left = self._run([work], call, source=x)
        assert left is not None
        return left


class AllReduce(_Scheduled):
    """``out`` = the reduction of every rank's ``x``, reduced in place in ``out``. With ``pair`` (2 ranks
    over tcp, ``engines/tcp_pair.py``) the schedule's messages move in C where the channel is idle."""

    def __init__(self, executor: Executor, steps: Steps, op: ReduceOp, size: int, pair: PairLoop | None = None) -> None:
        super().__init__(executor, steps, op)
        self.size = size
        self.pair = pair

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        pair = self.pair
        if pair is not None and pair.run(x, out, self.tag_bits | call.seq, call.deadline, call.timed_out):
            finalize(self.op, out, self.size)  # type: ignore[arg-type]
            return
        if out is not x and self.size > 1 and pends(x, out):
            self._run_pending(x, out, call).finish()
        else:
            if out is not x:  # only once the call runs: a closed communicator leaves out alone
                copy_array(out, x)
            if self.size > 1:
                self._run([out], call)
        finalize(self.op, out, self.size)  # type: ignore[arg-type]


class ReduceScatter(_Scheduled):
    """Block ``rank`` of the reduction of every rank's ``x``, into ``out``."""

    def __init__(self, executor: Executor, steps: Steps, op: ReduceOp, rank: int, size: int, count: int) -> None:
        super().__init__(executor, steps, op)
        self.size = size
        self.block = partition(count, size)[rank]

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        offset, length = self.block
        if self.size > 1 and pends(x):
            work = self.executor.work_for(x.dtype, x.size)
            self._run_pending(x, work, call).fill(offset, offset + length)  # only this rank's block is read
        else:
            work = x.copy()
            if self.size > 1:
                self._run([work], call)
        out[...] = work[offset : offset + length]
        finalize(self.op, out, self.size)  # type: ignore[arg-type]


class AllGather(_Scheduled):
    """Every rank's ``x`` into its block of ``out``."""

    def __init__(self, executor: Executor, steps: Steps, rank: int, size: int, count: int) -> None:
        super().__init__(executor, steps)
        self.size = size
        self.block = partition(count * size, size)[rank]

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        offset, length = self.block
        out[offset : offset + length] = x
        if self.size > 1:
            self._run([out], call)


class InPlace(_Scheduled):
    """Schedules that work on ``x`` itself: broadcast and barrier."""

    def __call__(self, x: np.ndarray, out: None, call: Call) -> None:
        self._run([x], call)


class Reduce(_Scheduled):
    """The reduction of every rank's ``x`` into the root's ``x``; others' stay as they were."""

    def __init__(self, executor: Executor, steps: Steps, op: ReduceOp, rank: int, root: int, size: int) -> None:
        super().__init__(executor, steps, op)
        self.at_root = rank == root
        self.size = size

    def __call__(self, x: np.ndarray, out: None, call: Call) -> None:
        if not self.at_root and self.size > 1 and pends(x):
            self._run_pending(x, self.executor.work_for(x.dtype, x.size), call)
        else:
            work = x if self.at_root else x.copy()
            if self.size > 1:
                self._run([work], call)
        if self.at_root:
            finalize(self.op, x, self.size)  # type: ignore[arg-type]


class Gather(_Scheduled):
    """Every rank's ``x`` into the root's ``out`` (rank order); ``out`` is None elsewhere."""

    def __init__(self, executor: Executor, steps: Steps, rank: int, size: int, count: int, dtype: np.dtype) -> None:
        super().__init__(executor, steps)
        self.size, self.count, self.dtype = size, count, dtype
        self.block = partition(count * size, size)[rank]

    def __call__(self, x: np.ndarray, out: np.ndarray | None, call: Call) -> None:
        work = out if out is not None else np.empty(self.count * self.size, dtype=self.dtype)
        offset, length = self.block
        work[offset : offset + length] = x
        if self.size > 1:
            self._run([work], call)


class Scatter(_Scheduled):
    """Block ``rank`` of the root's ``x`` into ``out`` (``x`` is None off the root)."""

    def __init__(self, executor: Executor, steps: Steps, rank: int, size: int, count: int) -> None:
        super().__init__(executor, steps)
        self.size, self.count = size, count
        self.block = partition(count * size, size)[rank]

    def __call__(self, x: np.ndarray | None, out: np.ndarray, call: Call) -> None:
        offset, length = self.block
        if x is not None:
            source = x.copy() if np.shares_memory(x, out) else x
            if self.size > 1:
                self._run([np.empty(0, dtype=out.dtype), source], call)
            out[...] = source[offset : offset + length]
        else:
            work = np.empty(self.count * self.size, dtype=out.dtype)
            self._run([work, work], call)
            out[...] = work[offset : offset + length]


class AllToAll(_Scheduled):
    """Block j of ``x`` to rank j, stored there as block ``rank`` of ``out``."""

    def __init__(self, executor: Executor, steps: Steps, rank: int, size: int, count: int) -> None:
        super().__init__(executor, steps)
        self.size = size
        self.block = partition(count, size)[rank]

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        source = x.copy() if np.shares_memory(x, out) else x
        offset, length = self.block
        out[offset : offset + length] = source[offset : offset + length]
        if self.size > 1:
            self._run([out, source], call)


class AllToAllV(_Scheduled):
    """Block j of ``x`` (``send_blocks[j]``) to rank j, stored there as its block of
    ``out`` (``recv_blocks``), one message per pair (``pairwise.all_to_all_v``)."""

    def __init__(self, executor: Executor, steps: Steps, rank: int, size: int,
                 send_blocks: list[tuple[int, int]], recv_blocks: list[tuple[int, int]]) -> None:
        super().__init__(executor, steps)
        self.size = size
        (self.mine_from, self.mine_count), (self.mine_to, _) = send_blocks[rank], recv_blocks[rank]

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        source = x.copy() if np.shares_memory(x, out) else x
        a, n, b = self.mine_from, self.mine_count, self.mine_to
        out[b : b + n] = source[a : a + n]
        if self.size > 1:
            self._run([out, source], call)
