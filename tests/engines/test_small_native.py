"""The small-window collectives in C (engines/_small_c.c) and in Python (engines/small.py)
give the same results, the same bits and the same errors: every test here runs on both
(``COLLECTIVES_PURE_PYTHON=1`` turns the C plans off; the forked ranks inherit it)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import collectives
from collectives import ReduceOp
from collectives.algorithms import direct_routes
from collectives.engines import small, small_native
from collectives.errors import MessageMismatchError
from collectives.plans import windowed
from collectives.ops import kernel_of
from collectives.store import PrefixStore
from collectives.testing import run_world
from collectives.testing.reference import rank_input
from collectives.transports import shm_window

pytestmark = pytest.mark.multiprocess

CASES = [  # (dtype, operators): every C fold, and the dtypes and operators numpy folds
    (np.float32, [ReduceOp.SUM, ReduceOp.PROD, ReduceOp.MIN, ReduceOp.MAX, ReduceOp.AVG]),
    (np.float64, [ReduceOp.SUM, ReduceOp.PROD, ReduceOp.MAX]),
    (np.int8, [ReduceOp.SUM, ReduceOp.PROD, ReduceOp.MIN, ReduceOp.BXOR]),
    (np.int32, [ReduceOp.SUM, ReduceOp.MAX, ReduceOp.BAND, ReduceOp.BOR]),
    (np.int64, [ReduceOp.SUM, ReduceOp.PROD, ReduceOp.MIN, ReduceOp.AVG]),
    (np.uint16, [ReduceOp.SUM, ReduceOp.MAX, ReduceOp.BXOR]),
    (np.uint64, [ReduceOp.SUM, ReduceOp.MIN, ReduceOp.BOR]),
    (np.float16, [ReduceOp.SUM, ReduceOp.MAX]),
    (np.complex64, [ReduceOp.SUM]),
]
COUNTS = [1, 7, 3001]


@pytest.fixture(params=["c", "python"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    else:
        monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    return str(request.param)


@pytest.fixture(params=[True, False], ids=["ranks outnumber cores", "a core each"])
def crowded(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The C plans, on a host whose ranks outnumber its cores or not (the forked ranks inherit both)."""
    monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: request.param)
    return bool(request.param)


def _native_plans(comm: collectives.Communicator) -> int:
    """How many of the communicator's kept plans run in C."""
    kernels = [getattr(p, "kernel", None) or getattr(p, "route", None) for p in comm._plans.values()]
    return sum(getattr(k, "native", None) is not None for k in kernels)


def _folded(inputs: list[np.ndarray], op: ReduceOp, size: int) -> np.ndarray:
    """``inputs[0] op inputs[1] op ...`` in rank order with numpy's own kernel: the bits
    both implementations must give (AVG: the sum, divided as the library divides)."""
    out = inputs[0].copy()
    for x in inputs[1:]:
        kernel_of(op)(out, x, out=out)
    if op is ReduceOp.AVG:
        collectives.ops.finalize(op, out, size)
    return out


def _outcome(world: collectives.Communicator, comm: collectives.Communicator, call: Callable[[], Any]) -> str:
    """Run ``call`` and say whether it returned or raised MessageMismatchError; the ranks then
    leave together (a writer only once the reader has looked) and ``comm`` is aborted."""
    try:
        call()
        return "returned"
    except MessageMismatchError:
        return "MessageMismatchError"
    finally:
        world.barrier()
        comm.abort()


def test_the_c_extension_is_built() -> None:
    """``pip install`` builds it where a compiler is present, as on CI: else the "c" half of
    these tests would run in Python and prove nothing."""
    assert small_native.built(), "collectives.engines._small_c did not build (pip install -e . with a C compiler)"


def test_both_c_window_plans_refuse_a_null_or_missing_address_alike() -> None:
    """The small and the reads plan read their addresses with one reader (``_sequences.h``): a null
    address, or fewer sleepers than doorbells, is a ValueError naming the argument, in the same
    words from either constructor; numbers that are not addresses are counted as items."""
    from collectives.engines import _reads_c, _small_c  # type: ignore[attr-defined]  # not built: this fails

    def small(flags: list[int], bells: list[int], sleepers: list[int]) -> None:  # a barrier, no op
        _small_c.SmallPlan(2, 0, flags, [], bells, sleepers, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0, None)

    def reads(flags: list[int], bells: list[int], sleepers: list[int], pids: list[int]) -> None:  # an all-to-all
        _reads_c.ReadsPlan(0, 0, 0, flags, bells, sleepers, pids, [1], [0] * 6, 8, 8, 0, 0, 0, 0, -1, False, False, 0,
                           None)

    with pytest.raises(ValueError, match="^flags: a null address$"):
        small([0], [], [])
    with pytest.raises(ValueError, match="^flags: a null address$"):
        reads([0, 0], [], [], [1, 2])
    with pytest.raises(ValueError, match="^sleepers: 0 addresses, expected 1$"):
        small([1], [1], [])
    with pytest.raises(ValueError, match="^sleepers: 0 addresses, expected 1$"):
        reads([1, 1], [1], [], [1, 2])
    with pytest.raises(ValueError, match="^pids: 1 items, expected 2$"):
        reads([1, 1], [], [], [1])


def test_the_fold_plan_takes_its_flag_set_as_the_reads_plan_does() -> None:
    """The reads plan and the fold plan take their flags, doorbells and sleepers with one helper
    (``take_flag_set`` in ``_reads_c.c``): the same refusals, in the same words."""
    from collectives.engines import _reads_c  # type: ignore[attr-defined]  # not built: this fails

    def fold(flags: list[int], bells: list[int], sleepers: list[int], pids: list[int]) -> None:  # a float32 sum
        _reads_c.FoldPlan(0, 0, flags, bells, sleepers, pids, [0] * 6, 4, 4, 0, 0, 1, 4, 0, 0, -1, None)

    with pytest.raises(ValueError, match="^flags: a null address$"):
        fold([0, 0], [], [], [1, 2])
    with pytest.raises(ValueError, match="^sleepers: 0 addresses, expected 1$"):
        fold([1, 1], [1], [], [1, 2])
    with pytest.raises(ValueError, match="^pids: 1 items, expected 2$"):
        fold([1, 1], [], [], [1])


