"""The direct engine's calls by single-copy reads and writes of peers' memory.

On one host, where the kernel allows it, the direct engine copies straight between the ranks'
address spaces (``process_vm_readv``/``writev``) instead of through its shared windows, on the
routes ``algorithms/direct_routes.py`` and ``registry.DIRECT_LIMITS`` set:

- all-to-all, gather and scatter beyond the small window and within it from their sizes
  (``direct_routes.exchange_by_reads``; ``engines/exchange_reads.py``): every rank posts where
  its buffers lie, waits for each peer it exchanges with to post too, copies its share across
  with one read or write per peer, and returns once those peers are done;
- all-gather beyond the window's limit and, where every rank has a core, from
  ``GATHER_READS_BYTES`` per rank (the same exchange, one C call): one read of each peer's block,
  and the rank's own block copied into its ``out`` (first, from ``ALL_GATHER_COPY_FIRST_BYTES``,
  else while the peers read it: the same bytes on every core either way);
- all-reduce from ``reads_from`` (two shots, each a read of every peer's piece of a block, the
  first folded into the rank's own block) and reduce-scatter from there (the first shot alone);
- reduce from ``reduce_reads_from`` (``direct.reduce_by_reads``: the all-reduce's first shot on
  every rank, then the root reads every folded block, so the root reads and folds what an
  all-reduce's rank does);
- broadcast where ``direct_routes.broadcast_by_reads`` says (``direct.broadcast``): where every
  rank has a core the root writes a part into every peer while each peer reads the others out of
  the root, where ranks outnumber cores every peer reads all of it.

A call costs ``reads_call`` where it runs in one C call (``in_c``: the exchanges, and the
all-reduce where every rank has a core) and the engine's ``direct_alpha`` where its reads run in
Python (the reduce-scatters, reduces, and all-reduces where ranks outnumber cores),
``reads_alpha`` per read or write of a peer (``PEER_COPIES`` per peer, and per piece where the
reads go piece by piece: ``PIECEWISE``), ``reads_beta`` per byte
the busiest rank copies (``READ_BYTES``), each byte once, and γ per byte it folds (``REDUCED``;
beyond the cache raised for the all-reduce's folds in C, ``FOLDS_SPILL``). Ranks beyond the host's cores take turns as
whole calls (``turns``): a copy of a few MiB is shorter than the scheduler's slice, so 3 ranks on
2 cores measure as slow as 4, not 1.5 times as slow as 2 (docs/simulation.md, "Single-copy reads").

Whether the kernel allows the reads is a property of the machine, the same on every rank;
the profile carries it: ``reads_beta`` 0 (a profile measured where reads were refused, or
one that predates the term) prices these calls as the route the engine takes without them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..algorithms import direct_routes
from ..algorithms.registry import DIRECT_LIMITS
from .profile import TransportCosts

CMA_PIECE_BYTES = 4 << 20
"""Bytes per ``process_vm_readv`` of a read (``engines/_cma.h``, ``transports/cma.py``)."""

READ_BYTES: dict[str, Callable[[int], float]] = {
    "all_to_all": lambda p: 1.0,  # a block of every peer's x, and my own block, into my out
    "gather": lambda p: 1.0 / p,  # every rank about its block (see below)
    "scatter": lambda p: 1.0 / p,  # every rank its block of the root's x (the root its own)
    "all_gather": lambda p: 1.0,  # every peer's block read into my out, and my own block copied there
    "all_reduce": lambda p: 2 * (p - 1) / p,  # block r of every peer's x, then every reduced block of its owner
    "reduce_scatter": lambda p: (p - 1) / p,  # block r of every peer's x
    "reduce": lambda p: 2 * (p - 1) / p,  # the root: block r of every peer's x, then every folded block
    "broadcast": lambda p: (p - 1) / p,  # the root writes a part to every peer, each peer reads the others
}
"""Bytes the busiest rank copies in one call, as a multiple of the call's size n (an all-to-all's
x, a gather's out on the root, a scatter's x on the root, an all-gather's out, an all-reduce's or
a reduce-scatter's x). A gather's root copies its own block and reads the first 1/p of every
peer's while each peer writes the rest of its own, (2p − 1)/p² of n on the root; but its own
block is a copy within its memory, faster than a read across, and n/p, the share the engine's
split aims at, predicted the measurements better (docs/simulation.md, "Single-copy reads"). An
all-gather's own block (out of place, as the harness calls it) is copied at the same rate."""

CROWDED_READ_BYTES: dict[str, Callable[[int], float]] = {
    "broadcast": lambda p: 1.0,  # the root writes nothing: every peer reads all of x
}
"""``READ_BYTES`` where ranks outnumber cores, for the calls whose route changes there."""

