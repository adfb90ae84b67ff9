"""Predicted times of every algorithm on a modelled cluster, and the tuner's pick there."""

from __future__ import annotations

import dataclasses

from ..algorithms.registry import automatic
from ..steps import step_bytes
from ..tuning import tuner
from ..tuning.cache import beyond, footprint, spilled
from ..tuning.profile import Profile
from .cluster import Cluster

BUS_FACTOR = {
    "all_reduce": lambda p: 2 * (p - 1) / p,
    "reduce_scatter": lambda p: (p - 1) / p,
    "all_gather": lambda p: (p - 1) / p,
    "broadcast": lambda p: 1.0,
    "reduce": lambda p: 1.0,
    "gather": lambda p: (p - 1) / p,
    "scatter": lambda p: (p - 1) / p,
    "all_to_all": lambda p: (p - 1) / p,
}
"""busbw = algbw times this (nccl-tests' factors, doc/PERFORMANCE.md)."""

COLLECTIVES = tuple(BUS_FACTOR)


def windows(c: Cluster, transport: str) -> bool:
    """Whether the direct engine applies: one host over shared memory."""
    return transport == "shm" and c.ranks_per_host >= c.ranks


def algorithms(collective: str, c: Cluster, transport: str) -> list[str]:
    return tuner.candidates(collective, windows(c, transport))


def predict(collective: str, algorithm: str, nbytes: int, c: Cluster, transport: str, profile: Profile,
            step: int = 0, lockstep: int = -1) -> float:
    """Seconds of one call, in the steps it runs (``step``, else ``steps.step_bytes``'s for
    ``nbytes``; ``lockstep``: as ``tuner.replay_time``'s); raises ``tuner.TooLarge`` where the
    replay would take too long."""
    if algorithm == "direct":
        price = tuner.direct_price(collective, nbytes, c.ranks, profile.costs("shm"), c.cores, profile.cache_bytes)
        if price is not None:
            return price
        algorithm = automatic(collective, nbytes, c.ranks)
    if nbytes > tuner.LINEAR_BYTES and profile.cache_bytes:  # the line through 8 and 16 MiB, as the tuner draws it
        step = step or step_bytes(transport, collective, nbytes, c.ranks)
        kept = tuner.line_lockstep(collective, algorithm, nbytes, c.ranks, step, c.lockstep_bytes)
        return tuner.on_the_line(nbytes, lambda n: predict(collective, algorithm, n, c, transport, profile, step,
                                                           kept))
    share = beyond(footprint(collective, nbytes, c.ranks, c.ranks_per_host), profile.cache_bytes)
    if share:  # the call's buffers outgrow the last-level cache: every byte costs more
        c = dataclasses.replace(c, intra=spilled(c.intra, share), inter=spilled(c.inter, share))
    floor = 0.0
    if c.ranks_per_host >= c.ranks:  # one host: its memory's floor, and folds beyond the cache
        floor, gamma = tuner.beyond_the_cache(collective, algorithm, nbytes, c.ranks, c.intra, c.gamma, share,
                                              profile.cache_bytes)
        c = dataclasses.replace(c, gamma=gamma)
    copies = tuner.local_copy_time(collective, algorithm, nbytes, c.ranks, c.intra) * c.cpu_factor
    return max(floor, copies + tuner.replay_time(collective, algorithm, nbytes, c.factory(), c.calls,
                                                   transport, step or step_bytes(transport, collective, nbytes, c.ranks),
                                                   lockstep))


def pick(collective: str, nbytes: int, times: dict[str, float], c: Cluster, transport: str,
         profile: Profile) -> str:
    """What the tuner takes given ``times``: the fastest, unless the size rule's choice is
    within the profile's margin of it (``tuner.choose``'s rule, on this machine's predictions)."""
    rule = automatic(collective, nbytes, c.ranks, windows(c, transport))
    best = min(times, key=lambda a: times[a])
    if rule in times and times[rule] <= times[best] * (1 + profile.margin):
        return rule
    return best
