"""The last-level cache: bytes beyond it cost more.

A copy whose source and destination stay in the cache runs at the cache's rate; once the
buffers a host's ranks touch in one call outgrow the last-level cache, part of every copy
comes from memory. The model keeps one β per transport (the in-cache rate) and charges
``cache_beta`` more per byte, times the share of the call's buffers beyond the cache
(``beyond``): 0 up to the cache size, then 1 − cache / footprint, so the extra time
``cache_beta`` × bytes × (1 − cache / footprint) grows linearly in the size once past it.
On this project's machine a 2-rank ring reduce_scatter over shared memory costs 0.12 ns
per byte at 2 MiB, 0.21 at 8 MiB and 0.27 at 32 MiB (docs/simulation.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .machine import LinkClass
from .profile import TransportCosts

BUFFERS: dict[str, Callable[[int], float]] = {
    "all_reduce": lambda p: 2.0,
    "all_to_all": lambda p: 2.0,
    "reduce_scatter": lambda p: 1.0 + 1.0 / p,
    "all_gather": lambda p: 1.0 + 1.0 / p,
    "broadcast": lambda p: 1.0 + 1.0 / p,
    "reduce": lambda p: 1.0 + 1.0 / p,
    "gather": lambda p: 2.0 / p,
    "scatter": lambda p: 2.0 / p,
}
"""The bytes of a rank's buffers, as a multiple of the call's size n, by collective, on
average over the p ranks (out of place, as the harness calls: all_reduce's input and output;
reduce_scatter's n in and n/p out; broadcast's n on every rank and the root's second n;
gather's n on the root and n/p on every rank)."""


def footprint(collective: str, nbytes: int, size: int, ranks_per_host: int) -> float:
    """Bytes the buffers of one host's ranks span in one call of ``nbytes``."""
    share = BUFFERS.get(collective, BUFFERS["all_to_all"])(size)
    return ranks_per_host * nbytes * share


def beyond(footprint_bytes: float, cache_bytes: int) -> float:
    """The share of ``footprint_bytes`` beyond a cache of ``cache_bytes`` (0 where it fits, or
    where the cache is not modelled)."""
    if cache_bytes <= 0 or footprint_bytes <= cache_bytes:
        return 0.0
    return 1.0 - cache_bytes / footprint_bytes


def spilled(cls: LinkClass, share: float) -> LinkClass:
    """``cls`` with its β (and its local copies' ``copy_beta``, where modelled) raised by its
    ``cache_beta`` times ``share`` (the bytes beyond the cache)."""
    if not share or not cls.cache_beta:
        return cls
    extra = cls.cache_beta * share
    return dataclasses.replace(cls, beta=cls.beta + extra, copy_beta=cls.copy_beta + extra if cls.copy_beta else 0.0)


def windowed(costs: TransportCosts, share: float) -> TransportCosts:
    """``costs`` with the direct engine's ``direct_beta`` raised by half of ``cache_beta`` times
    ``share`` (the bytes beyond the cache): ``direct_beta`` prices one copy of a byte, through a
    window, where β prices a message's byte, two copies (the sender's half and the receiver's,
    ``machine.LinkClass.send_share``), which ``spilled`` raises by the whole ``cache_beta``."""
    if not share or not costs.cache_beta:
        return costs
    return dataclasses.replace(costs, direct_beta=costs.direct_beta + costs.cache_beta * share / 2)


def read_once(costs: TransportCosts, share: float) -> TransportCosts:
    """``costs`` with the reads' ``reads_beta`` at the window's rate for one copy of a byte
    (``windowed``'s ``direct_beta``: in the cache ``direct_beta``, beyond it half of ``cache_beta``
    more times ``share``), for the calls by reads that copy each byte once and fold nothing
    (``reads.ONCE``): ``reads_beta`` is one rate fitted to all-to-alls, gathers and scatters of
    512 KiB-64 MiB, mostly beyond the cache, where an all-gather's reads and writes measured their
    cost per byte growing with the call's buffers as the window's copies do (docs/simulation.md,
    *The forty-third round*)."""
    return dataclasses.replace(costs, reads_beta=windowed(costs, share).direct_beta)


def read_spilled(costs: TransportCosts, share: float) -> TransportCosts:
    """``costs`` with the reads' ``reads_beta`` raised by the whole ``cache_beta`` times ``share``
    (the bytes beyond the cache): for the calls by reads that fold each piece into their output
    (``reads.SPILLS``), where the rank's own input, the piece read and the output stream beside
    each read byte."""
    if not share or not costs.cache_beta:
        return costs
    return dataclasses.replace(costs, reads_beta=costs.reads_beta + costs.cache_beta * share)


FOLD_SPILL = 0.75
"""The share of ``cache_beta`` a byte folded into a destination beyond the cache costs more
than ``gamma`` (the in-cache fold), times the share of that destination beyond the cache
(``fold_gamma``). Fitted to the saved choice runs and validation runs (docs/simulation.md, *The
thirty-first round*), not to a probe: the fold probes measured a smaller rise on the earlier
machine and a larger one at 32 MiB on the later one."""


def fold_gamma(gamma: float, cache_beta: float, nbytes: int, cache_bytes: int) -> float:
    """``gamma`` for the folds of a call of ``nbytes`` on one host: raised by ``FOLD_SPILL`` times
    ``cache_beta`` times the share of a rank's ``nbytes`` beyond a cache of ``cache_bytes`` (0:
    not modelled). A fold reads and writes its destination, one rank's buffer of n (the received
    piece sits in a scratch slab that stays in the cache), so the rise follows that buffer's size,
    not the host's footprint (``footprint``): a rank whose buffer fits folds at the cache's rate
    however many ranks share the host, and a rank that folds several children's pieces into it,
    as a tree's root does, pays the rise on each."""
    if not cache_beta or cache_bytes <= 0:
        return gamma
    return gamma + FOLD_SPILL * cache_beta * beyond(float(nbytes), cache_bytes)


def fold_spilled(costs: TransportCosts, nbytes: int, cache_bytes: int) -> TransportCosts:
    """``costs`` with γ at ``fold_gamma``'s rate for folds into a rank's buffer of ``nbytes``: for
    the calls by reads whose folds run in C and spill as the schedules' do (``reads.fold_spills``)."""
    gamma = fold_gamma(costs.gamma, costs.cache_beta, nbytes, cache_bytes)
    return costs if gamma == costs.gamma else dataclasses.replace(costs, gamma=gamma)
