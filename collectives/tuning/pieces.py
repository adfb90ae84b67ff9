"""The direct engine's reduces one way through the slots where ranks outnumber cores, in pieces
of at most a slot, priced from what they do.

Where ranks outnumber cores, a direct reduce below the reads' size goes through the slots: up
to a slot (``registry.DIRECT_REDUCE_BYTES``) as one one-way call, beyond it cut into pieces of a
slot (``direct_routes.reduce_by_pieces``; ``plans/windowed.PiecewiseReduce``), each such a call
(``engines/_small_c.c``, ``run_reduce``): every rank but the root copies its piece into a slot and
goes on, up to a round of slots ahead; the root waits for the p - 1 pieces and folds them, in
rank order, into its ``x`` (a root other than rank 0 first swaps its piece for rank 0's, two
copies more, left out: the tuner's runs and the harness reduce to rank 0).

Per piece the call costs the root's fold of p - 1 pieces (γ each byte), the writers' p - 1
copies of a piece (``direct_beta`` each byte), the engine's call (``direct_alpha``) and the
root's wake to the piece a writer posted (``wake``). The copies and the fold are counted in turn,
not side by side on the two cores: measured at 4 and 8 ranks on 2 cores, a piece takes what the
root's fold and the writers' copies take together, not the longer of them (docs/simulation.md,
"The twenty-eighth round"). Each piece's slots and ``x`` fit the cache: no cache term.
"""

from __future__ import annotations

from ..algorithms import direct_routes
from ..algorithms.registry import DIRECT_REDUCE_BYTES
from .profile import TransportCosts


def taken(collective: str, nbytes: int, size: int, cores: int = 0) -> bool:
    """Whether the direct engine runs a call of ``nbytes`` at ``size`` ranks on one host of
    ``cores`` (0: as many as ranks) one way through the slots in pieces of at most a slot."""
    return collective == "reduce" and direct_routes.reduce_by_pieces(nbytes, 0 < cores < size, size)


def count(nbytes: int) -> int:
    """How many pieces a reduce of ``nbytes`` is cut into: slots' worths, the last one short."""
    return -(-nbytes // DIRECT_REDUCE_BYTES)


def pieces_time(nbytes: int, size: int, costs: TransportCosts) -> float:
    """Seconds of a reduce of ``nbytes`` at ``size`` ranks piece by piece: per piece the engine's
    call and the root's wake, per byte the root's p - 1 folds and the writers' p - 1 copies."""
    return count(nbytes) * (costs.direct_alpha + costs.wake) + nbytes * (size - 1) * (costs.gamma + costs.direct_beta)
