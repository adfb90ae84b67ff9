"""Helpers of the mismatch, recorder and skew tests: fresh communicators inside a job.

A ``run_world`` job hands each rank one communicator; a case that leaves it broken (a
count mismatch) or that needs other settings per rank (skew) makes its own over the job's
store instead, under a name of its own, so that one job runs many cases.
"""

from __future__ import annotations

from typing import Any

import collectives
from collectives.store import PrefixStore


def fresh(comm: Any, name: str, transport: str, **settings: Any) -> Any:
    """A new communicator of ``comm``'s ranks, meeting under ``name`` in the job's store."""
    store = comm.store
    while isinstance(store, PrefixStore):  # the job's own store, under the communicator's prefixes
        store = store.store
    settings.setdefault("timeout", 5.0)
    return collectives.init(rank=comm.rank, size=comm.size, store=PrefixStore(f"case/{name}", store),
                            transport=transport, **settings)
