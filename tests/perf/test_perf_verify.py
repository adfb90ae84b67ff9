"""Generated inputs reduce to exactly the expected bits in any order; the check counts
every wrong element; every collective's expectation matches a simulated collective."""

from __future__ import annotations

import itertools
import queue
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from collectives.testing import reference as ref
from perf.colls import COLLECTIVES, DTYPE_NAMES, OP_NAMES, alltoallv_splits, have_dtype, hypercube, numpy_dtype
from perf.verify import Reduction, count_wrong, finalize_average, nil_data, prepare, tolerance

KERNELS = {"sum": np.add, "avg": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}
DTYPES = [d for d in DTYPE_NAMES if have_dtype(d)]


def _reduce(parts, op, order):
    acc = parts[order[0]].copy()
    with np.errstate(over="ignore"):
        for r in order[1:]:
            KERNELS[op](acc, parts[r], out=acc)
    if op == "avg":
        finalize_average(acc, len(parts))
    return acc


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("nranks", [2, 3, 8])
def test_any_order_gives_the_expected_bits(dtype_name, op, nranks):
    dtype = numpy_dtype(dtype_name)
    red = Reduction(op, dtype, nranks, seed=7)
    count = 4099
    parts = [red.input(r, 0, count) for r in range(nranks)]
    expected = red.expected(0, count)
    assert expected.dtype == dtype
    if dtype.kind == "f" or dtype_name == "bfloat16":
        assert np.all(np.isfinite(expected.astype(np.float64)))
    # the data is not degenerate: ranks differ, results vary
    assert not np.array_equal(parts[0], parts[1])
    assert len(np.unique(expected.view(np.uint8).reshape(count, -1), axis=0)) > 20
    rng = np.random.default_rng(nranks)
    orders = [list(range(nranks)), list(reversed(range(nranks)))] + [list(rng.permutation(nranks)) for _ in range(3)]
    for order in orders:
        got = _reduce(parts, op, order)
        assert count_wrong(got, expected, tolerance=0) == 0, (dtype_name, op, order)
    # a sub-range is generated independently of the rest (reduce_scatter needs that)
    assert count_wrong(red.expected(1000, 50), expected[1000:1050]) == 0
    assert count_wrong(red.input(1, 1000, 50), parts[1][1000:1050]) == 0


def test_pairwise_partial_sums_are_exact():
    """Tree-shaped sums (pairs of partial sums) give the same bits as a chain."""
    red = Reduction("sum", np.dtype(np.float16), 8, seed=3)
    parts = [red.input(r, 0, 1000) for r in range(8)]
    pairs = [parts[i] + parts[i + 1] for i in range(0, 8, 2)]
    tree = (pairs[0] + pairs[1]) + (pairs[2] + pairs[3])
    assert count_wrong(tree, red.expected(0, 1000)) == 0


@pytest.mark.parametrize("dtype_name", ["float", "int32", "half", "uint8", "double"])
def test_count_wrong_sees_each_flipped_element(dtype_name):
    dtype = numpy_dtype(dtype_name)
    good = nil_data(5, 0, 100, dtype)
    bad = good.copy()
    raw = bad.view(np.uint8).reshape(100, -1)
    raw[3, 0] ^= 1
    raw[50, -1] ^= 0x80
    assert count_wrong(good, good) == 0
    assert count_wrong(bad, good) == 2


def test_avg_tolerance_is_two_units_for_floats_only():
    assert tolerance(np.dtype(np.float32), "avg") == 2
    assert tolerance(np.dtype(np.float32), "sum") == 0
    assert tolerance(np.dtype(np.int32), "avg") == 0
    a = np.array([1.0, 1.0], dtype=np.float32)
    b = a.copy()
    b.view(np.uint32)[0] += 2
    b.view(np.uint32)[1] += 3
    assert count_wrong(b, a, tolerance=2) == 1


def test_integer_average_truncates_toward_zero():
    total = np.array([-7, 7, -6, 127], dtype=np.int8)
    finalize_average(total, 2)
    assert total.tolist() == [-3, 3, -3, 63]


