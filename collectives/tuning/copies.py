"""The copies a rank makes within its own memory around a schedule.

The scheduled plans (``plans/scheduled.py``) move bytes outside the messages too: an
out-of-place reduce_scatter copies its whole input into a work buffer and its block out of
it, an all-gather its input into its block of the output, a reduce's non-root ranks their
input into a work buffer (the schedule folds into it); from ``PENDING_COPY_BYTES`` those work
buffers take the input only where a step reads them, which the schedules here never need
(``PENDING_LOCAL_COPIES``). The replay prices messages only; these
copies cost ``copy_beta`` per byte of the rank that copies most (``LOCAL_COPIES``), plus
``cache_beta`` times the share of the call's buffers beyond the cache (``cache.spilled``).
The direct engine is priced by its own byte counts and does not pay them again.
"""

from __future__ import annotations

from collections.abc import Callable

from ..algorithms.schedule import PENDING_COPY_BYTES
from .machine import LinkClass

LOCAL_COPIES: dict[str, Callable[[int], float]] = {
    "all_reduce": lambda p: 0.0,  # in place, as the harness calls it
    "broadcast": lambda p: 0.0,  # the schedule works on x itself
    "reduce_scatter": lambda p: 1.0 + 1.0 / p,  # x into the work buffer, block out of it
    "all_gather": lambda p: 1.0 / p,  # x into its block of out
    "reduce": lambda p: 1.0,  # a non-root's x into its work buffer
    "gather": lambda p: 1.0 / p,
    "scatter": lambda p: 1.0 / p,  # the block out of the root's x (or the work buffer)
    "all_to_all": lambda p: 1.0 / p,  # the own block of x into out
}
"""Bytes the busiest rank copies locally in one call, as a multiple of the call's size n."""

PENDING_LOCAL_COPIES: dict[str, Callable[[int], float]] = {
    "reduce_scatter": lambda p: 1.0 / p,  # its block out of the work buffer; sends and folds read x
}
"""The local copies of the collectives whose work buffer pends from ``PENDING_COPY_BYTES``. A
non-root reduce pends too and copies nothing, but keeps its ``LOCAL_COPIES`` share: the replay
underprices the schedules' large reduces at three ranks on one host (measured well above the
direct engine, priced just below it without the share: docs/simulation.md), and the share keeps
the choice there until the replay prices them."""


def copy_time(collective: str, nbytes: int, size: int, link: LinkClass) -> float:
    """Seconds of the local copies of one call of ``nbytes`` at ``size`` ranks, copying at
    ``link``'s ``copy_beta`` (0: not modelled)."""
    if not link.copy_beta or size <= 1:
        return 0.0
    copies = PENDING_LOCAL_COPIES if nbytes >= PENDING_COPY_BYTES and collective in PENDING_LOCAL_COPIES else LOCAL_COPIES
    share = copies.get(collective, LOCAL_COPIES["all_to_all"])(size)
    return share * nbytes * link.copy_beta