PEER_COPIES: dict[str, int] = {"all_reduce": 2, "reduce": 2}
"""Reads or writes per peer in one call where more than one: an all-reduce reads each peer once
per shot, a reduce's root too (others: once)."""

PIECEWISE = frozenset({"all_reduce", "reduce_scatter", "reduce"})
"""The calls by reads that read their peers' blocks piece by piece (``direct_routes.reads_pieces``):
``PEER_COPIES`` reads of each peer per piece (the others read each peer once per call)."""

REDUCED: dict[str, Callable[[int], float]] = {
    "all_reduce": lambda p: (p - 1) / p,  # every peer's part of my block folded into it
    "reduce_scatter": lambda p: (p - 1) / p,
    "reduce": lambda p: (p - 1) / p,  # every rank folds its block of every peer's x
}
"""Bytes the busiest rank folds, as a multiple of n."""

SPILLS = frozenset({"all_reduce", "reduce_scatter"})
"""The calls by reads whose reads cost ``cache_beta`` more per byte beyond the cache
(``cache.read_spilled``): they fold every piece read into the rank's output, out of place,
three streams a byte (``direct.reduce_scatter_by_reads``), and measured beyond the cache above
``reads_beta`` and γ together. A reduce's pieces fold into its kept buffer or the root's ``x``
and measured at the price without it (docs/simulation.md, *The twenty-seventh round*)."""

ONCE = frozenset({"all_gather"})
"""The calls by reads whose bytes are priced at the window's rate for one copy, within the cache
and beyond it (``cache.read_once``), not at ``reads_beta``: an all-gather reads (or, where every
rank has a core, writes) each peer's block once and copies its own, folding nothing; measured
from 64 KiB to 16 MiB at 2-8 ranks its cost per byte grows with its buffers past the cache
(docs/simulation.md, *The forty-third round*)."""


def priced(collective: str, costs: TransportCosts) -> bool:
    """Whether ``costs`` price ``collective``'s route by reads (else: the route taken without them)."""
    return collective in READ_BYTES and costs.reads_beta > 0


