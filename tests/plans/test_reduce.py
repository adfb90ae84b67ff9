"""Reduce: on one host over shared memory, small reduces run one-way through the small
window's slots (``windowed.OneWay``): every rank but the root copies its ``x`` into its
slot and goes on, up to a round of slots ahead of the root, which folds them all. Larger ones
go by reads of peers' memory (``windowed.LargeReduce``: every rank folds a block, the root
reads the folded blocks) where the kernel allows them; below the reads' size, where ranks
outnumber cores, through the slots a slot's worth at a time (``windowed.PiecewiseReduce``);
else they run their schedule, as any asked for by name does. Either way the root gets the rank-order reduction and every other rank's
``x`` stays as it was."""

from __future__ import annotations

import time

import numpy as np
import pytest

from collectives.algorithms import direct_routes
from collectives.algorithms.registry import DIRECT_REDUCE_BYTES
from collectives.engines import small, small_native
from collectives.engines import windows as window_engine
from collectives.transports import shm_window
from collectives.testing import run_world

pytestmark = pytest.mark.multiprocess

LARGE = DIRECT_REDUCE_BYTES // 8 + 1  # float64 elements: past the direct engine's limit


def _reduces(comm):
    got = []
    for count, algorithm in ((1, None), (300, None), (LARGE, None), (300, "tree")):
        for root in range(comm.size):
            for op in ("sum", "max", "avg"):
                for _ in range(2):  # the second call of a shape takes the fast path (its kept plan)
                    x = np.arange(count, dtype=np.float64) * (comm.rank + 1) + comm.rank
                    kept = x.copy()
                    assert comm.reduce(x, root=root, op=op, algorithm=algorithm) is x
                    got.append(x if comm.rank == root else bool((x == kept).all()))
    plans = {(k[2], k[-1]): getattr(p, "plan", p) for k, p in comm._plans.items() if k[0] == "reduce"}
    return got, {key: (type(p).__name__, type(getattr(p, "route", None)).__name__) for key, p in plans.items()}


@pytest.mark.parametrize("size", [2, 3])
def test_small_reduces_take_the_window_and_every_reduce_gives_the_root_the_reduction(size, monkeypatch):
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: False)  # the forked ranks inherit it
    results = run_world(_reduces, size, "shm", timeout=60)
    _check(results, size)
    routes = results[0][1]
    assert routes[(1, None)][0] == routes[(300, None)][0] == "OneWay"
    # below the reads' sizes a schedule: the direct engine's fallback, or the automatic choice's own
    assert routes[(LARGE, None)] in {("LargeReduce", "Reduce"), ("Reduce", "NoneType")}
    assert routes[(300, "tree")][0] == "Reduce"


def test_reduces_beyond_a_slot_take_the_slots_piece_by_piece_where_ranks_outnumber_cores(monkeypatch):
    """``LARGE`` float64s: two pieces of uneven length; every piece folded in rank order."""
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)  # the forked ranks inherit it
    results = run_world(_reduces, 2, "shm", timeout=60)
    _check(results, 2)
    assert results[0][1][(LARGE, None)] == ("LargeReduce", "PiecewiseReduce")


def _check(results, size):
    """Every call of ``_reduces`` gave its root the reduction and left the others' ``x``."""
    i = 0
    for count, _ in ((1, None), (300, None), (LARGE, None), (300, "tree")):
        parts = [np.arange(count, dtype=np.float64) * (r + 1) + r for r in range(size)]
        for root in range(size):
            for op in ("sum", "max", "avg"):
                want = {"sum": sum(parts), "max": np.maximum.reduce(parts), "avg": sum(parts) / size}[op]
                for _ in range(2):
                    for r in range(size):
                        got = results[r][0][i]
                        if r == root:
                            np.testing.assert_allclose(got, want, err_msg=f"{count} {op} root {root}")
                        else:
                            assert got is True, f"rank {r}'s x changed ({count} {op} root {root})"
                    i += 1


def _rewritten_at_once(comm):
    """Large reduces to a root that changes, every rank rewriting its ``x`` as soon as the call
    returns (peers read it, and the root reads every rank's folded block: none may return
    before they are done); returns the wrong elements seen and the plan's route."""
    k = LARGE + 7  # blocks of uneven length
    x = np.empty(k)
    bad = 0
    for i in range(8):
        root = i % comm.size
        x[...] = comm.rank + 10 * i
        comm.reduce(x, root=root)
        if comm.rank == root:
            bad += int(np.count_nonzero(x != sum(range(comm.size)) + comm.size * 10 * i))
        x[...] = -1.0  # what a peer would read if it were still copying
    [plan] = [p for key, p in comm._plans.items() if key[0] == "reduce" and key[2] == k and key[4] == 0]
    return bad, type(getattr(plan, "plan", plan)).__name__, type(getattr(plan, "route", None)).__name__


@pytest.fixture
def reads_from_the_slots(monkeypatch, direct_reduces):
    """Reduces by reads from just beyond the slots (``LARGE``), not from their own size; and the
    direct engine the automatic choice there, which the cost model, pricing the reads at that size
    (where the engine leaves them for the schedules), would not take."""
    monkeypatch.setattr(direct_routes, "REDUCE_READS_BYTES", (DIRECT_REDUCE_BYTES + 1,) * 2)
    few, _ = direct_routes.REDUCE_PIECES_CROWDED_RANKS  # 3 ranks on 2 cores are a crowded few
    monkeypatch.setattr(direct_routes, "REDUCE_PIECES_CROWDED_RANKS", (few, DIRECT_REDUCE_BYTES + 1))


def test_large_reduces_by_reads_give_the_root_the_reduction(reads_from_the_slots):
    results = run_world(_reduces, 3, "shm", timeout=60)
    assert results[0][1][(LARGE, None)] == ("LargeReduce", "NoneType")
    _check(results, 3)


