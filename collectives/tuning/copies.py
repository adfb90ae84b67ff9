"""The copies a rank makes within its own memory around a schedule.

The scheduled plans (``plans/scheduled.py``) move bytes outside the messages too: an
out-of-place reduce_scatter copies its whole input into a work buffer and its block out of
it, an all-gather its input into its block of the output, a reduce's non-root ranks their
input into a work buffer (the schedule folds into it); from ``PENDING_COPY_BYTES`` those work
buffers take the input only where a step reads them, which the schedules here never need
(``PENDING_LOCAL_COPIES``), but a receive folded into a range no step wrote yet reads the
input as a third buffer (``third_buffer_folds``), at about the price of the copy it saved. The
replay prices messages only; these copies and folds cost ``copy_beta`` per byte of the rank
that copies most (``LOCAL_COPIES``), plus ``cache_beta`` times the share of the call's buffers
beyond the cache (``cache.spilled``). The direct engine is priced by its own byte counts and
does not pay them again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..algorithms.schedule import PENDING_COPY_BYTES, WORK, Recv, Step
from ..algorithms.unwritten import Unwritten
from .machine import LinkClass

LOCAL_COPIES: dict[str, Callable[[int], float]] = {
    "all_reduce": lambda p: 0.0,  # in place, as the harness calls it
    "broadcast": lambda p: 0.0,  # the schedule works on x itself
    "reduce_scatter": lambda p: 1.0 + 1.0 / p,  # x into the work buffer, block out of it
    "all_gather": lambda p: 1.0 / p,  # x into its block of out
    "reduce": lambda p: 1.0,  # a non-root's x into its work buffer (the root folds into x)
    "gather": lambda p: 1.0 / p,
    "scatter": lambda p: 1.0 / p,  # the block out of the root's x (or the work buffer)
    "all_to_all": lambda p: 1.0 / p,  # the own block of x into out
}
"""Bytes the busiest rank copies locally in one call, as a multiple of the call's size n."""

PENDING_LOCAL_COPIES: dict[str, Callable[[int], float]] = {
    "reduce_scatter": lambda p: 1.0 / p,  # its block out of the work buffer; sends and folds read x
    "reduce": lambda p: 0.0,  # sends and folds read x
}
"""The local copies of the collectives whose work buffer pends from ``PENDING_COPY_BYTES``."""

PENDING_RANKS: dict[str, Callable[[int], bool]] = {
    "reduce": lambda rank: rank != 0,  # the root (0, as priced) folds into its x in place
    "reduce_scatter": lambda rank: True,
}
"""The ranks whose work buffer pends, by collective, where not all of them do."""


def third_buffer_folds(steps: Iterable[Step], itemsize: int) -> int:
    """Bytes of ``steps`` (one rank's schedule, its work buffer pending) that fold a receive
    into a range of the work buffer no step wrote yet: those folds read the input, the
    received bytes and write the work buffer (``out = x op received``), a third stream beside
    an in-place fold's two, which costs about the copy that the pending buffer saved."""
    unwritten = Unwritten(1 << 62)
    folded = 0
    for step in steps:
        for o in step:
            if not isinstance(o, Recv) or o.buf != WORK or o.count <= 0:
                continue
            if o.reduce:
                folded += unwritten.overlap(o.offset, o.offset + o.count)
            unwritten.written(o.offset, o.offset + o.count)
    return folded * itemsize


def copy_time(collective: str, nbytes: int, size: int, link: LinkClass) -> float:
    """Seconds of the local copies of one call of ``nbytes`` at ``size`` ranks, copying at
    ``link``'s ``copy_beta`` (0: not modelled)."""
    if not link.copy_beta or size <= 1:
        return 0.0
    copies = PENDING_LOCAL_COPIES if nbytes >= PENDING_COPY_BYTES and collective in PENDING_LOCAL_COPIES else LOCAL_COPIES
    share = copies.get(collective, LOCAL_COPIES["all_to_all"])(size)
    return share * nbytes * link.copy_beta
