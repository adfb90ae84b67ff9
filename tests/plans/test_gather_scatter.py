"""Gather and scatter: on one host over shared memory, small ones go one way through the small
window's slots (``windowed.SlotExchange``). A gather's other ranks copy their ``x`` into their
slot and go on, and the root copies every slot into its ``out``; a scatter's root copies its
``x`` into its slot and goes on, and every rank copies its block out. The writers run up to a
round of slots ahead of the readers. Larger calls, and any asked for by name, run their
schedule. Either way every rank gets its blocks in rank order, in place or not."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from collectives.algorithms.registry import DIRECT_GATHER_BYTES, DIRECT_SCATTER_BYTES
from collectives.engines import small
from collectives.testing import run_world

pytestmark = pytest.mark.multiprocess

LARGE = max(DIRECT_GATHER_BYTES, DIRECT_SCATTER_BYTES) // 8 // 2 + 1  # int64 per rank: past the limits at 2 ranks
CASES = ((1, None), (7, None), (1000, None), (LARGE, None), (7, "tree"), (7, "ring"))


def _blocks(k, size, rep):
    return [np.arange(k, dtype=np.int64) + 1000 * q + rep for q in range(size)]


def _exchanges(comm):
    bad = []
    for k, algorithm in CASES:
        for root in range(comm.size):
            for rep in range(4):  # odd reps in place; the later calls of a shape take its kept plan
                in_place = rep % 2 == 1
                blocks = _blocks(k, comm.size, rep)
                out = np.zeros(k * comm.size, np.int64) if comm.rank == root else None
                mine = slice(comm.rank * k, (comm.rank + 1) * k)
                x = out[mine] if in_place and out is not None else np.empty(k, np.int64)
                x[...] = blocks[comm.rank]
                got = comm.gather(x, out, root=root, algorithm=algorithm)
                if comm.rank == root and (got is not out or not np.array_equal(out, np.concatenate(blocks))):
                    bad.append(("gather", k, algorithm, root, rep))
                whole = np.concatenate(blocks)
                piece = whole[mine] if in_place and comm.rank == root else np.zeros(k, np.int64)
                comm.scatter(whole if comm.rank == root else None, piece, root=root, algorithm=algorithm)
                if not np.array_equal(piece, blocks[comm.rank]) or not np.array_equal(whole, np.concatenate(blocks)):
                    bad.append(("scatter", k, algorithm, root, rep))
    routes = {(key[0], key[2], key[-1]): type(plan).__name__ for key, plan in comm._plans.items()
              if key[0] in ("gather", "scatter")}
    return bad, routes


@pytest.mark.parametrize("pure", [False, True], ids=["C", "COLLECTIVES_PURE_PYTHON"])
@pytest.mark.parametrize("size", [2, 3])
def test_small_gathers_and_scatters_take_the_slots_and_every_rank_gets_its_blocks(monkeypatch, size, pure):
    """The same in C and in Python (a scatter's root posts before it copies its own block)."""
    if pure:
        monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")
    for bad, routes in run_world(_exchanges, size, "shm", timeout=120):
        assert bad == []
        for collective in ("gather", "scatter"):
            for k in (1, 7, 1000):
                assert routes[(collective, k, None)] == "SlotExchange"
            assert routes[(collective, LARGE, None)] != "SlotExchange"
            assert routes[(collective, 7, "tree")] != "SlotExchange" and routes[(collective, 7, "ring")] != "SlotExchange"


def _run_ahead(comm, collective):
    """The readers start late; the writers make a round of slots' calls, then one more."""
    rounds = small.EAGER_BROADCAST_SLOTS
    writer = comm.rank != 0 if collective == "gather" else comm.rank == 0
    x = np.full(2, comm.rank, np.int64)
    out = np.empty(2 * comm.size, np.int64)
    piece = np.empty(2, np.int64)

    def call():
        if collective == "gather":
            comm.gather(x, out if comm.rank == 0 else None, root=0)
        else:
            comm.scatter(np.arange(2 * comm.size) if comm.rank == 0 else None, piece, root=0)

    call()  # the window is open and the plan kept
    comm.barrier()
    if not writer:
        time.sleep(1.0)
        started = time.monotonic()
        for _ in range(rounds + 1):
            call()
        got = out.tolist() if collective == "gather" else piece.tolist()
        return "reader", started, got
    for _ in range(rounds):
        call()
    ahead = time.monotonic()
    call()  # its slot is the first call's: it waits for the readers of that
    return "writer", ahead, time.monotonic()


@pytest.mark.parametrize("collective", ["gather", "scatter"])
def test_the_writers_run_a_round_of_slots_ahead_of_the_readers_and_no_further(collective):
    size = 3
    results = run_world(functools.partial(_run_ahead, collective=collective), size, "shm", timeout=60)
    readers = [r for r in results if r[0] == "reader"]
    writers = [r for r in results if r[0] == "writer"]
    assert len(writers) == (size - 1 if collective == "gather" else 1)
    latest_start = max(started for _, started, _ in readers)
    earliest_start = min(started for _, started, _ in readers)
    for _, ahead, done in writers:
        assert ahead < earliest_start and done > latest_start  # the last waited for every reader's first call
    if collective == "gather":
        assert readers[0][2] == [q for q in range(size) for _ in range(2)]
    else:
        assert [r[2] for r in readers] == [[2 * q, 2 * q + 1] for q in range(1, size)]


def test_the_slots_hold_what_the_limits_let_through():
    """A gather's contribution and a scatter's whole x each fill one slot."""
    assert DIRECT_GATHER_BYTES <= small.PIPELINED_BROADCAST_BYTES
    assert DIRECT_SCATTER_BYTES <= small.PIPELINED_BROADCAST_BYTES
