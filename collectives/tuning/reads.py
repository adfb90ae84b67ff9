"""The single-copy exchanges: all-to-all, gather and scatter by reads of peers' memory.

Beyond the small window (``registry.DIRECT_LIMITS``) the direct engine runs these three by
``process_vm_readv``/``writev`` on one host (``engines/exchange_reads.py``) where the kernel
allows it: every rank posts where its buffers lie, waits for each peer it exchanges with to
post too, copies its share straight between the two address spaces, and returns once those
peers are done. So a call costs the engine's ``direct_alpha``, ``reads_alpha`` per peer a
rank exchanges with (the root of a gather or scatter, and every rank of an all-to-all, has
p − 1), and ``reads_beta`` per byte the busiest rank copies (``READ_BYTES``), each byte once.

Ranks beyond the host's cores take turns as whole calls (``turns``): a copy of a few MiB is
shorter than the scheduler's slice, so 3 ranks on 2 cores measure as slow as 4, not 1.5
times as slow as 2 (docs/simulation.md, "Single-copy reads").

Whether the kernel allows the reads is a property of the machine, the same on every rank;
the profile carries it: ``reads_beta`` 0 (a profile measured where reads were refused, or
one that predates the term) prices these calls as the schedule the engine falls back to.
"""

from __future__ import annotations

from collections.abc import Callable

from .profile import TransportCosts

READ_BYTES: dict[str, Callable[[int], float]] = {
    "all_to_all": lambda p: 1.0,  # a block of every peer's x, and my own block, into my out
    "gather": lambda p: 1.0 / p,  # every rank about its block (see below)
    "scatter": lambda p: 1.0 / p,  # every rank its block of the root's x (the root its own)
}
"""Bytes the busiest rank copies in one call, as a multiple of the call's size n (an all-to-all's
x, a gather's out on the root, a scatter's x on the root). A gather's root copies its own block
and reads the first 1/p of every peer's while each peer writes the rest of its own, (2p − 1)/p²
of n on the root; but its own block is a copy within its memory, faster than a read across, and
n/p, the share the engine's split aims at, predicted the measurements better (docs/simulation.md,
"Single-copy reads")."""


def priced(collective: str, costs: TransportCosts) -> bool:
    """Whether ``costs`` price ``collective`` beyond the small window by reads (else: the schedule)."""
    return collective in READ_BYTES and costs.reads_beta > 0


def turns(ranks: int, cores: int) -> int:
    """How many calls' time the ranks of one host take on ``cores`` (0: not modelled, one)."""
    return -(-ranks // cores) if cores > 0 else 1


def reads_time(collective: str, nbytes: int, size: int, costs: TransportCosts, cores: int = 0) -> float:
    """Seconds of one exchange by reads of ``nbytes`` at ``size`` ranks on one host of ``cores``."""
    moved = READ_BYTES[collective](size) * nbytes
    return (costs.direct_alpha + (size - 1) * costs.reads_alpha + moved * costs.reads_beta) * turns(size, cores)
