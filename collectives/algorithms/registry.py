"""Which schedule implements which collective, and the automatic choice between them.

Every collective offers ``ring``, ``tree`` and ``recursive``. Where a family has no
distinct member for a collective, the entry says which schedule stands in and why:
a recursive-doubling gather *is* a binomial gather (the two name one message pattern),
and all-to-all is a pairwise exchange under every name, since ring, tree and butterfly
orders all reduce to it when each rank owes every other rank a distinct block.
``direct`` needs shared windows (every rank on one host over shared memory) and exists
for all-reduce and reduce-scatter (loads from peers' windows) and all-gather and broadcast
(single-copy reads of peers' memory, where the kernel refuses them the automatic choice instead; see
``engines/direct.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InvalidArgumentError, UnsupportedError
from ..names import ALGORITHMS
from . import pairwise, recursive, ring, tree
from .schedule import Schedule

ScheduleFactory = Callable[..., Schedule]

# (collective) -> {algorithm: schedule factory}; factory signatures by collective:
#   all_reduce(rank, size, count, segment)
#   reduce_scatter / all_gather / all_to_all(rank, size, blocks, segment)
#   broadcast / reduce(rank, size, root, count, segment)
#   gather / scatter(rank, size, root, blocks, segment)
SCHEDULES: dict[str, dict[str, ScheduleFactory]] = {
    "all_reduce": {"ring": ring.all_reduce, "tree": tree.all_reduce, "recursive": recursive.all_reduce},
    "reduce_scatter": {
        "ring": ring.reduce_scatter,
        "tree": tree.reduce_scatter,
        "recursive": recursive.reduce_scatter,
    },
    "all_gather": {"ring": ring.all_gather, "tree": tree.all_gather, "recursive": recursive.all_gather},
    "broadcast": {"ring": ring.broadcast, "tree": tree.broadcast, "recursive": recursive.broadcast},
    "reduce": {"ring": ring.reduce, "tree": tree.reduce, "recursive": recursive.reduce},
    "gather": {"ring": ring.gather, "tree": tree.gather, "recursive": tree.gather},
    "scatter": {"ring": ring.scatter, "tree": tree.scatter, "recursive": tree.scatter},
    "all_to_all": {"ring": pairwise.all_to_all, "tree": pairwise.all_to_all, "recursive": pairwise.all_to_all},
    "all_to_all_v": {"ring": pairwise.all_to_all_v, "tree": pairwise.all_to_all_v, "recursive": pairwise.all_to_all_v},
}

NAMES = ALGORITHMS
DIRECT = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "all_to_all", "gather",
          "scatter")  # one host, shared windows

DIRECT_REDUCE_BYTES = 256 << 10
"""The largest reduce the direct engine takes (one-way through the small window's slots: the
other ranks copy in and go on, the root folds); a larger one goes by reads of peers' memory from
``direct_routes.reduce_reads_from`` where the kernel allows them, below it through the slots
piece by piece where ranks outnumber cores (``direct_routes.reduce_by_pieces``), else runs the
schedule the automatic choice takes without windows. Measured: docs/performance.md, "Thresholds",
DIRECT_REDUCE_BYTES."""

DIRECT_ALL_TO_ALL_BYTES = 512 << 10
"""The largest all-to-all (bytes of ``x``) the direct engine takes, through the small window's
halves; a larger one runs the schedule the automatic choice takes without windows. Measured:
docs/performance.md, "Thresholds", DIRECT_ALL_TO_ALL_BYTES."""

DIRECT_GATHER_BYTES = 256 << 10
"""The largest gather (bytes of the root's ``out``) the direct engine takes, one way through
the small window's slots (at most engines.small.PIPELINED_BROADCAST_BYTES from each rank); a
larger one runs the schedule the automatic choice takes without windows. Measured:
docs/performance.md, "Thresholds", DIRECT_GATHER_BYTES."""

DIRECT_SCATTER_BYTES = 256 << 10
"""The largest scatter (bytes of the root's ``x``, which fills one slot: at most
engines.small.PIPELINED_BROADCAST_BYTES) the direct engine takes; a larger one runs the
schedule the automatic choice takes without windows. Measured: docs/performance.md,
"Thresholds", DIRECT_SCATTER_BYTES."""

DIRECT_LIMITS = {"reduce": DIRECT_REDUCE_BYTES, "all_to_all": DIRECT_ALL_TO_ALL_BYTES, "gather": DIRECT_GATHER_BYTES,
                 "scatter": DIRECT_SCATTER_BYTES}
"""The direct engine's largest call of the collectives it takes only in part (beyond, their schedule)."""
HIERARCHICAL = ("all_reduce",)
"""Collectives with a two-level implementation for ranks on several hosts, the same number on
each: within each host first (shared memory), then across hosts (``communicator``)."""

# Below this many bytes latency (steps) dominates; above it bandwidth does. Python's
# per-message overhead is large, so the crossover sits higher than in C libraries.
SMALL_MESSAGE_BYTES = 256 << 10


SHORT_ALL_REDUCE_BYTES = SMALL_MESSAGE_BYTES
"""Recursive all-reduces up to this size double the whole vector (``recursive.all_reduce_short``:
half the steps) instead of halving then doubling it. MPICH switches at 2 KiB; Python's
per-step cost moves the crossover up. Measured: docs/performance.md, "Thresholds", SHORT_ALL_REDUCE_BYTES."""


def schedule_for(collective: str, algorithm: str, nbytes: int) -> ScheduleFactory:
    """The schedule that runs ``algorithm`` for a ``collective`` of ``nbytes`` (every rank
    passes the same size, so all run the same schedule)."""
    if collective == "all_reduce" and algorithm == "recursive" and nbytes <= SHORT_ALL_REDUCE_BYTES:
        return recursive.all_reduce_short
    return SCHEDULES[collective][algorithm]


def automatic(collective: str, nbytes: int, size: int, windows: bool = False, hosts: bool = False) -> str:
    """The size / world-size rule, set by measurement on one machine. The automatic choice
    of a communicator is the tuner's (``collectives.tuning.tuner.choose``), which keeps this
    rule's choice unless the cost model predicts another algorithm clearly faster. Hierarchical all-reduces beat flat ones at every size measured (docs/performance.md,
    "Thresholds", hierarchical)."""
    if windows and collective in DIRECT:
        return "direct"
    if hosts and collective in HIERARCHICAL:
        return "hierarchical"
    if collective in ("gather", "scatter"):
        return "tree"
    if collective in ("all_to_all", "all_to_all_v"):
        return "ring"
    if nbytes < SMALL_MESSAGE_BYTES or size <= 2:
        return "tree" if collective in ("broadcast", "reduce") else "recursive"
    return "ring"


_NEEDS = {
    "direct": (DIRECT, "windows",
               "shared windows: every rank on this host over shared memory; this communicator has other transports"),
    "hierarchical": (HIERARCHICAL, "hosts", "ranks on several hosts, the same number (more than one) on each"),
}
"""The algorithms that exist for some collectives and layouts only: for which collectives,
which of ``select``'s ``windows`` and ``hosts`` they need, and what that means."""


def _unavailable(name: str, collective: str, windows: bool, hosts: bool) -> str | None:
    """Why ``name`` cannot run ``collective`` here ("" where it can), or None for an
    algorithm that every collective and layout has."""
    if name not in _NEEDS:
        return None
    collectives, needed, what = _NEEDS[name]
    if collective not in collectives:
        return f"exists for {', '.join(collectives)}, not {collective}"
    return "" if {"windows": windows, "hosts": hosts}[needed] else f"needs {what}"


def select(
    collective: str,
    requested: str | None,
    default: str | None,
    nbytes: int,
    size: int,
    windows: bool = False,
    hosts: bool = False,
    pick: Callable[[str, int, int, bool, bool], str] | None = None,
) -> str:
    """The algorithm to run: the caller's choice, else COLLECTIVES_ALGO, else automatic.
    ``hosts``: the ranks sit on several hosts, the same number (more than one) on each.
    ``pick(collective, nbytes, size, windows, hosts)`` makes the automatic choice (the
    tuner's, from ``plans``); None: the size rule, :func:`automatic`.

    Raises:
        InvalidArgumentError: ``requested`` names no algorithm.
        UnsupportedError: ``requested`` is "direct" and no transport offers shared windows,
            or "hierarchical" without such a layout.
    """
    pick = pick or automatic
    if requested is not None:
        name = str(requested).lower()
        if name == "auto":
            return pick(collective, nbytes, size, windows, hosts)
        if name not in NAMES:
            raise InvalidArgumentError(f"algorithm: {requested!r} is not one of {', '.join(NAMES)}, auto")
        unavailable = _unavailable(name, collective, windows, hosts)
        if unavailable:
            raise UnsupportedError(f"algorithm: {name!r} {unavailable}")
        return name
    if default is not None and (
        default in SCHEDULES[collective] or _unavailable(default, collective, windows, hosts) == ""
    ):
        return default
    return pick(collective, nbytes, size, windows, hosts)