# -- every collective's expectation, against a simulation of the collective ----------------


def _simulate(name, sends, recvs, op, root, n):
    """What each rank's recv must hold, computed from all ranks' send buffers."""
    if name in ("all_reduce", "reduce"):
        total = _reduce(sends, op, list(range(n)))
        for r in range(n):
            if name == "all_reduce" or r == root:
                recvs[r][...] = total
    elif name == "reduce_scatter":
        total = _reduce(sends, op, list(range(n)))
        k = recvs[0].size
        for r in range(n):
            recvs[r][...] = total[r * k:(r + 1) * k]
    elif name == "broadcast":
        for r in range(n):
            recvs[r][...] = sends[root]
    elif name == "all_gather":
        for r in range(n):
            recvs[r][...] = np.concatenate(sends)
    elif name == "alltoall":
        k = sends[0].size // n
        for r in range(n):
            recvs[r][...] = np.concatenate([sends[j][r * k:(r + 1) * k] for j in range(n)])
    elif name == "alltoallv":
        splits = [alltoallv_splits(sends[i].size, n, i) for i in range(n)]
        for r, want in enumerate(ref.all_to_all_v(sends, splits)):
            recvs[r][...] = want
    elif name == "sendrecv":
        for r in range(n):
            recvs[r][...] = sends[(r - 1) % n]
    elif name == "gather":  # only the root's buffer changes
        recvs[root][...] = np.concatenate(sends)
    elif name == "scatter":
        k = recvs[0].size
        for r in range(n):
            recvs[r][...] = sends[root][r * k:(r + 1) * k]
    elif name == "hypercube":
        for r in range(n):
            recvs[r][...] = np.concatenate(sends)


@pytest.mark.parametrize("name", ["all_reduce", "reduce_scatter", "broadcast", "reduce", "all_gather", "alltoall",
                                  "alltoallv", "sendrecv", "gather", "scatter", "hypercube"])
@pytest.mark.parametrize("in_place", [False, True])
def test_prepare_matches_a_simulated_collective(name, in_place):
    coll = COLLECTIVES[name]
    n, root, dtype, op = (4 if name == "hypercube" else 3), 1, np.dtype(np.float32), "sum"
    count = coll.counts(3000, dtype.itemsize, n)[0]
    bufs = [coll.buffers(r, n, count, dtype, in_place) for r in range(n)]
    expected = [prepare(coll, dtype, op, n, r, root, count, 11, *bufs[r]) for r in range(n)]
    sends = [b[0].copy() for b in bufs]
    _simulate(name, sends, [b[1] for b in bufs], op, root, n)
    for r in range(n):
        assert count_wrong(bufs[r][1], expected[r]) == 0, (name, in_place, r)
    # and a wrong result is noticed
    bufs[2][1].view(np.uint8)[0] ^= 1
    assert count_wrong(bufs[2][1], expected[2]) == 1


def test_gather_and_scatter_data_are_one_sequence():
    """nccl-tests' GatherInitData/ScatterInitData: rank r's block is slice r of one
    sequence; a gather's non-root expects its receive buffer as it was (its own slice in place)."""
    dtype, n, k = np.dtype(np.int32), 3, 8
    whole = nil_data(5, 0, n * k, dtype)
    gather, scatter = COLLECTIVES["gather"], COLLECTIVES["scatter"]
    for r in range(n):
        send, recv = gather.buffers(r, n, k, dtype, True)
        expected = prepare(gather, dtype, "sum", n, r, 0, k, 5, send, recv)
        assert np.array_equal(send, whole[r * k:(r + 1) * k])
        if r == 0:
            assert np.array_equal(expected, whole)
        else:
            assert np.array_equal(expected[r * k:(r + 1) * k], send) and np.count_nonzero(expected) == np.count_nonzero(send)
        send, recv = scatter.buffers(r, n, k, dtype, False)
        expected = prepare(scatter, dtype, "sum", n, r, 2, k, 5, send, recv)
        assert np.array_equal(expected, whole[r * k:(r + 1) * k])
        assert np.array_equal(send, whole) == (r == 2)