def test_c_folds_every_integer_operator_and_only_sum_and_product_of_floats() -> None:
    """What a C plan is let fold is what its fold loop folds (``folds`` asks the loop): every
    operator of every integer dtype, SUM and PROD (AVG's sum) of floats, no code beyond them."""
    from collectives.engines import _small_c  # type: ignore[attr-defined]  # not built: this fails, as it should

    for dtype in small_native._DTYPES:
        floats = dtype.kind == "f"
        for op in small_native._OPS:
            folds = small_native.fold_code(dtype, op) != small_native.NO_FOLD
            assert folds == (not floats or op in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PROD)), (dtype, op)
    codes = set(small_native._DTYPES.values())
    assert not any(_small_c.folds(d, o) for d in (-1, *codes, max(codes) + 1) for o in (-1, 7)), "codes beyond the ops"
    assert not any(_small_c.folds(max(codes) + 1, o) for o in range(7)), "a code beyond the dtypes"


@pytest.mark.parametrize("size", [2, 3])
def test_every_small_collective_gives_numpys_bits_in_rank_order(size: int, implementation: str) -> None:
    def fn(comm: collectives.Communicator) -> tuple[int, list[tuple[str, bool]]]:
        checks = []
        for dtype, ops in CASES:
            for op in ops:
                for k in COUNTS:
                    inputs = [rank_input(r, k, dtype, op, seed=k, exact=False) for r in range(comm.size)]
                    expected = _folded(inputs, op, comm.size)
                    for round_ in range(3):  # the first call builds the plan, the later ones keep it
                        x = inputs[comm.rank].copy()
                        if round_ == 1:
                            out = np.empty_like(x)
                            comm.all_reduce(x, op=op, out=out)
                            got = out
                        else:
                            comm.all_reduce(x, op=op)
                            got = x
                        checks.append((f"all_reduce {np.dtype(dtype)} {op} {k}", got.tobytes() == expected.tobytes()))
                    for root in range(comm.size):  # the pipelined reduce: the root folds every rank's slot
                        for _ in range(2):
                            x = inputs[comm.rank].copy()
                            comm.reduce(x, root, op=op)
                            want = expected if comm.rank == root else inputs[comm.rank]
                            checks.append((f"reduce {np.dtype(dtype)} {op} {k} to {root}", x.tobytes() == want.tobytes()))
                    whole = np.concatenate([rank_input(r, k * comm.size, dtype, op, seed=k + 1, exact=False)[None]
                                            for r in range(comm.size)])
                    mine = _folded(list(whole), op, comm.size)[comm.rank * k:(comm.rank + 1) * k]
                    block = np.empty(k, dtype)
                    for _ in range(2):
                        comm.reduce_scatter(whole[comm.rank].copy(), block, op=op)
                        checks.append((f"reduce_scatter {np.dtype(dtype)} {op} {k}", block.tobytes() == mine.tobytes()))
            for k in COUNTS:
                x = rank_input(comm.rank, k, dtype, seed=k)
                gathered = np.empty(k * comm.size, dtype)
                for _ in range(2):
                    comm.all_gather(x, gathered)
                    want = np.concatenate([rank_input(r, k, dtype, seed=k) for r in range(comm.size)])
                    checks.append((f"all_gather {np.dtype(dtype)} {k}", gathered.tobytes() == want.tobytes()))
                in_place = np.zeros(k * comm.size, dtype)
                in_place[comm.rank * k:(comm.rank + 1) * k] = x
                comm.all_gather(in_place[comm.rank * k:(comm.rank + 1) * k], in_place)
                checks.append((f"all_gather in place {np.dtype(dtype)} {k}", in_place.tobytes() == want.tobytes()))
                sent = rank_input(comm.rank, k * comm.size, dtype, seed=k + 2)
                want = np.concatenate([rank_input(r, k * comm.size, dtype, seed=k + 2)[comm.rank * k:(comm.rank + 1) * k]
                                       for r in range(comm.size)])
                for in_place in (False, True, True):  # in place, the second call takes its kept plan
                    y = sent.copy()
                    got = comm.all_to_all(y, y if in_place else np.empty_like(y))
                    checks.append((f"all_to_all {np.dtype(dtype)} {k} in place {in_place}", got.tobytes() == want.tobytes()))
                for root in range(comm.size):
                    y = rank_input(root, k, dtype, seed=root) if comm.rank == root else np.zeros(k, dtype)
                    comm.broadcast(y, root)
                    checks.append((f"broadcast {np.dtype(dtype)} {k} from {root}",
                                   y.tobytes() == rank_input(root, k, dtype, seed=root).tobytes()))
            comm.barrier()
        return _native_plans(comm), [c for c in checks if not c[1]]

    for native, failed in run_world(fn, size, "shm", timeout=240):
        assert failed == []
        assert (native > 0) == (implementation == "c")


