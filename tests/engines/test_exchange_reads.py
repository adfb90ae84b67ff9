"""All-to-alls too large for the small window's halves, and gathers and scatters too large for
its slots, copy every block straight between its owner's and its receiver's memory where the
kernel allows it (engines/exchange_reads.py: reads, and for gather and scatter writes of the
rest of each block), and run their schedule where it does not. A call returns only once every
rank it exchanged with is done, so the caller may overwrite ``x`` at once and finds ``out``
complete; ranks that pass different counts raise."""

from __future__ import annotations

import numpy as np
import pytest

import collectives
from collectives.algorithms.registry import DIRECT_ALL_TO_ALL_BYTES, DIRECT_GATHER_BYTES, DIRECT_SCATTER_BYTES
from collectives.errors import MessageMismatchError
from collectives.store import PrefixStore
from collectives.testing import run_world

pytestmark = pytest.mark.multiprocess

LIMITS = {"all_to_all": DIRECT_ALL_TO_ALL_BYTES, "gather": DIRECT_GATHER_BYTES, "scatter": DIRECT_SCATTER_BYTES}


def _k(collective: str, size: int) -> int:
    """float64 elements per block: past the window's limit."""
    return LIMITS[collective] // 8 // size + 3


def _blocks(size, k, rep):
    return [np.arange(k * size, dtype=np.float64) + 10**7 * q + rep for q in range(size)]


def _exchange(comm, collective):
    k, me, root = _k(collective, comm.size), comm.rank, comm.size - 1
    bad = []
    for rep in range(6):
        in_place = rep % 2 == 1
        sent = _blocks(comm.size, k, rep)  # rank q's x (all-to-all); block q of it is rank q's (gather)
        mine = slice(me * k, (me + 1) * k)
        if collective == "all_to_all":
            x = sent[me].copy()
            want = np.concatenate([sent[q][mine] for q in range(comm.size)])
            out = comm.all_to_all(x, x if in_place else None)
        elif collective == "gather":
            out = np.zeros(k * comm.size) if me == root else None
            x = out[mine] if in_place and me == root else np.empty(k)
            x[...] = sent[0][mine]
            want = sent[0]
            comm.gather(x, out, root)
        else:
            x = sent[0].copy() if me == root else None
            out = x[mine] if in_place and me == root else np.zeros(k)
            want = sent[0][mine]
            comm.scatter(x, out, root)
        if x is not None and not in_place:
            x.fill(-1.0)  # at once: every rank that reads it has
        if out is not None and not np.array_equal(out, want):
            bad.append(rep)
    plan = next(p for key, p in comm._plans.items() if key[0] == collective)
    return bad, type(plan).__name__, type(plan.route).__name__


@pytest.mark.parametrize("collective", ["all_to_all", "gather", "scatter"])
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("cross_memory", [True, False], ids=["reads", "reads refused"])
def test_large_exchanges_read_peers_blocks_or_run_their_schedule(collective, size, cross_memory):
    results = run_world(lambda comm: _exchange(comm, collective), size, "shm", timeout=120, cross_memory=cross_memory)
    schedule = {"all_to_all": "AllToAll", "gather": "Gather", "scatter": "Scatter"}[collective]
    route = "ExchangeByReads" if cross_memory else schedule
    assert results == [([], "ReadsExchange", route)] * size


def test_ranks_that_pass_different_counts_raise_rather_than_read_past_a_block():
    def fn(world):
        comm = collectives.init(world.rank, world.size, PrefixStore("a2a", world.store), transport="shm", timeout=5)
        k = _k("all_to_all", comm.size) + comm.rank
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


def test_a_gather_whose_ranks_pass_different_counts_raises_on_both_sides():
    """The root reads the head of every block and each rank writes the rest into the root's
    out, so both sides compare counts before they copy."""
    def fn(world):
        comm = collectives.init(world.rank, world.size, PrefixStore("g", world.store), transport="shm", timeout=5)
        k = _k("gather", comm.size) + comm.rank
        try:
            comm.gather(np.ones(k), np.empty(k * comm.size) if comm.rank == 0 else None, 0)
            outcome = "returned"
        except MessageMismatchError:
            outcome = "MessageMismatchError"
        finally:
            world.barrier()
            comm.abort()
        return outcome

    assert run_world(fn, 2, "shm", timeout=60) == ["MessageMismatchError"] * 2