class _Pairs:
    """Ranks as threads whose ``exchange`` swaps copies through one queue per direction."""

    def __init__(self, n: int) -> None:
        self.size = n
        self.boxes = {(a, b): queue.Queue() for a in range(n) for b in range(n)}
        self.rounds: list[tuple[int, int, int]] = []

    def rank_view(self, rank: int) -> SimpleNamespace:
        def exchange(send, recv, peer):
            assert not np.shares_memory(send, recv) and send.size == recv.size
            self.rounds.append((rank, peer, send.size))
            self.boxes[(rank, peer)].put(send.copy())
            recv[...] = self.boxes[(peer, rank)].get(timeout=10)

        return SimpleNamespace(rank=rank, size=self.size, exchange=exchange)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
@pytest.mark.parametrize("in_place", [False, True])
def test_hypercube_gathers_every_block_in_lg_n_rounds(n, in_place):
    coll, dtype, k = COLLECTIVES["hypercube"], np.dtype(np.float32), 4
    world = _Pairs(n)
    bufs = [coll.buffers(r, n, k, dtype, in_place) for r in range(n)]
    expected = [prepare(coll, dtype, "sum", n, r, -1, k, 3, *bufs[r]) for r in range(n)]
    threads = [threading.Thread(target=hypercube, args=(world.rank_view(r), *bufs[r])) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for r in range(n):
        assert count_wrong(bufs[r][1], expected[r]) == 0, (n, in_place, r)
    rounds = n.bit_length() - 1  # lg n exchanges per rank, with rank ^ 1, ^ 2, ^ 4, each twice the last
    assert sorted(world.rounds) == sorted((r, r ^ (1 << i), k << i) for r in range(n) for i in range(rounds))


def test_in_place_layouts():
    ag = COLLECTIVES["all_gather"].buffers(2, 4, 8, np.dtype(np.int32), True)
    assert np.shares_memory(*ag) and ag[1].size == 32 and ag[0].size == 8
    assert ag[0].__array_interface__["data"][0] - ag[1].__array_interface__["data"][0] == 2 * 8 * 4
    rs = COLLECTIVES["reduce_scatter"].buffers(3, 4, 8, np.dtype(np.int32), True)
    assert rs[1].__array_interface__["data"][0] - rs[0].__array_interface__["data"][0] == 3 * 8 * 4
    ar = COLLECTIVES["all_reduce"].buffers(0, 4, 8, np.dtype(np.int32), True, unalign=3)
    assert ar[0] is ar[1] and ar[0].size == 8
    oop = COLLECTIVES["all_reduce"].buffers(0, 4, 8, np.dtype(np.int32), False, unalign=1)
    assert not np.shares_memory(*oop) and oop[0].__array_interface__["data"][0] % 8 == 4


def test_seeds_differ():
    dtype = np.dtype(np.float32)
    assert not np.array_equal(nil_data(1, 0, 64, dtype), nil_data(2, 0, 64, dtype))
    for a, b in itertools.combinations(range(3), 2):
        assert not np.array_equal(Reduction("sum", dtype, 3, 1).input(a, 0, 64), Reduction("sum", dtype, 3, 1).input(b, 0, 64))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_alltoallv_splits_are_uneven_and_agree_between_sender_and_receiver(n):
    total = 16 * n
    sends = [alltoallv_splits(total, n, r) for r in range(n)]
    recvs = [alltoallv_splits(total, n, r, receive=True) for r in range(n)]
    for r in range(n):
        assert sum(sends[r]) == sum(recvs[r]) == total
        assert min(sends[r]) >= 0
        assert recvs[r] == [sends[i][r] for i in range(n)], "rank r's receive counts are the senders' counts to r"
    if n > 2:
        assert len(set(sends[0])) > 1, "the blocks must be uneven"