def test_calls_at_uneven_speeds_never_mix_and_late_peers_are_waited_for(implementation: str) -> None:
    """Ranks falling behind now and then: the C call gives up spinning on a late peer and the
    Python plan finishes it (or starts it, where a peer had not begun the call before)."""
    def fn(comm: collectives.Communicator) -> int:
        rng = np.random.default_rng(comm.rank)
        bad = 0
        gathered = np.empty(3 * comm.size, np.int64)
        for i in range(400):
            if rng.random() < 0.1:
                time.sleep(rng.random() * 2e-3)
            x = np.full(3, comm.rank * 1000 + i, dtype=np.int64)
            kind = i % 8
            if kind == 0:
                comm.all_reduce(x)
                bad += int(np.count_nonzero(x != sum(r * 1000 + i for r in range(comm.size))))
            elif kind == 1:
                comm.all_gather(x, gathered)
                bad += int(np.count_nonzero(gathered != np.repeat([r * 1000 + i for r in range(comm.size)], 3)))
            elif kind == 2:
                root = i % comm.size
                y = x if comm.rank == root else np.zeros(3, np.int64)
                comm.broadcast(y, root)
                bad += int(np.count_nonzero(y != root * 1000 + i))
            elif kind == 3:  # one-way: the others run ahead of the root through the broadcasts' slots
                root = (i // 8) % comm.size
                comm.reduce(x, root)
                want = sum(r * 1000 + i for r in range(comm.size)) if comm.rank == root else comm.rank * 1000 + i
                bad += int(np.count_nonzero(x != want))
            elif kind == 4:  # one-way too: the others write, the root reads
                root = (i // 8) % comm.size
                got = comm.gather(x, gathered if comm.rank == root else None, root)
                if comm.rank == root:
                    bad += int(np.count_nonzero(got != np.repeat([r * 1000 + i for r in range(comm.size)], 3)))
            elif kind == 6:  # through the halves, every rank waiting for every other
                sent = np.arange(3 * comm.size, dtype=np.int64) + 100 * comm.rank + i
                got = comm.all_to_all(sent, np.empty_like(sent))
                want = np.concatenate([np.arange(3 * comm.rank, 3 * comm.rank + 3) + 100 * r + i for r in range(comm.size)])
                bad += int(np.count_nonzero(got != want))
            elif kind == 5:  # one-way: the root writes, the others read
                root = (i // 8) % comm.size
                piece = np.zeros(3, np.int64)
                comm.scatter(np.arange(3 * comm.size, dtype=np.int64) + i if comm.rank == root else None, piece, root)
                bad += int(np.count_nonzero(piece != np.arange(3) + 3 * comm.rank + i))
            else:
                comm.barrier()
        return bad

    assert run_world(fn, 3, "shm", timeout=120) == [0, 0, 0]


@pytest.mark.parametrize("call", ["all_reduce", "all_gather", "barrier against all_reduce"])
def test_ranks_that_pass_different_counts_raise_on_every_rank(call: str, implementation: str) -> None:
    def fn(world: collectives.Communicator) -> str:
        comm = collectives.init(world.rank, world.size, PrefixStore("short", world.store), transport="shm", timeout=5)
        comm.all_reduce(np.ones(4))  # the window is open, and the plan of 4 kept
        n = 4 + comm.rank
        try:
            if call == "all_reduce":
                comm.all_reduce(np.ones(n))
            elif call == "all_gather":
                comm.all_gather(np.ones(n), np.empty(n * comm.size))
            elif comm.rank == 0:
                comm.barrier()
            else:
                comm.all_reduce(np.ones(4))
        except MessageMismatchError as exc:
            return type(exc).__name__
        finally:
            comm.abort()
        return "no error"

    assert run_world(fn, 2, "shm", timeout=60) == ["MessageMismatchError"] * 2


@pytest.mark.parametrize("call", ["gather", "scatter"])
def test_a_gather_root_or_scatter_receiver_given_another_count_raises(call: str, implementation: str) -> None:
    """The writers post and return; the reader that finds another byte count raises rather than
    copy a short or long slot, and its buffer stays as it was."""
    def fn(world: collectives.Communicator) -> str:
        comm = collectives.init(world.rank, world.size, PrefixStore(call, world.store), transport="shm", timeout=5)
        n = 4 + comm.rank
        out = np.full(n * comm.size if call == "gather" else n, 7.0)
        if call == "gather":
            comm.gather(np.ones(4), np.empty(4 * comm.size) if comm.rank == 0 else None, 0)  # the window is open
            outcome = _outcome(world, comm, lambda: comm.gather(np.ones(n), out if comm.rank == 0 else None, 0))
        else:
            comm.scatter(np.ones(4 * comm.size) if comm.rank == 0 else None, np.empty(4), 0)
            outcome = _outcome(world, comm, lambda: comm.scatter(np.ones(n * comm.size) if comm.rank == 0 else None,
                                                                  out, 0))
        return f"{outcome}, kept: {bool(np.all(out == 7.0))}"

    results = run_world(fn, 2, "shm", timeout=60)
    reader, writer = results if call == "gather" else results[::-1]
    assert reader == "MessageMismatchError, kept: True"
    assert writer.startswith("returned")  # (a scatter's root has its block in its out)


def test_a_reduce_root_given_another_count_raises_and_keeps_its_x(implementation: str) -> None:
    """The others post their slots and return (they wait for nobody); the root finds their
    byte count differs from its own and raises rather than fold a short or long slot."""
    def fn(world: collectives.Communicator) -> str:
        comm = collectives.init(world.rank, world.size, PrefixStore("reduce", world.store), transport="shm", timeout=5)
        comm.reduce(np.ones(4), 0)  # the window is open
        x = np.full(4 + comm.rank, 7.0)
        outcome = _outcome(world, comm, lambda: comm.reduce(x, 0))
        return f"{outcome}, x kept: {bool(np.all(x == 7.0))}"

    assert run_world(fn, 2, "shm", timeout=60) == ["MessageMismatchError, x kept: True", "returned, x kept: True"]


@pytest.mark.parametrize("root_sends", ["eager", "pipelined"])
def test_a_broadcast_receiver_expecting_the_other_kind_of_slot_raises_rather_than_copy_a_stale_one(
        root_sends: str, implementation: str) -> None:
    """Broadcasts up to EAGER_BROADCAST_BYTES take slots of their own. After many calls of
    the receiver's count, every slot and byte-count word it could look at holds that count;
    the root's call of the other kind must still read as a mismatch, and x stay as it was."""
    from collectives.engines import small

    tiny, big = 2, small.EAGER_BROADCAST_BYTES // 8 + 1  # int64 elements: eager, pipelined slots
    sent, expected = (tiny, big) if root_sends == "eager" else (big, tiny)

    def fn(world: collectives.Communicator) -> str:
        comm = collectives.init(world.rank, world.size, PrefixStore("kinds", world.store), transport="shm", timeout=5)
        for i in range(small.SLOT_LENS + small.PIPELINED_BROADCAST_SLOTS):
            comm.broadcast(np.full(expected, i, np.int64), 0)
        x = np.full(sent, 7, np.int64) if comm.rank == 0 else np.full(expected, -1, np.int64)
        outcome = _outcome(world, comm, lambda: comm.broadcast(x, 0))
        return f"{outcome}, x kept: {bool(np.all(x == (7 if comm.rank == 0 else -1)))}"

    assert run_world(fn, 2, "shm", timeout=60) == ["returned, x kept: True", "MessageMismatchError, x kept: True"]


def test_apart_tells_the_same_memory_and_disjoint_buffers_from_overlapping_ones() -> None:
    apart = small_native.apart
    assert apart is not None, "the C extension is not built"
    a = np.arange(10.0)
    assert apart(a, a) and apart(a[:5], a[5:]) and apart(a, np.zeros(10))
    assert apart(a[:5], a[4:]) is False and apart(a[2:], a) is False
    assert apart(a[::2], a) is None  # not one contiguous buffer: the caller asks numpy


def _cpu_now() -> int:
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move between")
def test_ranks_the_scheduler_put_on_one_cpu_move_apart_and_keep_their_affinity() -> None:
    """A futex wake-up places the woken rank on its waker's CPU; two ranks spinning on one
    CPU while another idles made each call 30x slower. The higher rank moves itself."""
    def fn(comm: collectives.Communicator) -> tuple[int, int, bool]:
        allowed = os.sched_getaffinity(0)
        x = np.ones(2)
        comm.all_reduce(x)  # the window opens with every CPU allowed: ranks do not outnumber CPUs
        os.sched_setaffinity(0, {min(allowed)})  # both ranks on one CPU, as after a wake-up
        for _ in range(50):
            comm.all_reduce(x)
        os.sched_setaffinity(0, allowed)  # free to move again; nothing moves them yet
        for _ in range(500):
            comm.all_reduce(x)
        native = comm._plans[("all_reduce", x.dtype, x.size, ReduceOp.SUM, None)].native
        return native.moves, _cpu_now(), os.sched_getaffinity(0) == allowed

    (moves0, cpu0, kept0), (moves1, cpu1, kept1) = run_world(fn, 2, "shm", timeout=60)
    assert moves1 >= 1 and moves0 == 0  # the higher rank of the pair moves
    assert cpu0 != cpu1
    assert kept0 and kept1


@pytest.mark.parametrize("posted,allowed,moves", [
    ([1, 2, 2, 2], [0, 1], {3: 0}),  # 3 of 4 ranks on CPU 1: its highest rank goes to CPU 0
    ([1, 1, 2, 2], [0, 1], {}),  # their share each: nobody moves
    ([1, 1, 1, 2, 2, 2, 2, 2], [0, 1], {7: 0}),  # 5 of 8 on CPU 1, against a share of 4
    ([2, 2, 2], [0, 1], {2: 0}),  # 3 ranks on one of 2 CPUs: a share is 2
    ([1, 1, 2, 2, 2, 2], [0, 1, 2], {5: 2}),  # to the CPU with the fewest (none on CPU 2)
    ([1, 2, 2, 2], [1], {}),  # one CPU allowed: nowhere to go
    ([1, 2, 2, 2], [0, 2], {}),  # CPU 1 is not allowed any more: the mask decides, not the crowd
    ([0, 0, 2, 2], [0, 1], {}),  # ranks that never posted are nowhere: 2 ranks on CPU 1 are a share
])
def test_where_ranks_outnumber_cpus_only_the_highest_rank_of_a_crowded_cpu_moves(
        posted: list[int], allowed: list[int], moves: dict[int, int]) -> None:
    from collectives.engines import _small_c  # type: ignore[attr-defined]

    for me in range(len(posted)):
        here = posted[me] - 1 if posted[me] else 1
        assert _small_c.crowded_move(me, posted, here, allowed) == moves.get(me, -1), f"rank {me}"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move between")
def test_where_ranks_outnumber_cpus_a_crowded_cpu_sheds_its_highest_rank() -> None:
    """Four ranks on two CPUs, three of them on one: the scheduler can keep them there (ranks
    that yield look busy to it), and every call then waited for the crowded CPU's turns (twice
    the time). The highest rank there moves itself to the other CPU before it waits."""
    def fn(comm: collectives.Communicator) -> tuple[int, bool]:
        two = set(sorted(os.sched_getaffinity(0))[:2])
        os.sched_setaffinity(0, two)  # before the window opens: it sees 4 ranks on 2 CPUs
        x = np.ones(2)
        comm.all_reduce(x)
        assert comm._context.windows.small_window.oversubscribed
        os.sched_setaffinity(0, {min(two)} if comm.rank == 0 else {max(two)})
        for _ in range(50):
            comm.all_reduce(x)
        os.sched_setaffinity(0, two)  # free to move again; the crowd is where it was
        for _ in range(1000):
            comm.all_reduce(x)
        native = comm._plans[("all_reduce", x.dtype, x.size, ReduceOp.SUM, None)].native
        return native.moves, os.sched_getaffinity(0) == two

    results = run_world(fn, 4, "shm", timeout=60)
    moves = [m for m, _ in results]
    assert moves[0] == 0 and moves[3] >= 1, moves  # the lone rank stays; the crowd's highest moves
    assert all(kept for _, kept in results)


def test_the_setting_is_read_like_every_other_flag() -> None:
    from collectives.config import Config
    from collectives.errors import InvalidArgumentError

    assert Config.from_env({}).pure_python is False
    assert Config.from_env({small_native.PURE_PYTHON_ENV: "1"}).pure_python is True
    assert Config.from_env({small_native.PURE_PYTHON_ENV: "off"}).pure_python is False
    with pytest.raises(InvalidArgumentError, match="COLLECTIVES_PURE_PYTHON='maybe'"):
        Config.from_env({small_native.PURE_PYTHON_ENV: "maybe"})


def test_two_shot_all_reduces_give_numpys_bits_and_wait_for_late_peers(
        implementation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores, all-reduces from ``direct_routes.TWO_SHOT_BYTES`` fold one block per
    rank (``TwoShotAllReducePlan``): the same bits as folding in rank order, in place and out of
    place, blocks of uneven length, ranks falling behind at either shot, C and Python alike."""
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)  # the forked ranks inherit both
    monkeypatch.setattr(direct_routes, "TWO_SHOT_BYTES", 16)

    def fn(comm: collectives.Communicator) -> tuple[set[str], list[str]]:
        rng = np.random.default_rng(comm.rank)
        failed = []
        for dtype, op in [(np.float32, ReduceOp.SUM), (np.float64, ReduceOp.PROD), (np.int8, ReduceOp.BXOR),
                          (np.float32, ReduceOp.MAX), (np.float32, ReduceOp.AVG)]:
            for k in (5, 3001):
                inputs = [rank_input(r, k, dtype, op, seed=k, exact=False) for r in range(comm.size)]
                expected = _folded(inputs, op, comm.size)
                for i in range(6):
                    if rng.random() < 0.3:
                        time.sleep(rng.random() * 1e-3)
                    x = inputs[comm.rank].copy()
                    got = comm.all_reduce(x, op=op, out=np.empty_like(x) if i % 2 else None)
                    if got.tobytes() != expected.tobytes():
                        failed.append(f"{np.dtype(dtype)} {op} {k} call {i}")
        kinds = {type(getattr(plan, "kernel", None)).__name__ for plan in comm._plans.values()}
        return kinds, failed

    for kinds, failed in run_world(fn, 3, "shm", timeout=120):
        assert failed == []
        assert "TwoShotAllReducePlan" in kinds


def _checked_all_reduces(comm: collectives.Communicator, cases: list[tuple[Any, ReduceOp, int]]) -> tuple[
        dict[str, Any], list[str]]:
    """All-reduces of every (dtype, operator, count) in ``cases``, three calls each (in place, out
    of place, in place), against folding in rank order: the plan each case left behind, past a
    larger route's hand-off to the halves (keyed "dtype op bytes"), and the calls whose bits differed."""
    failed, plans = [], {}
    for dtype, op, k in cases:
        inputs = [rank_input(r, k, dtype, op, seed=k, exact=False) for r in range(comm.size)]
        expected = _folded(inputs, op, comm.size)
        for i in range(3):
            x = inputs[comm.rank].copy()
            got = comm.all_reduce(x, op=op, out=np.empty_like(x) if i % 2 else None)
            if got.tobytes() != expected.tobytes():
                failed.append(f"{np.dtype(dtype)} {op} {k} call {i}")
        plan = next(p for key, p in comm._plans.items() if key[:4] == ("all_reduce", np.dtype(dtype), k, op))
        plans[f"{np.dtype(dtype)} {op} {k * np.dtype(dtype).itemsize}"] = getattr(plan, "small", None) or plan
    return plans, failed


def _all_reduce_kernels(comm: collectives.Communicator, cases: list[tuple[Any, ReduceOp, int]]) -> tuple[
        dict[str, str], list[str]]:
    """``_checked_all_reduces``, each case's plan named: its kernel's type, or "pieces x the pieces'
    kernels" for ``PiecewiseAllReduce``."""
    plans, failed = _checked_all_reduces(comm, cases)

    def name(plan: Any) -> str:
        if isinstance(plan, windowed.PiecewiseAllReduce):
            return f"{len(plan.pieces)} x " + ",".join(sorted({type(r.kernel).__name__ for _, _, r in plan.pieces}))
        return type(getattr(plan, "kernel", None)).__name__

    return {key: name(plan) for key, plan in plans.items()}, failed


def test_all_reduces_take_the_halves_up_to_their_own_limit_beyond_the_other_reductions(implementation: str) -> None:
    """All-reduces go through the halves up to ``ALL_REDUCE_HALVES_BYTES`` (beyond ``HALF_BYTES``,
    where reduce-scatters leave them) with numpy's bits in rank order, in place and out of place;
    one element more takes the larger route."""
    limit = direct_routes.ALL_REDUCE_HALVES_BYTES
    assert limit > direct_routes.HALF_BYTES
    cases = [(dtype, op, limit // np.dtype(dtype).itemsize + extra)
             for dtype, op in [(np.float32, ReduceOp.SUM), (np.float64, ReduceOp.PROD), (np.int8, ReduceOp.BXOR),
                               (np.int32, ReduceOp.MAX), (np.float32, ReduceOp.AVG)] for extra in (0, 1)]

    for kernels, failed in run_world(lambda comm: _all_reduce_kernels(comm, cases), 2, "shm", timeout=120):
        assert failed == []
        for case, kernel in kernels.items():
            assert (kernel in ("AllReducePlan", "TwoShotAllReducePlan")) == case.endswith(f" {limit}"), case


def test_where_every_rank_has_a_core_all_reduces_beyond_the_other_reductions_halves_take_two_shots(
        implementation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where every rank has a core, all-reduces through the halves from ``TWO_SHOT_CORES_BYTES``
    (beyond ``HALF_BYTES``) up to ``ALL_REDUCE_HALVES_BYTES`` take two shots, those of ``HALF_BYTES``
    one: the same bits as folding in rank order, in place and out of place, an odd count of
    elements (blocks of uneven length), C and Python alike."""
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: False)  # the forked ranks inherit it
    half, first, limit = direct_routes.HALF_BYTES, direct_routes.TWO_SHOT_CORES_BYTES, direct_routes.ALL_REDUCE_HALVES_BYTES
    assert half < first <= limit
    cases = [(dtype, op, k) for dtype, op in [(np.float32, ReduceOp.SUM), (np.float64, ReduceOp.PROD),
                                              (np.int8, ReduceOp.BXOR), (np.float32, ReduceOp.AVG)]
             for item in [np.dtype(dtype).itemsize] for k in (half // item, -(-first // item) | 1, limit // item)]

    for kernels, failed in run_world(lambda comm: _all_reduce_kernels(comm, cases), 2, "shm", timeout=120):
        assert failed == []
        assert kernels == {f"{np.dtype(dtype)} {op} {k * np.dtype(dtype).itemsize}":
                           "AllReducePlan" if k * np.dtype(dtype).itemsize == half else "TwoShotAllReducePlan"
                           for dtype, op, k in cases}


def test_where_ranks_outnumber_cores_all_reduces_beyond_the_halves_limit_take_two_shots_through_them_up_to_the_crowded_one(
        implementation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores, all-reduces beyond ``ALL_REDUCE_HALVES_BYTES`` up to
    ``ALL_REDUCE_HALVES_CROWDED_BYTES`` go through the halves after all, in two shots (the larger
    route hands them over on its first call); one element more takes them in two pieces
    (``PiecewiseAllReduce``, below). The same bits as folding in rank order, in place and out of
    place, an odd count of elements, C and Python alike."""
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)  # the forked ranks inherit it
    low, limit = direct_routes.ALL_REDUCE_HALVES_BYTES, direct_routes.ALL_REDUCE_HALVES_CROWDED_BYTES
    assert low < limit <= small._half_bytes() and limit < direct_routes.reads_from(False, True)
    cases = [(dtype, op, k) for dtype, op in [(np.float32, ReduceOp.SUM), (np.float64, ReduceOp.PROD),
                                              (np.int8, ReduceOp.BXOR), (np.float32, ReduceOp.AVG)]
             for item in [np.dtype(dtype).itemsize] for k in ((low // item + 1) | 1, limit // item, limit // item + 1)]

    for kernels, failed in run_world(lambda comm: _all_reduce_kernels(comm, cases), 2, "shm", timeout=120):
        assert failed == []
        assert kernels == {f"{np.dtype(dtype)} {op} {k * np.dtype(dtype).itemsize}":
                           "TwoShotAllReducePlan" if k * np.dtype(dtype).itemsize <= limit else "2 x TwoShotAllReducePlan"
                           for dtype, op, k in cases}


def _two_shot_plans(comm: collectives.Communicator, cases: list[tuple[Any, ReduceOp, int]]) -> tuple[
        dict[str, bool], list[str]]:
    """``_checked_all_reduces``, each case's plan a two-shot one: whether it has a C plan."""
    plans, failed = _checked_all_reduces(comm, cases)
    in_c = {}
    for key, plan in plans.items():
        kernel = getattr(plan, "kernel", None)
        assert isinstance(kernel, small.TwoShotAllReducePlan), (key, type(kernel).__name__)
        in_c[key] = kernel.native is not None
    return in_c, failed


def test_two_shot_all_reduces_beyond_the_c_bound_run_in_c_only_where_ranks_outnumber_cores(crowded: bool) -> None:
    """Where ranks outnumber cores the two-shot all-reduce has a C plan at every size the halves
    take it (up to ``CROWDED_TWO_SHOT_BYTES``), beyond ``MAX_BYTES`` too; where every rank has a
    core, none beyond ``MAX_BYTES`` (the Python plan, as before). The same bits as folding in rank
    order either way, in place and out of place, odd counts (blocks of uneven length)."""
    assert small_native.MAX_BYTES < direct_routes.TWO_SHOT_CORES_BYTES
    assert small_native.CROWDED_TWO_SHOT_BYTES == direct_routes.ALL_REDUCE_HALVES_CROWDED_BYTES
    sizes = ((small_native.MAX_BYTES + 1, direct_routes.ALL_REDUCE_HALVES_BYTES, small_native.CROWDED_TWO_SHOT_BYTES)
             if crowded else (direct_routes.TWO_SHOT_CORES_BYTES, direct_routes.ALL_REDUCE_HALVES_BYTES))
    cases = [(dtype, op, k) for dtype, op in [(np.float32, ReduceOp.SUM), (np.float64, ReduceOp.PROD),
                                              (np.int8, ReduceOp.BXOR)]
             for item in [np.dtype(dtype).itemsize] for k in {(-(-n // item)) | 1 if n % 2 else n // item for n in sizes}]

    for in_c, failed in run_world(lambda comm: _two_shot_plans(comm, cases), 2, "shm", timeout=120):
        assert failed == []
        assert in_c == {f"{np.dtype(dtype)} {op} {k * np.dtype(dtype).itemsize}": crowded for dtype, op, k in cases}


def _checked_reduce_scatters(comm: collectives.Communicator, cases: list[tuple[Any, ReduceOp, int]]) -> tuple[
        dict[str, bool], list[str]]:
    """Reduce-scatters of every (dtype, operator, elements of a block) in ``cases``, three calls each
    (out of place, in place into x's own block, out of place), against folding in rank order: whether
    each case's halves plan has a C plan (keyed "dtype op bytes of x"), and the calls whose bits differed."""
    failed, in_c = [], {}
    for dtype, op, m in cases:
        k = m * comm.size
        inputs = [rank_input(r, k, dtype, op, seed=m, exact=False) for r in range(comm.size)]
        expected = _folded(inputs, op, comm.size)[comm.rank * m:(comm.rank + 1) * m]
        for i in range(3):
            x = inputs[comm.rank].copy()
            out = x[comm.rank * m:(comm.rank + 1) * m] if i == 1 else np.empty(m, dtype)
            comm.reduce_scatter(x, out, op=op)
            if out.tobytes() != expected.tobytes():
                failed.append(f"{np.dtype(dtype)} {op} {k} call {i}")
        plan = next(p for key, p in comm._plans.items() if key[:4] == ("reduce_scatter", np.dtype(dtype), k, op))
        kernel = getattr(getattr(plan, "small", None) or plan, "kernel", None)
        assert isinstance(kernel, small.ReduceScatterPlan), (dtype, op, k, type(kernel).__name__)
        in_c[f"{np.dtype(dtype)} {op} {k * np.dtype(dtype).itemsize}"] = kernel.native is not None
    return in_c, failed


def test_reduce_scatters_beyond_the_c_bound_run_in_c_only_where_ranks_outnumber_cores(crowded: bool) -> None:
    """Where ranks outnumber cores the reduce-scatter through the halves has a C plan at every size
    they take it (up to ``CROWDED_REDUCE_SCATTER_BYTES``, the halves' crowded limit), beyond
    ``MAX_BYTES`` too; where every rank has a core, none beyond ``MAX_BYTES`` (the Python plan, up
    to ``HALF_BYTES``). The same bits as folding in rank order either way, in place and out of
    place, blocks of an odd count; a float MAX (numpy folds after the C plan's copies) too."""
    limit = small_native.CROWDED_REDUCE_SCATTER_BYTES
    assert limit == direct_routes.REDUCE_SCATTER_HALVES_CROWDED_BYTES <= small._half_bytes()
    assert small_native.MAX_BYTES < direct_routes.HALF_BYTES < limit
    sizes = (small_native.MAX_BYTES + 1, limit) if crowded else (small_native.MAX_BYTES + 1, direct_routes.HALF_BYTES)
    cases = [(dtype, op, m) for dtype, op in [(np.float32, ReduceOp.SUM), (np.float64, ReduceOp.PROD),
                                              (np.int8, ReduceOp.BXOR), (np.float32, ReduceOp.MAX)]
             for item in [np.dtype(dtype).itemsize]
             for m in {(n // (2 * item) + 1) | 1 if n % 2 else n // (2 * item) for n in sizes}]

    for in_c, failed in run_world(lambda comm: _checked_reduce_scatters(comm, cases), 2, "shm", timeout=120):
        assert failed == []
        assert in_c == {f"{np.dtype(dtype)} {op} {2 * m * np.dtype(dtype).itemsize}": crowded for dtype, op, m in cases}


def test_where_ranks_outnumber_cores_larger_all_reduces_take_the_halves_piece_by_piece_up_to_the_pieces_limit(
        implementation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores, all-reduces beyond ``ALL_REDUCE_HALVES_CROWDED_BYTES`` up to
    ``ALL_REDUCE_PIECES_CROWDED_BYTES`` go through the halves piece by piece (``PiecewiseAllReduce``:
    as many pieces as ``direct_routes.all_reduce_pieces`` says, each a two-shot call); one element
    more takes the scratch window. The bits of folding the whole call in rank order, in place and
    out of place, pieces of uneven length (an odd count), C and Python alike. (The limits shrunk.)"""
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)  # the forked ranks inherit these
    monkeypatch.setattr(direct_routes, "TWO_SHOT_BYTES", 16)
    for module in (small, direct_routes):
        monkeypatch.setattr(module, "ALL_REDUCE_HALVES_BYTES", 1 << 10)
    monkeypatch.setattr(direct_routes, "ALL_REDUCE_HALVES_CROWDED_BYTES", 4 << 10)
    monkeypatch.setattr(direct_routes, "ALL_REDUCE_PIECES_CROWDED_BYTES", 16 << 10)
    one, limit = 4 << 10, 16 << 10
    cases = [(dtype, op, k) for dtype, op in [(np.float32, ReduceOp.SUM), (np.float64, ReduceOp.PROD),
                                              (np.int8, ReduceOp.BXOR), (np.float32, ReduceOp.AVG)]
             for item in [np.dtype(dtype).itemsize] for k in ((one // item + 1) | 1, limit // item, limit // item + 1)]

    def expected(nbytes: int) -> str:
        return "NoneType" if nbytes > limit else f"{-(-nbytes // one)} x TwoShotAllReducePlan"

    for kernels, failed in run_world(lambda comm: _all_reduce_kernels(comm, cases), 2, "shm", timeout=120):
        assert failed == []
        assert kernels == {f"{np.dtype(dtype)} {op} {k * np.dtype(dtype).itemsize}":
                           expected(k * np.dtype(dtype).itemsize) for dtype, op, k in cases}


def _reduces_to_every_root(comm: collectives.Communicator, inputs: list[np.ndarray], op: ReduceOp, label: str,
                           **options: Any) -> list[str]:
    """Reduces of ``inputs`` (this rank's: ``inputs[comm.rank]``) to every root, in place, into
    ``out=`` and in place again: the calls (``label``, root, whether into ``out``) whose result was
    wrong, or that wrote ``x`` where it should only have been read."""
    expected = _folded(inputs, op, comm.size)
    wrong = []
    for root in range(comm.size):
        for into_out in (False, True, False):
            x = inputs[comm.rank].copy()
            out = np.empty_like(x) if into_out else None
            got = comm.reduce(x, root, op=op, out=out, **options)
            want = expected if comm.rank == root else inputs[comm.rank]
            if got.tobytes() != want.tobytes() or x.tobytes() != (want if out is None else inputs[comm.rank]).tobytes():
                wrong.append(f"{label} to {root} out={into_out}")
    return wrong


def _one_way_calls(comm: collectives.Communicator) -> tuple[dict[str, int], list[str]]:
    """Three calls of each small reduce (every C fold and two that numpy folds, every root,
    into ``x`` and into ``out=``) and broadcast (every root): how many calls each kept one-way
    plan did in C (``OneWayBase.done``), and the calls whose result was wrong."""
    done, wrong = {}, []
    for dtype, ops in CASES:
        for op in ops:
            for k in (1, 7, 200):
                inputs = [rank_input(r, k, dtype, op, seed=k, exact=False) for r in range(comm.size)]
                wrong += _reduces_to_every_root(comm, inputs, op, f"reduce {np.dtype(dtype)} {op} {k}")
        for root in range(comm.size):
            for _ in range(3):
                y = rank_input(root, 7, dtype, seed=root) if comm.rank == root else np.zeros(7, dtype)
                comm.broadcast(y, root)
                if y.tobytes() != rank_input(root, 7, dtype, seed=root).tobytes():
                    wrong.append(f"broadcast {np.dtype(dtype)} from {root}")
    for key, plan in comm._plans.items():
        if key[0] in ("reduce", "broadcast"):
            plan = getattr(plan, "plan", plan)
            assert isinstance(plan, small_native.OneWayBase), key
            done[" ".join(map(str, key[:-1]))] = plan.done
    comm.barrier()
    return done, wrong


def test_repeated_one_way_calls_run_in_c_with_numpys_bits_where_a_c_plan_folds_them(implementation: str) -> None:
    """A kept small reduce or broadcast runs in C once its window is open (``OneWayBase``: no
    Python frame of the plan's own) wherever the window has a C plan that nothing follows in
    Python: every broadcast, a reduce not where numpy folds (float16, complex64) or the root
    divides an average; never with the C plans off; every result the rank-order fold's bits, whichever runs it."""
    folds_in_c = {str(np.dtype(dtype)) for dtype in (np.float32, np.float64, np.int8, np.int32, np.int64, np.uint16,
                                                     np.uint64)}
    for done, wrong in run_world(_one_way_calls, 3, "shm", timeout=120):
        assert wrong == []
        for key, calls in done.items():
            name, dtype, *rest = key.split(" ")
            in_c = implementation == "c" and (name == "broadcast" or dtype in folds_in_c and "AVG" not in key)
            assert (calls > 0) == in_c, (key, calls)


def _all_reduce_waits(comm: collectives.Communicator, count: int) -> tuple[bool, int | None]:
    """Fifty all-reduces of ``count`` float64: whether each was right, and the C plan's waits
    that yielded at every poll (None: the calls had no C plan)."""
    ok = []
    for _ in range(50):
        x = np.ones(count)
        comm.all_reduce(x)
        ok.append(bool((x == comm.size).all()))
    plan = comm._plans[("all_reduce", x.dtype, x.size, ReduceOp.SUM, None)]
    native = getattr(getattr(plan, "kernel", plan), "native", None)
    return all(ok), None if native is None else native.crowded_waits


@pytest.mark.parametrize("cores,nbytes,every_poll", [
    (1, 16, True),
    (1, small_native.CROWDED_POLL_BYTES - 8, True),
    (1, small_native.CROWDED_POLL_BYTES, False),
    (64, 16, False),
], ids=["ranks outnumber cores", "ranks outnumber cores, just below the bound", "ranks outnumber cores, from the bound",
        "a core each"])
def test_where_ranks_outnumber_cpus_a_plans_waits_yield_at_every_poll_below_its_bound(
        cores: int, nbytes: int, every_poll: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber CPUs (no spin) a C plan of fewer than ``CROWDED_POLL_BYTES`` waiting
    for its peers' flags yields at every poll; a larger one, and every plan where each rank has a
    CPU, polls as before (a yield every 64th poll, after the spin where there is one)."""
    from collectives.transports import progress

    monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(progress, "usable_cpus", lambda: cores)  # the forked ranks inherit it
    results = run_world(lambda comm: _all_reduce_waits(comm, nbytes // 8), 2, "shm", timeout=60)
    assert all(ok and waits is not None for ok, waits in results), results
    waits = sum(waits or 0 for _, waits in results)
    assert (waits > 0) if every_poll else (waits == 0), results


def _one_way_done(plan: Any) -> int:
    """Calls a kept reduce plan did in C: its one-way call's, or its pieces' summed."""
    plan = getattr(plan, "plan", plan)
    if isinstance(plan, small_native.OneWayBase):
        return plan.done
    route = getattr(plan, "route", None)
    assert isinstance(route, windowed.PiecewiseReduce), type(plan)
    return sum(one_way.done for _, _, one_way in route.pieces)


def _done_in_c(comm: collectives.Communicator, kind: str, name: Callable[[Any], str]) -> dict[str, int]:
    """The calls each kept plan of ``kind`` did in C, by ``name`` of its plan key."""
    done: dict[str, int] = {}
    for key, plan in comm._plans.items():
        if key[0] == kind:
            done[name(key)] = done.get(name(key), 0) + _one_way_done(plan)
    return done


def _checked_reduces(comm: collectives.Communicator, cases: list[tuple[Any, ReduceOp, int]]) -> tuple[dict[str, int], list[str]]:
    """Three direct reduces of each case to every root, in place, into ``out=`` and in place again:
    the calls each kept plan did in C, and the calls whose result or ``x`` was wrong."""
    wrong: list[str] = []
    for dtype, op, k in cases:
        inputs = [rank_input(r, k, dtype, op, seed=k, exact=False) for r in range(comm.size)]
        wrong += _reduces_to_every_root(comm, inputs, op, f"{np.dtype(dtype)} {op} {k}", algorithm="direct")
    done = _done_in_c(comm, "reduce", lambda key: f"{key[1]} {key[3]} {key[2]}")
    comm.barrier()
    return done, wrong


def test_reduces_through_the_slots_beyond_the_c_bound_run_in_c_only_where_ranks_outnumber_cores(crowded: bool) -> None:
    """Where ranks outnumber cores a reduce through the slots has a C plan up to a whole slot
    (``CROWDED_REDUCE_BYTES``), beyond ``MAX_BYTES`` too, and so has each piece of a larger one
    (``PiecewiseReduce``); where every rank has a core, none beyond ``MAX_BYTES``. The bits of
    folding in rank order at every root, in place and into ``out=``, counts odd."""
    assert small_native.MAX_BYTES < small_native.CROWDED_REDUCE_BYTES == windowed.DIRECT_REDUCE_BYTES
    one = [(dtype, op, (small_native.MAX_BYTES // np.dtype(dtype).itemsize + 1) | 1)
           for dtype, op in [(np.float32, ReduceOp.SUM), (np.float64, ReduceOp.PROD), (np.int8, ReduceOp.BXOR)]]
    # two pieces, each beyond MAX_BYTES: where ranks outnumber cores only (else reads or a schedule)
    two = [(np.float32, ReduceOp.SUM, 2 * (small_native.MAX_BYTES // 4 + 8) + 1)] if crowded else []
    for done, wrong in run_world(lambda comm: _checked_reduces(comm, one + two), 3, "shm", timeout=120):
        assert wrong == []
        assert set(done) == {f"{np.dtype(dtype)} {op} {k}" for dtype, op, k in one + two}
        assert {key: calls > 0 for key, calls in done.items()} == {key: crowded for key in done}, done


def _checked_broadcasts(comm: collectives.Communicator,
                        cases: list[tuple[Any, int, int]]) -> tuple[dict[str, int], list[str]]:
    """Three direct broadcasts of each case (dtype, count, the byte offset of ``x`` from a page) from
    every root, in place: the calls each kept plan did in C, and the calls whose result was wrong."""
    wrong = []
    for dtype, k, skew in cases:
        name = f"{np.dtype(dtype)} {k}"
        for root in range(comm.size):
            for call in range(3):
                raw = np.zeros(k * np.dtype(dtype).itemsize + 2 * 4096, np.uint8)
                start = -raw.ctypes.data % 4096 + skew  # 4K-aliased with the page-aligned slots where skew < 32
                x = raw[start:start + k * np.dtype(dtype).itemsize].view(dtype)
                want = rank_input(root, k, dtype, ReduceOp.SUM, seed=k + call, exact=False)
                if comm.rank == root:
                    x[...] = want
                comm.broadcast(x, root=root, algorithm="direct")
                if not np.array_equal(x.view(np.uint8), want.view(np.uint8)):
                    wrong.append(f"{name} root {root} call {call}")
    done = _done_in_c(comm, "broadcast", lambda key: f"{np.dtype(key[1])} {key[2]}")
    comm.barrier()
    return done, wrong


def test_broadcasts_through_the_slots_beyond_the_c_bound_run_in_c_up_to_a_whole_slot(crowded: bool) -> None:
    """A broadcast through the slots has a C plan up to a whole slot (``SLOT_BROADCAST_BYTES``),
    beyond ``MAX_BYTES`` too, where ranks outnumber cores and where every rank has a core. Every
    rank gets the root's bits from every root, ``x`` 4K-aliased with the slots or not, the count
    odd or a whole slot."""
    assert small_native.MAX_BYTES < small_native.SLOT_BROADCAST_BYTES == small.PIPELINED_BROADCAST_BYTES
    cases = [(np.float32, (small_native.MAX_BYTES // 4 + 1) | 1, 8),
             (np.float64, small.PIPELINED_BROADCAST_BYTES // 8, 0), (np.int8, small_native.MAX_BYTES + 3, 100)]
    for done, wrong in run_world(lambda comm: _checked_broadcasts(comm, cases), 3, "shm", timeout=120):
        assert wrong == []
        assert set(done) == {f"{np.dtype(dtype)} {k}" for dtype, k, _ in cases}, done
        assert all(calls > 0 for calls in done.values()), done


def test_a_crowded_few_ranks_reduce_beyond_the_many_ranks_reads_size_runs_its_pieces_in_c(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a few ranks outnumber cores (``REDUCE_PIECES_CROWDED_RANKS``) a reduce from the size
    that larger crowded groups take by reads (``REDUCE_READS_BYTES``' second) still goes through
    the slots piece by piece, each piece in C; the bits of folding in rank order at every root, in
    place and into ``out=``, the count odd."""
    monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)  # the forked ranks inherit it
    few, start = direct_routes.REDUCE_PIECES_CROWDED_RANKS
    nbytes = direct_routes.REDUCE_READS_BYTES[1]
    assert 3 <= few and nbytes < start and direct_routes.reduce_by_pieces(nbytes + 4, True, 3)
    cases = [(np.float32, ReduceOp.SUM, nbytes // 4 + 1)]
    for done, wrong in run_world(lambda comm: _checked_reduces(comm, cases), 3, "shm", timeout=120):
        assert wrong == []
        assert done[f"float32 {ReduceOp.SUM} {nbytes // 4 + 1}"] > 0, done


def test_a_crowded_reduce_yields_to_late_peers_longer_before_handing_back() -> None:
    """Where ranks outnumber cores a reduce's root yields ``CROWDED_REDUCE_YIELD_SECONDS`` in C to a late
    writer, its writers and every other kind ``YIELD_SECONDS``; where each rank has a core none
    yields (they spin)."""
    from collectives.transports.progress import YIELD_SECONDS
    assert small_native.CROWDED_REDUCE_YIELD_SECONDS > YIELD_SECONDS
    assert small_native._yield_seconds(small_native.REDUCE, True, root=True) == small_native.CROWDED_REDUCE_YIELD_SECONDS
    assert small_native._yield_seconds(small_native.REDUCE, True) == YIELD_SECONDS
    assert small_native._yield_seconds(small_native.REDUCE, False, root=True) == 0.0
    for kind in (small_native.BROADCAST, small_native.ALL_REDUCE, small_native.GATHER, small_native.ALL_REDUCE_TWO_SHOT):
        assert small_native._yield_seconds(kind, True) == small_native._yield_seconds(kind, True, root=True) == YIELD_SECONDS
    assert small_native._yield_seconds(small_native.REDUCE, False) == 0.0
