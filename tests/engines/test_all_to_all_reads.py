"""All-to-alls too large for the small window's halves read every block straight out of its
owner's ``x`` where the kernel allows reads of peers' memory (engines/all_to_all_reads.py),
and run their schedule where it does not. A call returns only once every peer has read its
``x``, so the caller may overwrite it at once; ranks that pass different counts raise."""

from __future__ import annotations

import numpy as np
import pytest

import collectives
from collectives.algorithms.registry import DIRECT_ALL_TO_ALL_BYTES
from collectives.errors import MessageMismatchError
from collectives.store import PrefixStore
from collectives.testing import run_world

pytestmark = pytest.mark.multiprocess


def _k(size: int) -> int:
    """float64 elements per block: past the halves' limit."""
    return DIRECT_ALL_TO_ALL_BYTES // 8 // size + 3


def _exchange(comm):
    k = _k(comm.size)
    bad = []
    for rep in range(6):
        x = (np.arange(k * comm.size) + 10**7 * comm.rank + rep).astype(np.float64)
        want = np.concatenate([(np.arange(k * comm.size) + 10**7 * q + rep)[comm.rank * k:(comm.rank + 1) * k]
                               for q in range(comm.size)])
        if rep % 2:
            out = comm.all_to_all(x, x)  # in place
        else:
            out = comm.all_to_all(x)
            x.fill(-1.0)  # at once: every peer has read it
        if not np.array_equal(out, want):
            bad.append(rep)
    plan = next(p for key, p in comm._plans.items() if key[0] == "all_to_all")
    return bad, type(plan).__name__, type(plan.route).__name__


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("cross_memory", [True, False], ids=["reads", "reads refused"])
def test_large_all_to_alls_read_peers_blocks_or_run_their_schedule(size, cross_memory):
    results = run_world(_exchange, size, "shm", timeout=120, cross_memory=cross_memory)
    route = "AllToAllByReads" if cross_memory else "AllToAll"
    assert results == [([], "WindowAllToAll", route)] * size


def test_ranks_that_pass_different_counts_raise_rather_than_read_past_a_block():
    def fn(world):
        comm = collectives.init(world.rank, world.size, PrefixStore("a2a", world.store), transport="shm", timeout=5)
        k = _k(comm.size) + comm.rank
        x = np.ones(k * comm.size)
        try:
            comm.all_to_all(x)
            outcome = "returned"
        except MessageMismatchError:
            outcome = "MessageMismatchError"
        finally:
            comm.abort()
        return outcome

    assert run_world(fn, 2, "shm", timeout=60) == ["MessageMismatchError"] * 2
