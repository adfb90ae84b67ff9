"""The plan interface and the cache of plans by signature."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

import numpy as np

from ..engines.call import Call

MAX_PLANS = 256
"""Signatures kept per communicator; past this many the cache starts over (a program that
cycles through more shapes than this pays a plan build per call, nothing else)."""


class Plan(Protocol):
    """One collective of one signature, ready to run on buffers already checked.

    ``x`` and ``out`` are flat, C-contiguous numpy arrays of the signature's dtype and
    counts (``out`` is None where the collective has none on this rank: broadcast, reduce,
    a gather's non-root ranks; ``x`` is None on a scatter's non-root ranks). The plan leaves
    the result in ``out`` (or ``x``), finished (AVG divided), and raises
    ``CollectiveTimeoutError`` or ``TransportError`` as its waits do.
    """

    def __call__(self, x: Any, out: Any, call: Call) -> None: ...


def nothing(x: np.ndarray | None, out: np.ndarray | None, call: Call) -> None:
    """The plan of a call with nothing to move (no elements, or a world of one where the
    result is the input): NCCL and MPI return at once too."""


class PlanCache:
    """Plans by signature, bounded by ``MAX_PLANS``."""

    __slots__ = ("plans",)

    def __init__(self) -> None:
        self.plans: dict[Hashable, Plan] = {}

    def get(self, key: Hashable) -> Plan | None:
        return self.plans.get(key)

    def keep(self, key: Hashable, plan: Plan) -> None:
        if len(self.plans) >= MAX_PLANS:
            self.plans.clear()
        self.plans[key] = plan

    def clear(self) -> None:
        self.plans.clear()
