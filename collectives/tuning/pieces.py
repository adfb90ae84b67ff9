"""The direct engine's reduces through the slots piece by piece, priced as the one-way pipeline
they are.

Where ranks outnumber cores, a reduce too large for one slot and below the reads' size
(``direct_routes.reduce_by_pieces``; ``plans/windowed.PiecewiseReduce``) is cut into pieces of
at most a slot (``registry.DIRECT_REDUCE_BYTES``), each a one-way call through the slots: every
rank but the root copies its piece into a slot and goes on to the next, up to a round of slots
ahead; the root copies its own piece into its slot and folds the ``p`` pieces, in rank order, into
its ``x``. No writer waits for the root while a slot is free, so the writers' copies run on the
cores the root leaves them while the root folds the piece before; the call takes the first
piece's copies (the pipeline's fill), then per piece the root's fold and the handshake of the
root waking to a piece a writer posted (``wake``). The writers' copies of a piece, (p - 1) of
them on the cores the root leaves, are shorter than the root's fold, which copies p + 1 pieces'
bytes and folds p - 1: the root bounds the pipeline. Priced as one slot call per piece with every rank sharing the cores evenly (the
window's price, ``tuner.direct_time`` times the turns), the writers' run-ahead is missed and the
call is priced at twice the root's time at 4 ranks on 2 cores (docs/simulation.md, "The
twenty-eighth round").
"""

from __future__ import annotations

from typing import NamedTuple

from ..algorithms import direct_routes
from ..algorithms.registry import DIRECT_REDUCE_BYTES
from .profile import TransportCosts


def taken(collective: str, nbytes: int, size: int, cores: int = 0) -> bool:
    """Whether the direct engine runs a call of ``nbytes`` at ``size`` ranks on one host of
    ``cores`` (0: as many as ranks) piece by piece through the slots."""
    return (collective == "reduce" and nbytes > DIRECT_REDUCE_BYTES
            and direct_routes.reduce_by_pieces(nbytes, 0 < cores < size))


class Stages(NamedTuple):
    """Seconds of one piece's stages and how many pieces there are."""

    count: int  # pieces
    fold: float  # the root: its piece into its slot and out again, the p pieces folded
    copies: float  # the writers' copies of a piece, on the cores the root leaves them


def stages(nbytes: int, size: int, costs: TransportCosts, cores: int) -> Stages:
    """The stages of a reduce of ``nbytes`` at ``size`` ranks on ``cores`` in pieces of a slot."""
    count = -(-nbytes // DIRECT_REDUCE_BYTES)
    piece = nbytes / count
    fold = costs.direct_alpha + piece * ((size + 1) * costs.direct_beta + (size - 1) * costs.gamma)
    copies = (size - 1) * piece * costs.direct_beta / max(1, cores - 1)
    return Stages(count, fold, copies)


def pieces_time(nbytes: int, size: int, costs: TransportCosts, cores: int) -> float:
    """Seconds of a reduce of ``nbytes`` at ``size`` ranks on ``cores`` piece by piece: the
    first piece's copies, then per piece the root's fold and its wake to the piece."""
    s = stages(nbytes, size, costs, cores)
    return s.copies + s.count * (s.fold + costs.wake)
