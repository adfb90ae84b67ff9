"""Every schedule, at every world size 1..17 and awkward counts, run by the simulator
(no transport) and checked element by element against numpy.

Inputs are built from rank and index (x[r][i] = 1000·r + i + 1), so a misplaced or
missing block shows up as a wrong value, not as a coincidentally right one.
"""

from __future__ import annotations

import numpy as np
import pytest

from collectives.algorithms import barrier, pairwise
from collectives.algorithms.registry import SCHEDULES
from collectives.algorithms.schedule import partition
from collectives.algorithms.simulate import ScheduleError, simulate
from collectives.ops import ReduceOp
from collectives.testing import reference

SIZES = list(range(1, 18))
ALGORITHMS = ["ring", "tree", "recursive"]


def counts_for(size: int) -> list[int]:
    return sorted({0, 1, size - 1, size, size + 1, 2 * size + 3, 37})


def inputs(size: int, count: int) -> list[np.ndarray]:
    return [np.arange(count, dtype=np.int64) + 1000 * r + 1 for r in range(size)]


def run(collective, algo, size, buffers, *args, op=ReduceOp.SUM, segment=3):
    factory = SCHEDULES[collective][algo]
    schedules = [factory(r, size, *args, segment) for r in range(size)]
    return simulate(schedules, buffers, op)


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("size", SIZES)
def test_all_reduce(algo, size):
    for count in counts_for(size):
        xs = inputs(size, count)
        expected = sum(xs)
        work = [[x.copy()] for x in xs]
        schedules = [SCHEDULES["all_reduce"][algo](r, size, count, 3) for r in range(size)]
        simulate(schedules, work, ReduceOp.SUM)
        for r in range(size):
            np.testing.assert_array_equal(work[r][0], expected, err_msg=f"rank {r} count {count}")


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("size", SIZES)
def test_reduce_scatter(algo, size):
    for count in counts_for(size):
        xs = inputs(size, count)
        blocks = partition(count, size)
        expected = sum(xs)
        work = [[x.copy()] for x in xs]
        schedules = [SCHEDULES["reduce_scatter"][algo](r, size, blocks, 2) for r in range(size)]
        simulate(schedules, work, ReduceOp.SUM)
        for r, (offset, length) in enumerate(blocks):
            np.testing.assert_array_equal(
                work[r][0][offset : offset + length], expected[offset : offset + length], err_msg=f"rank {r}"
            )


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("size", SIZES)
def test_all_gather(algo, size):
    for count in counts_for(size):
        blocks = partition(count, size)
        expected = np.arange(count, dtype=np.int64) * 7 + 5
        work = []
        for r, (offset, length) in enumerate(blocks):
            w = np.full(count, -1, dtype=np.int64)
            w[offset : offset + length] = expected[offset : offset + length]
            work.append([w])
        schedules = [SCHEDULES["all_gather"][algo](r, size, blocks, 2) for r in range(size)]
        simulate(schedules, work)
        for r in range(size):
            np.testing.assert_array_equal(work[r][0], expected, err_msg=f"rank {r} count {count}")


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("size", SIZES)
def test_broadcast(algo, size):
    for count in counts_for(size):
        for root in {0, size // 2, size - 1}:
            expected = np.arange(count, dtype=np.int64) * 3 + 11
            work = [[expected.copy() if r == root else np.full(count, -1, dtype=np.int64)] for r in range(size)]
            schedules = [SCHEDULES["broadcast"][algo](r, size, root, count, 2) for r in range(size)]
            simulate(schedules, work)
            for r in range(size):
                np.testing.assert_array_equal(work[r][0], expected, err_msg=f"rank {r} root {root}")


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("size", SIZES)
def test_reduce(algo, size):
    for count in counts_for(size):
        for root in {0, size // 2, size - 1}:
            xs = inputs(size, count)
            work = [[x.copy()] for x in xs]
            schedules = [SCHEDULES["reduce"][algo](r, size, root, count, 2) for r in range(size)]
            simulate(schedules, work, ReduceOp.SUM)
            np.testing.assert_array_equal(work[root][0], sum(xs), err_msg=f"root {root} count {count}")


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("size", SIZES)
def test_gather(algo, size):
    for k in (0, 1, 3):
        count = k * size
        blocks = partition(count, size)
        expected = np.arange(count, dtype=np.int64) + 1
        for root in {0, size // 2, size - 1}:
            work = []
            for r, (offset, length) in enumerate(blocks):
                w = np.full(count, -1, dtype=np.int64)
                w[offset : offset + length] = expected[offset : offset + length]
                work.append([w])
            schedules = [SCHEDULES["gather"][algo](r, size, root, blocks, 2) for r in range(size)]
            simulate(schedules, work)
            np.testing.assert_array_equal(work[root][0], expected, err_msg=f"root {root} k {k}")


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("size", SIZES)
def test_scatter(algo, size):
    for k in (0, 1, 3):
        count = k * size
        blocks = partition(count, size)
        source = np.arange(count, dtype=np.int64) + 1
        for root in {0, size // 2, size - 1}:
            work = []
            for r in range(size):
                w = np.full(count, -1, dtype=np.int64)
                work.append([w, source if r == root else w])
            schedules = [SCHEDULES["scatter"][algo](r, size, root, blocks, 2) for r in range(size)]
            simulate(schedules, work)
            for r, (offset, length) in enumerate(blocks):
                if r == root:
                    continue
                np.testing.assert_array_equal(
                    work[r][0][offset : offset + length], source[offset : offset + length], err_msg=f"rank {r}"
                )


@pytest.mark.parametrize("size", SIZES)
def test_all_to_all(size):
    k = 2
    blocks = partition(k * size, size)
    xs = [np.arange(k * size, dtype=np.int64) + 1000 * r for r in range(size)]
    work = []
    for r in range(size):
        out = np.full(k * size, -1, dtype=np.int64)
        offset, length = blocks[r]
        out[offset : offset + length] = xs[r][offset : offset + length]
        work.append([out, xs[r]])
    simulate([pairwise.all_to_all(r, size, blocks, 1) for r in range(size)], work)
    for r in range(size):
        for j, (offset, length) in enumerate(blocks):
            mine = blocks[r]
            np.testing.assert_array_equal(work[r][0][offset : offset + length], xs[j][mine[0] : mine[0] + mine[1]])


@pytest.mark.parametrize("size", SIZES)
def test_dissemination_barrier_takes_ceil_log2_rounds(size):
    stats = simulate([barrier.barrier(r, size) for r in range(size)], [[np.empty(0)] for _ in range(size)])
    rounds = (size - 1).bit_length()
    assert all(s.steps == rounds for s in stats)


@pytest.mark.parametrize("size", SIZES)
def test_barrier_schedule_makes_every_rank_hear_from_every_other(size):
    """Follow our barrier schedule's receives: after its last step each rank must have
    heard, directly or through others, from every rank (else it could leave early)."""
    from collectives.algorithms.schedule import Recv

    heard = [{r} for r in range(size)]
    steps = [list(barrier.barrier(r, size)) for r in range(size)]
    for k in range(max((len(s) for s in steps), default=0)):
        before = [set(h) for h in heard]
        for r in range(size):
            if k < len(steps[r]):
                for o in steps[r][k]:
                    if isinstance(o, Recv):
                        heard[r] |= before[o.peer]
    assert all(h == set(range(size)) for h in heard)


@pytest.mark.parametrize("size", [2, 3, 5, 8])
def test_ring_all_reduce_moves_the_bandwidth_optimal_volume(size):
    count = 1000 * size
    stats = run("all_reduce", "ring", size, [[np.zeros(count, np.int64)] for _ in range(size)], count, segment=count)
    for s in stats:
        assert s.elements == 2 * (size - 1) * count // size


@pytest.mark.parametrize("size", [2, 4, 8, 16])
def test_recursive_all_reduce_takes_2_lg_p_steps(size):
    count = 64 * size
    stats = run("all_reduce", "recursive", size, [[np.zeros(count, np.int64)] for _ in range(size)], count, segment=count)
    assert all(s.steps == 2 * (size.bit_length() - 1) for s in stats)


@pytest.mark.parametrize("size", SIZES)
def test_short_all_reduce_doubles_the_whole_vector(size):
    """``recursive.all_reduce_short``: every rank gets the sum, in lg p' exchanges of the
    whole vector (two more on the ranks folded in and out where p is not a power of two)."""
    from collectives.algorithms import recursive
    from collectives.algorithms.schedule import floor_pow2

    for count in counts_for(size):
        xs = inputs(size, count)
        work = [[x.copy()] for x in xs]
        stats = simulate([recursive.all_reduce_short(r, size, count, max(count, 1)) for r in range(size)], work, ReduceOp.SUM)
        for r in range(size):
            np.testing.assert_array_equal(work[r][0], sum(xs), err_msg=f"rank {r} count {count}")
        if count:
            p2 = floor_pow2(size)
            folded = 2 * (size - p2)
            for r, st in enumerate(stats):
                lg = p2.bit_length() - 1
                want = 2 if r < folded and r % 2 == 0 else lg + (2 if r < folded else 0)
                assert st.steps == want, f"rank {r} of {size}: {st.steps} steps"


@pytest.mark.parametrize("size", [2, 3, 4, 5, 8])
def test_short_all_reduce_gives_every_rank_the_same_bits(size):
    """Partners combine the same two operands in the same order: max over -0.0 and 0.0
    (which numpy's maximum does not treat symmetrically) and float sums whose rounding
    depends on the order come out bit for bit the same on every rank."""
    from collectives.algorithms import recursive

    rng = np.random.default_rng(size)
    signed_zeros = [np.where((np.arange(8) + r) % 2 == 1, -0.0, 0.0).astype(np.float32) for r in range(size)]
    rounding = [rng.standard_normal(64).astype(np.float32) * 10.0 ** rng.integers(-6, 6, 64) for _ in range(size)]
    for op, xs in ((ReduceOp.MAX, signed_zeros), (ReduceOp.SUM, rounding)):
        work = [[x.copy()] for x in xs]
        simulate([recursive.all_reduce_short(r, size, xs[0].size, 1 << 20) for r in range(size)], work, op)
        first = work[0][0].tobytes()
        assert all(w[0].tobytes() == first for w in work), f"{op.name}: ranks differ in their bits"


def test_recursive_all_reduce_is_short_up_to_its_limit():
    from collectives.algorithms import recursive
    from collectives.algorithms.registry import SHORT_ALL_REDUCE_BYTES, schedule_for

    assert schedule_for("all_reduce", "recursive", 8) is recursive.all_reduce_short
    assert schedule_for("all_reduce", "recursive", SHORT_ALL_REDUCE_BYTES) is recursive.all_reduce_short
    assert schedule_for("all_reduce", "recursive", SHORT_ALL_REDUCE_BYTES + 1) is recursive.all_reduce
    assert schedule_for("all_reduce", "ring", 8) is SCHEDULES["all_reduce"]["ring"]


def test_simulator_reports_a_deadlock():
    from collectives.algorithms.schedule import Recv

    def waits_forever(r):
        yield (Recv(1 - r, 0, 1),)

    with pytest.raises(ScheduleError, match="deadlock"):
        simulate([waits_forever(0), waits_forever(1)], [[np.zeros(1)], [np.zeros(1)]])


def _uneven_splits(size: int) -> list[list[int]]:
    """splits[i][j]: elements rank i sends rank j; zeros included, no two rows alike."""
    return [[(3 * i + 2 * j) % 4 for j in range(size)] for i in range(size)]


@pytest.mark.parametrize("size", SIZES)
def test_all_to_all_v(size):
    splits = _uneven_splits(size)
    xs = [np.arange(sum(splits[r]), dtype=np.int64) + 1000 * r for r in range(size)]
    want = reference.all_to_all_v(xs, splits)
    work = []
    for r in range(size):
        recvs = [splits[j][r] for j in range(size)]
        out = np.full(sum(recvs), -1, dtype=np.int64)
        (a, n), (b, _) = pairwise.split_blocks(splits[r])[r], pairwise.split_blocks(recvs)[r]
        out[b : b + n] = xs[r][a : a + n]  # the rank's own block, copied by the caller
        work.append([out, xs[r]])
    schedules = [
        pairwise.all_to_all_v(
            r, size, pairwise.split_blocks(splits[r]), pairwise.split_blocks([splits[j][r] for j in range(size)])
        )
        for r in range(size)
    ]
    stats = simulate(schedules, work)
    for r in range(size):
        np.testing.assert_array_equal(work[r][0], want[r], err_msg=f"rank {r}")
        assert stats[r].messages == size - 1, "one message per pair, empty ones included"


def test_all_to_all_v_mismatch_is_reported_not_truncated():
    """Rank 1 expects 2 elements from rank 0, which sends 3: the simulator (as the
    transports do) refuses the message rather than cutting it."""
    sends = [[0, 3], [1, 0]]
    recvs = [[0, 1], [2, 0]]
    schedules = [
        pairwise.all_to_all_v(r, 2, pairwise.split_blocks(sends[r]), pairwise.split_blocks(recvs[r])) for r in range(2)
    ]
    buffers = [[np.zeros(sum(recvs[r]), np.int64), np.arange(sum(sends[r]), dtype=np.int64)] for r in range(2)]
    with pytest.raises(ScheduleError, match="expects 2 elements from 0, which sent 3"):
        simulate(schedules, buffers)