def test_large_reduces_by_reads_return_only_once_peers_are_done_with_the_buffers(reads_from_the_slots, monkeypatch):
    monkeypatch.setattr(window_engine, "DIRECT_STEP_BYTES", 64 << 10)  # blocks of two pieces, one short
    assert run_world(_rewritten_at_once, 3, "shm", timeout=60) == [(0, "LargeReduce", "NoneType")] * 3


def test_large_reduces_run_their_schedule_where_reads_are_turned_off(reads_from_the_slots):
    assert run_world(_rewritten_at_once, 3, "shm", timeout=60, cross_memory=False) == [(0, "LargeReduce", "Reduce")] * 3


def _run_ahead(comm):
    """The root starts late; the others reduce a round of slots, then one call more."""
    slots = small.EAGER_BROADCAST_SLOTS
    x = np.full(4, comm.rank + 1.0)
    comm.reduce(x, root=0)  # the window is open and the plan kept
    comm.barrier()
    if comm.rank == 0:
        time.sleep(1.0)
        started = time.monotonic()
        sums = []
        for _ in range(slots + 1):
            y = np.full(4, 1.0)
            comm.reduce(y, root=0)
            sums.append(float(y[0]))
        return started, sums
    for _ in range(slots):
        comm.reduce(x, root=0)
    ahead = time.monotonic()
    comm.reduce(x, root=0)  # its slot is the first call's: it waits for the root to read that
    return ahead, time.monotonic()


@pytest.mark.parametrize("size", [2, 4])
def test_ranks_other_than_the_root_run_a_round_of_slots_ahead_of_it_and_no_further(size):
    results = run_world(_run_ahead, size, "shm", timeout=60)
    started, sums = results[0]
    assert sums == [1.0 + sum(range(2, size + 1))] * (small.EAGER_BROADCAST_SLOTS + 1)
    for ahead, done in results[1:]:
        assert ahead < started < done


ODD = (5 << 20) // 16 + 3  # float64 elements: past the pending copy's size, in 1 MiB segments and a short one


def _by_name(comm):
    got = []
    for algorithm in ("ring", "tree"):
        for root in range(comm.size):
            for op in ("sum", "max"):
                x = (np.arange(ODD, dtype=np.float64) * (comm.rank + 1) + comm.rank) % 1001
                kept = x.copy()
                comm.reduce(x, root=root, op=op, algorithm=algorithm)
                got.append(x if comm.rank == root else bool((x == kept).all()))
    return got


def test_reduces_by_name_give_every_root_the_reduction_of_an_odd_count_as_its_pieces_fold_on_arrival():
    """The ring's and the tree's segments fold as they arrive (``engines/executor.py``); the root
    gets the reduction at every root, every other rank's ``x`` stays as it was."""
    results = run_world(_by_name, 3, "inproc", timeout=60)
    xs = [(np.arange(ODD, dtype=np.float64) * (r + 1) + r) % 1001 for r in range(3)]
    want = {"sum": xs[0] + xs[1] + xs[2], "max": np.maximum(np.maximum(xs[0], xs[1]), xs[2])}
    i = 0
    for _ in ("ring", "tree"):
        for root in range(3):
            for op in ("sum", "max"):
                for rank in range(3):
                    got = results[rank][i]
                    assert np.array_equal(got, want[op]) if rank == root else got is True
                i += 1


def _into_out(comm):
    """Reduces of an odd count into the root's ``out`` by reads (twice a shape: the second call
    takes the fast path); returns, per call, the root's ``out`` and whether its ``x`` stayed,
    and which ``out`` the reads folded into (True: the root's own, passed as it is)."""
    from collectives.engines import direct

    folded = []
    reduce_by_reads = direct.reduce_by_reads

    def spy(reads, x, kept, op, root, serial, out=None, native=None):
        if comm.rank == root:
            folded.append(out is not None)
        return reduce_by_reads(reads, x, kept, op, root, serial, out, native)

    direct.reduce_by_reads = spy
    got = []
    for root in range(comm.size):
        for op in ("sum", "avg"):
            for _ in range(2):
                x = np.arange(LARGE + 7, dtype=np.float64) * (comm.rank + 1) + comm.rank
                kept = x.copy()
                out = np.full_like(x, np.nan)
                result = comm.reduce(x, root=root, op=op, out=out)
                got.append((out if comm.rank == root and result is out else None, bool((x == kept).all())))
    return got, folded


@pytest.mark.parametrize("pure_python", [False, True], ids=["c", "python"])
def test_large_reduces_by_reads_fold_straight_into_the_roots_out_and_leave_its_x(reads_from_the_slots, pure_python,
                                                                                monkeypatch):
    """The root's ``out`` is passed to the reads as it is on the fast path (the first call of a
    shape fills it from ``x`` and reduces in place): no copy of ``x`` into ``out`` first."""
    if pure_python:
        monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    else:
        monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    results = run_world(_into_out, 3, "shm", timeout=60)
    parts = [np.arange(LARGE + 7, dtype=np.float64) * (r + 1) + r for r in range(3)]
    i = 0
    for root in range(3):
        for op in ("sum", "avg"):
            want = sum(parts) / (3 if op == "avg" else 1)
            for _ in range(2):
                for r in range(3):
                    out, x_kept = results[r][0][i]
                    assert x_kept, f"rank {r}'s x changed ({op} root {root})"
                    if r == root:
                        np.testing.assert_allclose(out, want, err_msg=f"{op} root {root}")
                i += 1
    for r in range(3):
        assert results[r][1] == [False, True] * 2, f"rank {r} folded into: {results[r][1]}"