def route(collective: str, nbytes: int, size: int, cores: int = 0) -> bool:
    """Whether the direct engine runs a call of ``nbytes`` at ``size`` ranks on one host of
    ``cores`` (0: as many as ranks) by reads, where the kernel allows them."""
    oversubscribed = 0 < cores < size
    if collective == "all_gather":
        return direct_routes.all_gather_by_reads(nbytes // size, oversubscribed)
    if collective == "all_reduce":
        return not direct_routes.all_reduce_by_halves(nbytes, oversubscribed) and nbytes >= direct_routes.reads_from(False, oversubscribed)
    if collective == "reduce_scatter":
        return nbytes >= direct_routes.reads_from(True, oversubscribed)
    if collective == "broadcast":
        return direct_routes.broadcast_by_reads(nbytes, oversubscribed)
    if collective == "reduce":  # beyond the slots, else the slots' pipelined reduce
        return nbytes > DIRECT_LIMITS[collective] and nbytes >= direct_routes.reduce_reads_from(oversubscribed, size)
    return collective in DIRECT_LIMITS and collective in READ_BYTES and (
        nbytes > DIRECT_LIMITS[collective] or direct_routes.exchange_by_reads(collective, nbytes, oversubscribed))


def taken(collective: str, nbytes: int, size: int, costs: TransportCosts, cores: int = 0) -> bool:
    """Whether such a call is priced by reads: the route, and ``costs`` with the reads' terms."""
    return priced(collective, costs) and route(collective, nbytes, size, cores)


def turns(ranks: int, cores: int) -> int:
    """How many calls' time the ranks of one host take on ``cores`` (0: not modelled, one)."""
    return -(-ranks // cores) if cores > 0 else 1


IN_C = frozenset({"all_to_all", "gather", "scatter", "all_gather"})
"""The calls by reads that run in one C call (``engines/_reads_c.c``): each costs ``reads_call``
where the others, whose reads run in Python, cost the engine's ``direct_alpha``; an all-reduce
too where ``direct_routes.all_reduce_folds_in_c`` says (``in_c``)."""

FOLDS_SPILL = frozenset({"all_reduce"})
"""The calls by reads whose folds, where they run in C (``in_c``), cost γ more beyond the cache as
the schedules' do (``cache.fold_gamma`` on the rank's n, ``fold_spills``): the all-reduce's C plan
folds every peer's piece into the rank's block of ``x`` or ``out``, which streams from memory once
the call's buffers outgrow the cache. Measured at 2 ranks from 2 to 64 MiB, in place: without the
rise the model priced it 0.81-0.96 of its time from 8 MiB, with it 0.90-1.04 (docs/simulation.md,
*The fifty-sixth round*). Where ranks outnumber cores the all-reduce's reads run in Python and
its price is left as it was (the rise moved the saved 3- and 4-rank 8 MiB rows from 1.12-1.15 to
1.21-1.24 of their time); a reduce's and a reduce-scatter's folds are priced without it (a
reduce's measured so, *The twenty-seventh round*)."""


def in_c(collective: str, nbytes: int, size: int, cores: int = 0) -> bool:
    """Whether a call by reads of ``nbytes`` at ``size`` ranks on one host of ``cores`` (0: as
    many as ranks) runs in one C call: the exchanges (``IN_C``) always, an all-reduce where
    ``direct_routes.all_reduce_folds_in_c`` says (every rank with a core)."""
    if collective == "all_reduce":
        return direct_routes.all_reduce_folds_in_c(nbytes, 0 < cores < size)
    return collective in IN_C


def fold_spills(collective: str, nbytes: int, size: int, cores: int = 0) -> bool:
    """Whether the folds of a call by reads of ``nbytes`` at ``size`` ranks on one host of ``cores``
    are priced at ``cache.fold_gamma``'s rate (``FOLDS_SPILL``, where it runs in C)."""
    return collective in FOLDS_SPILL and in_c(collective, nbytes, size, cores)


class Terms(NamedTuple):
    """What one call by reads costs, as multiples of the profile's constants (each times the turns)."""

    engine_calls: float  # x direct_alpha: the engine's calls in Python
    c_calls: float  # x reads_call: the calls in one C call
    copies: float  # x reads_alpha: reads or writes of peers
    moved: float  # x reads_beta: bytes the busiest rank copies
    reduced: float  # x gamma: bytes it folds


def terms(collective: str, nbytes: int, size: int, cores: int = 0) -> Terms:
    """The terms of one call by reads of ``nbytes`` at ``size`` ranks on one host of ``cores``."""
    n = turns(size, cores)
    reduced = REDUCED[collective](size) * nbytes if collective in REDUCED else 0.0
    native = in_c(collective, nbytes, size, cores)
    pieces = direct_routes.reads_pieces(nbytes, size) if collective in PIECEWISE else 1
    crowded = 0 < cores < size and collective in CROWDED_READ_BYTES
    share = (CROWDED_READ_BYTES if crowded else READ_BYTES)[collective](size)
    return Terms(0.0 if native else n, n if native else 0.0, (size - 1) * PEER_COPIES.get(collective, 1) * pieces * n,
                 share * nbytes * n, reduced * n)


def reads_time(collective: str, nbytes: int, size: int, costs: TransportCosts, cores: int = 0) -> float:
    """Seconds of one call by reads of ``nbytes`` at ``size`` ranks on one host of ``cores``."""
    t = terms(collective, nbytes, size, cores)
    return (t.engine_calls * costs.direct_alpha + t.c_calls * costs.reads_call + t.copies * costs.reads_alpha
            + t.moved * costs.reads_beta + t.reduced * costs.gamma)


def once_priced(collective: str, size: int, costs: TransportCosts, cores: int = 0) -> bool:
    """Whether a call by reads is priced by its steps (``once_time``): an all-gather where every
    rank has a core, under ``costs`` with the steps' terms (``heap_beta``)."""
    return collective in ONCE and costs.heap_beta > 0 and not 0 < cores < size


def once_time(nbytes: int, size: int, costs: TransportCosts, share: float = 0.0) -> float:
    """Seconds of an all-gather by single copies of ``nbytes`` (its ``out``) at ``size`` ranks, each
    on a core of its own, by its steps (``engines/_reads_c.c``): the C call (``reads_call``), a
    ``process_vm_readv`` or ``process_vm_writev`` per peer and piece (``peer_alpha``), the rank's own
    block copied within its heap (``heap_beta``) and every peer's block read, or where
    ``direct_routes.all_gather_writes`` says its block written into every peer (``peer_beta``);
    beyond the cache (``share`` of the host's buffers) each byte of ``out`` half of ``cache_beta``
    more times ``share``, as the window's copies (``cache.windowed``). Measured alone, the steps
    add up to the route's time: ``perf/cma_copies.py`` (docs/simulation.md, *The forty-fifth
    round*)."""
    block = nbytes // size
    writes = direct_routes.all_gather_writes(block, False)
    piece = direct_routes.ALL_GATHER_WRITE_PIECE_BYTES if writes else CMA_PIECE_BYTES
    pieces = max(1, -(-block // piece))
    return (costs.reads_call + (size - 1) * pieces * costs.peer_alpha + block * costs.heap_beta
            + (nbytes - block) * costs.peer_beta + nbytes * costs.cache_beta * share / 2)
