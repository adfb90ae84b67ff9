"""``COLLECTIVES_CHECK``: every call first compares its signature across the ranks.

Each rank contributes a fixed-size fingerprint of its call (collective, dtype, count,
root, reduce op, requested algorithm: ``signature.fingerprint``) to an all-gather over
the communicator's own channels, numbered with the call and tagged as the library's own
traffic. Every rank then holds every fingerprint, so all of them find the same first
differing field and raise the same :class:`~collectives.errors.CollectiveMismatchError`,
before the call moves any data: a skipped, reordered or mis-sized call is named where it
happens instead of returning wrong data or hanging. The price is one small all-gather per
call, so the mode is for debugging (as ``TORCH_DISTRIBUTED_DEBUG=DETAIL`` is).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from ..engines.call import Call
from ..errors import CollectiveMismatchError
from .base import Plan
from .signature import FINGERPRINT_WORDS, first_difference, fingerprint, from_fingerprint, signature


class CheckedPlan:
    """``plan``, run only once every rank's fingerprint equals this one's."""

    __slots__ = ("plan", "exchange", "mine", "everyone", "size")

    def __init__(self, key: Hashable, plan: Plan, exchange: Plan, size: int) -> None:
        self.plan = plan
        self.exchange = exchange  # an all-gather of FINGERPRINT_WORDS int64 per rank
        self.mine = np.zeros(FINGERPRINT_WORDS, dtype=np.int64)
        fingerprint(signature(key), self.mine)
        self.everyone = np.zeros(FINGERPRINT_WORDS * size, dtype=np.int64)
        self.size = size

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        if self.size > 1:
            self.exchange(self.mine, self.everyone, call)
            rows = self.everyone.reshape(self.size, FINGERPRINT_WORDS)
            if not (rows == self.mine).all():
                found = first_difference([from_fingerprint(row) for row in rows])
                field, values = found if found is not None else ("fingerprint", [row.tolist() for row in rows])
                raise CollectiveMismatchError(call.name, call.seq, field, values)
        self.plan(x, out, call)
