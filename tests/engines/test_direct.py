"""Direct (shared-window) all-reduce over real processes: correct for every op and odd
sizes, the same bits on every rank, zero-copy on comm.alloc buffers, windows that grow,
and mixed calls where only some ranks pass registered buffers."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import collectives
from collectives import ReduceOp
from collectives.algorithms import direct_routes
from collectives.testing import run_world
from collectives.testing.reference import rank_input
from collectives.testing.reference import all_reduce as reference_all_reduce

pytestmark = pytest.mark.multiprocess

OPS = [ReduceOp.SUM, ReduceOp.PROD, ReduceOp.MIN, ReduceOp.MAX, ReduceOp.AVG, ReduceOp.BXOR]


@pytest.mark.parametrize("size", [2, 3, 4])
def test_direct_matches_the_reference_for_every_op(size):
    counts = [0, 1, size - 1, size + 1, 1000, 70001]

    def fn(comm):
        out = []
        for op in OPS:
            dtype = np.int32 if op is ReduceOp.BXOR else np.float64
            for count in counts:
                x = rank_input(comm.rank, count, np.dtype(dtype), op)
                comm.all_reduce(x, op=op, algorithm="direct")
                out.append(x)
        return out

    results = run_world(fn, size, "shm", timeout=120)
    i = 0
    for op in OPS:
        dtype = np.int32 if op is ReduceOp.BXOR else np.float64
        for count in counts:
            inputs = [rank_input(r, count, np.dtype(dtype), op) for r in range(size)]
            want = reference_all_reduce(inputs, op)[0]
            for r in range(size):
                np.testing.assert_allclose(results[r][i], want, rtol=1e-12, err_msg=f"{op} count {count} rank {r}")
                assert results[r][i].tobytes() == results[0][i].tobytes()
            i += 1


def test_direct_is_the_automatic_choice_on_one_host_and_gives_identical_bits():
    def fn(comm):
        assert comm._planner.algorithm("all_reduce", None, 1 << 20) == "direct"
        rng = np.random.default_rng(comm.rank)
        x = rng.standard_normal((1 << 20) + 13).astype(np.float32)
        first = x.copy()
        comm.all_reduce(x)
        comm.all_reduce(first)
        return x.view(np.uint32).copy(), first.view(np.uint32).copy()

    results = run_world(fn, 3, "shm", timeout=120)
    for got, again in results:
        assert np.array_equal(got, results[0][0])
        assert np.array_equal(again, got)  # run to run


def test_alloc_buffers_reduce_in_place_and_mix_with_plain_arrays():
    def fn(comm):
        a = comm.alloc((4, 1000), np.int64)
        assert a.shape == (4, 1000) and not a.any()
        a[...] = np.arange(4000).reshape(4, 1000) + comm.rank
        comm.all_reduce(a)
        # some ranks pass registered buffers, others plain arrays
        b = comm.alloc(5001, np.float64)
        x = b if comm.rank % 2 else np.empty(5001)
        x[...] = comm.rank + 1.0
        comm.all_reduce(x, op=ReduceOp.MAX)
        x = x.copy()  # on odd ranks x is b, reused below
        # a slice of a registered buffer (an offset inside the window)
        b[...] = comm.rank
        comm.all_reduce(b[1000:3000])
        return a.copy(), x.copy(), b[:3001].copy()

    n = 3
    results = run_world(fn, n, "shm", timeout=120)
    for a, x, b in results:
        np.testing.assert_array_equal(a, n * np.arange(4000).reshape(4, 1000) + sum(range(n)))
        np.testing.assert_array_equal(x, np.full(5001, float(n)))
        assert np.all(b[1000:3000] == sum(range(n)))


def test_the_scratch_window_grows_with_the_message():
    def fn(comm):
        sizes = [10, 300000, 10, 3 << 20]
        out = []
        for count in sizes:
            x = np.full(count, comm.rank + 1, dtype=np.int64)
            comm.all_reduce(x, algorithm="direct")
            out.append(bool(np.all(x == sum(range(1, comm.size + 1)))))
        return out

    # without single-copy reads, so that the large call goes through the window too
    assert run_world(fn, 2, "shm", timeout=120, cross_memory=False) == [[True] * 4] * 2


def test_direct_refused_where_there_are_no_shared_windows():
    def fn(comm):
        with pytest.raises(collectives.UnsupportedError, match="shared windows"):
            comm.all_reduce(np.ones(4), algorithm="direct")
        with pytest.raises(collectives.UnsupportedError, match="shared windows"):
            comm.broadcast(np.ones(4), algorithm="direct")
        with pytest.raises(collectives.UnsupportedError, match="shared windows"):
            comm.reduce(np.ones(4), algorithm="direct")
        with pytest.raises(collectives.UnsupportedError, match="shared windows"):
            comm.gather(np.ones(4), algorithm="direct")
        with pytest.raises(collectives.UnsupportedError, match="shared windows"):
            comm.scatter(np.ones(4), np.empty(2), algorithm="direct")
        with pytest.raises(collectives.UnsupportedError,
                           match="all_reduce, reduce_scatter, all_gather, broadcast, reduce, all_to_all, gather, scatter, not all_to_all_v"):
            comm.all_to_all_v(np.ones(2), [1, 1], [1, 1], algorithm="direct")
        return comm.alloc(3).tolist()

    assert run_world(fn, 2, "tcp", timeout=60) == [[0.0, 0.0, 0.0]] * 2


@pytest.mark.parametrize("count", [1000, 100000], ids=["small window", "two-shot"])
def test_a_registered_buffer_can_be_rewritten_as_soon_as_the_call_returns(count):
    """Peers read a comm.alloc buffer in place, so the call must not return before they
    are done with it: rewriting it at once must never leak into their results."""

    def fn(comm):
        buf = comm.alloc(count, np.float64)
        bad = 0
        for i in range(40):
            buf[...] = comm.rank + i
            comm.all_reduce(buf)
            expected = sum(range(comm.size)) + comm.size * i
            bad += int(np.count_nonzero(buf != expected))
            buf[...] = -1.0  # what a peer would read if it were still copying
        return bad

    assert run_world(fn, 3, "shm", timeout=120) == [0, 0, 0]


def test_small_all_reduces_back_to_back_at_uneven_speeds_never_mix_calls():
    """Small all-reduces reuse two halves of one window with a single flag per call: a
    rank that runs ahead must never overwrite the half a slow peer is still reading."""

    def fn(comm):
        rng = np.random.default_rng(comm.rank)
        bad = 0
        for i in range(300):
            x = np.full(1 + i % 50, comm.rank * 1000 + i, dtype=np.int64)
            if rng.random() < 0.1:
                time.sleep(rng.random() * 2e-3)  # fall behind now and then
            comm.all_reduce(x)
            bad += int(np.count_nonzero(x != sum(r * 1000 + i for r in range(comm.size))))
        return bad

    assert run_world(fn, 3, "shm", timeout=120) == [0, 0, 0]


def _checked_all_reduce(comm, i, round_, dtype, n, op):
    """All-reduce shape ``i``'s inputs, in place or (every other call) into ``out=``;
    returns (right, every rank's input, my expected result)."""
    rop = ReduceOp.parse(op)
    inputs = [rank_input(r, n, dtype, rop, seed=i) for r in range(comm.size)]
    expected = reference_all_reduce(inputs, rop)[comm.rank]
    x = inputs[comm.rank].copy()
    if (i + round_) % 2:
        out = np.empty_like(x)
        comm.all_reduce(x, op=op, out=out)
        return np.array_equal(x, inputs[comm.rank]) and np.array_equal(out, expected), inputs, expected
    comm.all_reduce(x, op=op)
    return np.array_equal(x, expected), inputs, expected


def test_repeated_small_all_reduces_of_many_shapes_keep_every_result_right():
    """The fast path keeps one plan per (dtype, size, op) and drops them all past
    MAX_PLANS: shapes interleaved and repeated, more of them than are kept, each
    call checked against the reference (AVG divided, into ``out=`` too); reduce_scatter
    of the same shapes likewise."""
    from collectives.plans.base import MAX_PLANS

    shapes = [(np.dtype(dt), n, op) for dt in (np.float32, np.int64, np.float64) for n in (1, 2, 7, 300, 303)
              for op in (ReduceOp.SUM, ReduceOp.MAX, ReduceOp.AVG, "min", "prod")]
    shapes += [(np.dtype(np.float32), n, ReduceOp.SUM) for n in range(8, 8 + MAX_PLANS)]
    assert len(shapes) > MAX_PLANS

    def fn(comm):
        bad = []
        for round_ in range(3):
            for i, (dtype, n, op) in enumerate(shapes):
                ok, inputs, expected = _checked_all_reduce(comm, i, round_, dtype, n, op)
                # reduce_scatter of the same shape: my block of the reduction
                block = slice(comm.rank * (n // comm.size), (comm.rank + 1) * (n // comm.size))
                if n % comm.size == 0:
                    got = comm.reduce_scatter(inputs[comm.rank], op=op)
                    ok = ok and np.array_equal(got, expected[block])
                if not ok:
                    bad.append((round_, str(dtype), n, str(op)))
        return bad, len(comm._plans) <= MAX_PLANS, 0 < sum(k[0] == "reduce_scatter" for k in comm._plans) <= MAX_PLANS

    assert run_world(fn, 3, "shm", timeout=180) == [([], True, True)] * 3


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
def test_repeated_short_all_reduces_off_shared_memory_keep_every_result_right(transport):
    """Without a shared window, short all_reduces keep their schedule per (dtype, size,
    op) and run it from the fast path: more shapes than are kept, interleaved, repeated,
    in place and into ``out=``, each checked; a shape above the short limit keeps none."""
    from collectives.plans.scheduled import AllReduce
    from collectives.algorithms.registry import SHORT_ALL_REDUCE_BYTES
    from collectives.plans.base import MAX_PLANS

    shapes = [(np.dtype(dt), n, op) for dt in (np.float32, np.int64) for n in (1, 7, 300)
              for op in (ReduceOp.SUM, ReduceOp.MAX, ReduceOp.AVG, "prod")]
    shapes += [(np.dtype(np.int32), n, ReduceOp.SUM) for n in range(8, 8 + MAX_PLANS)]
    shapes += [(np.dtype(np.float64), SHORT_ALL_REDUCE_BYTES // 8 + 1, ReduceOp.SUM)]

    def fn(comm):
        bad = []
        for round_ in range(2):
            for i, (dtype, n, op) in enumerate(shapes):
                if not _checked_all_reduce(comm, i, round_, dtype, n, op)[0]:
                    bad.append((round_, str(dtype), n, str(op)))
        kept = [p for k, p in comm._plans.items() if k[0] == "all_reduce"]
        return bad, 0 < len(kept) <= MAX_PLANS and all(type(p) is AllReduce for p in kept)

    assert run_world(fn, 3, transport, timeout=180) == [([], True)] * 3


def test_repeated_small_all_gathers_of_many_shapes_keep_every_block_right():
    """The fast path keeps one all-gather plan per (dtype, size), more shapes than are
    kept, in place and not, each call checked."""
    from collectives.plans.base import MAX_PLANS

    shapes = [(np.dtype(dt), n) for dt in (np.float32, np.int16, np.float64) for n in (1, 3, 1000)]
    shapes += [(np.dtype(np.int32), n) for n in range(5, 5 + MAX_PLANS)]

    def fn(comm):
        bad = []
        for round_ in range(3):
            for i, (dtype, n) in enumerate(shapes):
                want = np.concatenate([rank_input(r, n, dtype, seed=i) for r in range(comm.size)])
                out = np.zeros(n * comm.size, dtype)
                if (i + round_) % 2:
                    x = out[comm.rank * n : (comm.rank + 1) * n]
                    x[...] = rank_input(comm.rank, n, dtype, seed=i)
                else:
                    x = rank_input(comm.rank, n, dtype, seed=i)
                if comm.all_gather(x, out) is not out or not np.array_equal(out, want):
                    bad.append((round_, str(dtype), n))
        return bad, 0 < sum(k[0] == "all_gather" for k in comm._plans) <= MAX_PLANS

    assert run_world(fn, 3, "shm", timeout=180) == [([], True)] * 3


def _reduced(size, k, dtype, op):
    """The reference reduction of ``size`` ranks' inputs of ``k * size`` elements (rank r's block
    is ``[r * k : (r + 1) * k]``): computed once per case, not again for every rank checked."""
    return reference_all_reduce([rank_input(q, k * size, np.dtype(dtype), op) for q in range(size)], op)[0]


@pytest.mark.parametrize("size", [2, 3, 4])
def test_direct_reduce_scatter_matches_the_reference(size):
    counts = [0, 1, 7, 5000, 70001]  # per-rank block sizes
    ops = [ReduceOp.SUM, ReduceOp.MAX, ReduceOp.AVG, ReduceOp.BXOR]

    def fn(comm):
        assert comm._planner.algorithm("reduce_scatter", None, 1 << 20) == "direct"
        out = []
        for op in ops:
            dtype = np.dtype(np.int64 if op is ReduceOp.BXOR else np.float64)
            for k in counts:
                x = rank_input(comm.rank, k * comm.size, dtype, op)
                out.append(comm.reduce_scatter(x, op=op).copy())
                # in place, nccl-tests style: out is this rank's block of x
                y = rank_input(comm.rank, k * comm.size, dtype, op)
                comm.reduce_scatter(y, out=y[comm.rank * k : (comm.rank + 1) * k], op=op)
                out.append(y[comm.rank * k : (comm.rank + 1) * k].copy())
        # a registered input
        a = comm.alloc(3 * comm.size, np.int64)
        a[...] = np.arange(3 * comm.size) + comm.rank
        out.append(comm.reduce_scatter(a).copy())
        return out

    results = run_world(fn, size, "shm", timeout=120)
    fulls = {(op, k): _reduced(size, k, np.int64 if op is ReduceOp.BXOR else np.float64, op) for op in ops for k in counts}
    for r in range(size):
        i = 0
        for op in ops:
            for k in counts:
                full = fulls[op, k]
                for _ in range(2):
                    np.testing.assert_allclose(results[r][i], full[r * k : (r + 1) * k], rtol=1e-12,
                                               err_msg=f"{op} k={k} rank {r}")
                    i += 1
        want = sum(np.arange(3 * size) + q for q in range(size))[3 * r : 3 * r + 3]
        np.testing.assert_array_equal(results[r][i], want)


@pytest.mark.parametrize("cores", [2, 64], ids=["oversubscribed: the halves", "a core each: the scratch window"])
def test_reduce_scatters_beyond_half_bytes_take_the_halves_where_ranks_outnumber_cores(cores, monkeypatch):
    """Up to REDUCE_SCATTER_HALVES_CROWDED_BYTES where ranks outnumber cores (else two shots' first
    through the scratch window): every dtype and op the route takes, out of place and in place,
    each block the reference's, and the reduction the same bits whether a rank reads it back or
    computes it again."""
    from collectives.engines import direct, small
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: cores)
    routes = []
    for name in ("reduce_scatter", "reduce_scatter_by_reads"):
        original = getattr(direct, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            routes.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(direct, name, counted)  # the forked ranks inherit it
    size = 4
    limit = direct_routes.REDUCE_SCATTER_HALVES_CROWDED_BYTES
    cases = [(np.float32, ReduceOp.SUM), (np.float64, ReduceOp.AVG), (np.int32, ReduceOp.MAX),
             (np.int64, ReduceOp.BXOR), (np.float32, ReduceOp.PROD), (np.int16, ReduceOp.MIN)]

    def fn(comm):
        out = []
        for dtype, op in cases:
            dtype = np.dtype(dtype)
            for nbytes in (small.HALF_BYTES + 64 * dtype.itemsize * comm.size, limit):
                k = nbytes // dtype.itemsize // comm.size
                x = rank_input(comm.rank, k * comm.size, dtype, op)
                out.append(comm.reduce_scatter(x, op=op).copy())
                comm.reduce_scatter(x, out=x[comm.rank * k : (comm.rank + 1) * k], op=op)  # in place
                out.append(x[comm.rank * k : (comm.rank + 1) * k].copy())
        return out, comm._context.windows.small_window.oversubscribed, routes

    results = run_world(fn, size, "shm", timeout=120)
    fulls = {}  # every rank's block of one reduction, computed once
    for dtype, op in cases:
        for nbytes in (small.HALF_BYTES + 64 * np.dtype(dtype).itemsize * size, limit):
            fulls[dtype, op, nbytes] = _reduced(size, nbytes // np.dtype(dtype).itemsize // size, dtype, op)
    for r in range(size):
        blocks, crowded, taken = results[r]
        assert crowded == (cores < size)
        assert taken == ([] if crowded else ["reduce_scatter"] * 2 * 2 * len(cases))
        i = 0
        for dtype, op in cases:
            dtype = np.dtype(dtype)
            for nbytes in (small.HALF_BYTES + 64 * dtype.itemsize * size, limit):
                k = nbytes // dtype.itemsize // size
                want = fulls[dtype.type, op, nbytes][r * k : (r + 1) * k]
                np.testing.assert_allclose(blocks[i], want, rtol=1e-5, err_msg=f"{op} {dtype} {nbytes} rank {r}")
                np.testing.assert_array_equal(blocks[i + 1], blocks[i])  # in place: the same bits
                i += 2


def _gathered(size, k, dtype):
    return np.concatenate([rank_input(q, k, dtype, ReduceOp.SUM) for q in range(size)])


@pytest.mark.parametrize("size", [2, 3, 4])
def test_direct_all_gather_reads_every_block_straight_from_its_owner(size):
    counts = [0, 1, 7, 5000, 70001, 300000]  # per-rank block sizes (the last ones in 4 MiB pieces)
    dtypes = [np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.complex128)]
    # what every rank must end with, made before the fork; each rank compares its own results
    # (sending them back, up to 250 MB, took longer than the gathers)
    wanted = {(dtype, k): _gathered(size, k, dtype) for dtype in dtypes for k in counts}

    def fn(comm):
        assert comm._planner.algorithm("all_gather", None, 1 << 20) == "direct"
        wrong = []
        for dtype in dtypes:
            for k in counts:
                x = rank_input(comm.rank, k, dtype, ReduceOp.SUM)
                got = comm.all_gather(x, algorithm="direct")
                # in place, nccl-tests style: x is this rank's block of out
                y = np.zeros(k * comm.size, dtype)
                y[comm.rank * k : (comm.rank + 1) * k] = rank_input(comm.rank, k, dtype, ReduceOp.SUM)
                comm.all_gather(y[comm.rank * k : (comm.rank + 1) * k], y, algorithm="direct")
                for how, result in (("out of place", got), ("in place", y)):
                    try:
                        np.testing.assert_array_equal(result, wanted[dtype, k],
                                                      err_msg=f"{dtype} k={k} {how} rank {comm.rank}")
                    except AssertionError as exc:
                        wrong.append(str(exc))
        return wrong, comm._context.windows.memory is not None

    results = run_world(fn, size, "shm", timeout=120)
    for wrong, single_copy in results:
        assert single_copy, "process_vm_readv works on this machine, so the probe must say so"
        assert not wrong, "\n".join(wrong)


def test_repeated_all_gathers_by_reads_take_each_calls_own_buffers(monkeypatch):
    """A shape gathered by reads keeps its plan (its blocks), never the buffers: every
    call reads the addresses its peers post for it, in place and not, whatever arrays
    they pass this time."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 64)  # a core each: GATHER_READS_BYTES go by reads

    lo = direct_routes.GATHER_READS_BYTES
    shapes = [(lo // 4, np.float32), (3 * direct_routes.GATHER_BYTES // 8 + 1, np.int64)]  # from the reads' size; beyond the window

    def fn(comm):
        bad = []
        for i in range(6):
            for k, dtype in shapes:
                x = (np.arange(k) % 1000 + 7 * comm.rank + i).astype(dtype)
                want = np.concatenate([(np.arange(k) % 1000 + 7 * r + i).astype(dtype) for r in range(comm.size)])
                out = comm.all_gather(x)
                inplace = np.zeros(k * comm.size, dtype)
                inplace[comm.rank * k : (comm.rank + 1) * k] = x
                comm.all_gather(inplace[comm.rank * k : (comm.rank + 1) * k], inplace)
                if not (np.array_equal(out, want) and np.array_equal(inplace, want)):
                    bad.append((i, k))
        return bad, sorted(type(plan.route).__name__ for key, plan in comm._plans.items() if key[0] == "all_gather")

    assert run_world(fn, 3, "shm", timeout=120) == [([], ["ExchangeByReads"] * 2)] * 3


def test_all_gather_input_can_be_rewritten_as_soon_as_the_call_returns():
    """Peers read this rank's block out of its memory: the call must not return before
    they are done, or rewriting the buffer at once would leak into their results."""

    def fn(comm):
        k = 200000
        x = np.empty(k, np.float64)
        out = np.empty(k * comm.size, np.float64)
        bad = 0
        for i in range(30):
            x[...] = comm.rank + 10 * i
            comm.all_gather(x, out)
            x[...] = -1.0
            out_block = out.reshape(comm.size, k)
            bad += sum(int(np.count_nonzero(out_block[q] != q + 10 * i)) for q in range(comm.size))
            out[...] = -2.0  # what a peer would read if it were still copying
        return bad

    assert run_world(fn, 3, "shm", timeout=120) == [0, 0, 0]


@pytest.mark.parametrize("how", ["turned off", "refused by the kernel"])
def test_all_gather_falls_back_to_copies_where_single_copy_reads_are_not_allowed(how, monkeypatch):
    from collectives.errors import TransportError
    from collectives.transports import cma

    settings = {}
    if how == "turned off":
        settings["cross_memory"] = False
    else:

        def refuse(pid, address, into, peer):
            raise TransportError("process_vm_readv: EPERM (Operation not permitted)", peer=peer)

        monkeypatch.setattr(cma, "read", refuse)  # the forked ranks inherit it

    def fn(comm):
        x = np.full(1000, comm.rank, np.int32)
        got = comm.all_gather(x)
        got2 = comm.all_gather(x, algorithm="direct")
        return comm._context.windows.memory is None, got.tolist() == got2.tolist() == np.repeat(np.arange(comm.size), 1000).tolist()

    assert run_world(fn, 3, "shm", timeout=120, **settings) == [(True, True)] * 3


@pytest.mark.parametrize("route", ["eager slots", "pipelined slots", "window halves"])
def test_small_broadcasts_from_a_root_that_never_waits_never_overwrite_unread_data(route):
    """A broadcast root reads nothing, so only its check before reusing a slot (up to
    EAGER_BROADCAST_SLOTS or PIPELINED_BROADCAST_SLOTS calls ahead) or a half keeps it
    from rewriting data a slow rank has not read yet; small all_reduces in between keep
    their own count."""
    from collectives.engines import small

    lo = {"eager slots": 1, "pipelined slots": small.EAGER_BROADCAST_BYTES // 8 + 1,
          "window halves": small.PIPELINED_BROADCAST_BYTES // 8 + 1}[route]  # int64 elements
    hi = lo + 40
    assert (hi * 8 <= small.EAGER_BROADCAST_BYTES) == (route == "eager slots")
    assert (lo * 8 > small.EAGER_BROADCAST_BYTES and hi * 8 <= small.PIPELINED_BROADCAST_BYTES) == (route == "pipelined slots")
    assert hi * 8 <= small.BROADCAST_BYTES

    def fn(comm):
        rng = np.random.default_rng(comm.rank)
        bad = 0
        for i in range(300):
            root = 0 if i < 200 else i % comm.size
            x = np.full(lo + i % (hi - lo), i if comm.rank == root else -1, dtype=np.int64)
            if comm.rank != root and rng.random() < 0.1:
                time.sleep(rng.random() * 2e-3)
            if i == 101 and comm.rank == 2:
                time.sleep(0.3)  # the root fills every slot and must wait for me
            comm.broadcast(x, root)
            bad += int(np.count_nonzero(x != i))
            if i % 50 == 0:  # between them the root may run ahead as far as the slots allow
                y = np.full(3, comm.rank, dtype=np.int64)
                comm.all_reduce(y)
                bad += int(np.count_nonzero(y != sum(range(comm.size))))
        return bad

    assert run_world(fn, 3, "shm", timeout=120) == [0, 0, 0]


@pytest.mark.parametrize("size", [2, 3, 4])
def test_small_collectives_through_the_small_window_match_the_reference(size):
    ops = [ReduceOp.SUM, ReduceOp.MAX, ReduceOp.AVG, ReduceOp.BXOR]
    counts = [0, 1, 5, 1000, 20000]  # per-rank blocks within the small window (all_gather: to 32 KiB)

    def fn(comm):
        out = []
        for k in counts:
            for op in ops:
                dtype = np.dtype(np.int32 if op is ReduceOp.BXOR else np.float64)
                x = rank_input(comm.rank, k * comm.size, dtype, op)
                out.append(comm.reduce_scatter(x, op=op, algorithm="direct").copy())
            x = rank_input(comm.rank, k, np.dtype(np.float32), ReduceOp.SUM)
            out.append(comm.all_gather(x, algorithm="direct").copy())
            for root in range(comm.size):
                y = rank_input(root, k, np.dtype(np.int16), ReduceOp.SUM) if comm.rank == root else np.zeros(k, np.int16)
                comm.broadcast(y, root, algorithm="direct")
                out.append(y)
        return out

    results = run_world(fn, size, "shm", timeout=120)
    fulls = {(k, op): _reduced(size, k, np.int32 if op is ReduceOp.BXOR else np.float64, op) for k in counts for op in ops}
    gathered = {k: _gathered(size, k, np.dtype(np.float32)) for k in counts}
    for r in range(size):
        i = 0
        for k in counts:
            for op in ops:
                full = fulls[k, op]
                np.testing.assert_allclose(results[r][i], full[r * k : (r + 1) * k], rtol=1e-12, err_msg=f"{op} k={k}")
                i += 1
            np.testing.assert_array_equal(results[r][i], gathered[k])
            i += 1
            for root in range(size):
                np.testing.assert_array_equal(results[r][i], rank_input(root, k, np.dtype(np.int16), ReduceOp.SUM))
                i += 1


@pytest.fixture
def reads_from_small_sizes(monkeypatch):
    """All-reduces by reads from 64 KiB (the small window up to 16 KiB), in 4 KiB steps,
    so that small tests walk many steps (the forked ranks inherit the patched constants)."""
    from collectives.engines import windows as window_engine
    from collectives.engines import direct, small

    for name in ("HALF_BYTES", "ALL_REDUCE_HALVES_BYTES"):
        monkeypatch.setattr(small, name, 16 << 10)
    monkeypatch.setattr(direct_routes, "READS_FROM_BYTES", 64 << 10)
    monkeypatch.setattr(window_engine, "DIRECT_STEP_BYTES", 4 << 10)
    calls = []
    real = direct.all_reduce_by_reads

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(direct, "all_reduce_by_reads", counted)
    real_rs = direct.reduce_scatter_by_reads

    def counted_rs(*args, **kwargs):
        calls.append(2)
        return real_rs(*args, **kwargs)

    monkeypatch.setattr(direct, "reduce_scatter_by_reads", counted_rs)
    return calls


@pytest.mark.parametrize("size", [2, 3, 4])
def test_large_all_reduce_by_reads_matches_the_reference_in_place_and_into_out(size, reads_from_small_sizes):
    ops = [ReduceOp.SUM, ReduceOp.MAX, ReduceOp.AVG, ReduceOp.BXOR]
    counts = [20001, 70001]  # above the (patched) threshold, blocks of uneven length

    def fn(comm):
        got = []
        for op in ops:
            dtype = np.dtype(np.int32 if op is ReduceOp.BXOR else np.float64)
            for count in counts:
                x = rank_input(comm.rank, count, dtype, op)
                kept = x.copy()
                out = np.full(count, -7, dtype)
                assert comm.all_reduce(x, op=op, out=out) is out
                assert np.array_equal(x, kept)  # x is only read
                comm.all_reduce(x, op=op)
                got += [out, x]
        return got, len(reads_from_small_sizes)

    results = run_world(fn, size, "shm", timeout=120)
    i = 0
    for op in ops:
        dtype = np.dtype(np.int32 if op is ReduceOp.BXOR else np.float64)
        for count in counts:
            want = reference_all_reduce([rank_input(r, count, dtype, op) for r in range(size)], op)[0]
            for r in range(size):
                for j in (i, i + 1):
                    np.testing.assert_allclose(results[r][0][j], want, rtol=1e-12, err_msg=f"{op} {count} rank {r}")
                    assert results[r][0][j].tobytes() == results[0][0][j].tobytes()
            i += 2
    assert [calls for _, calls in results] == [2 * len(ops) * len(counts)] * size  # every call went by reads


def test_all_reduce_by_reads_buffers_can_be_rewritten_as_soon_as_the_call_returns(reads_from_small_sizes):
    """Peers read this rank's x and out: the call must not return before they are done."""

    def fn(comm):
        k = 50000
        bad = 0
        x, out = np.empty(k), np.empty(k)
        for i in range(30):
            x[...] = comm.rank + 10 * i
            if i % 2:
                comm.all_reduce(x, out=out)
            else:
                comm.all_reduce(x)
                out[...] = x
            x[...] = -1.0  # what a peer would read if it were still copying
            bad += int(np.count_nonzero(out != sum(range(comm.size)) + comm.size * 10 * i))
            out[...] = -2.0
        return bad, len(reads_from_small_sizes)

    assert run_world(fn, 3, "shm", timeout=120) == [(0, 30)] * 3


def test_all_reduce_by_reads_gives_way_where_any_rank_passes_a_registered_buffer(reads_from_small_sizes):
    """comm.alloc buffers take the window scheme (nothing to copy there); the ranks agree
    on the scheme even when only some of them pass such a buffer."""

    def fn(comm):
        k = 40000
        registered = comm.alloc(k, np.float64)
        x = registered if comm.rank == 1 else np.empty(k)
        x[...] = comm.rank + 1.0
        comm.all_reduce(x)
        mixed_calls = len(reads_from_small_sizes)
        y = np.full(k, comm.rank + 1.0)
        comm.all_reduce(y)
        return x.tolist() == y.tolist() == [comm.size * (comm.size + 1) / 2] * k, mixed_calls, len(reads_from_small_sizes)

    assert run_world(fn, 3, "shm", timeout=120) == [(True, 0, 1)] * 3


def test_all_reduce_falls_back_to_the_window_where_reads_are_turned_off(reads_from_small_sizes):
    def fn(comm):
        x = np.full(50000, comm.rank, np.int64)
        out = np.empty_like(x)
        comm.all_reduce(x, out=out)
        return comm._context.windows.memory is None, bool(np.all(out == sum(range(comm.size)))), len(reads_from_small_sizes)

    assert run_world(fn, 3, "shm", timeout=120, cross_memory=False) == [(True, True, 0)] * 3


@pytest.mark.parametrize("cores", [2, 64], ids=["oversubscribed: all read", "a core each: the root writes too"])
@pytest.mark.parametrize("size", [2, 3, 4])
def test_direct_broadcast_from_every_root_is_single_copy(size, cores, monkeypatch):
    from collectives.engines import small
    from collectives.transports import progress

    monkeypatch.setattr(small, "BROADCAST_BYTES", 16 << 10)  # the single-copy path from 16 KiB
    monkeypatch.setattr(direct_routes, "BROADCAST_HALVES_CROWDED_BYTES", 0)  # even where ranks outnumber cores
    monkeypatch.setattr(progress, "usable_cpus", lambda: cores)

    def fn(comm):
        bad = _broadcasts_from_every_root(comm, [(count, dtype) for count in (20001, 70003) for dtype in (np.uint8, np.float64)])
        return bad, comm._context.windows.memory is not None

    assert run_world(fn, size, "shm", timeout=120) == [([], True)] * size


def _broadcasts_from_every_root(comm, shapes):
    """Direct broadcasts of every (count, dtype) from every root: those whose result on this rank
    is not the root's."""
    bad = []
    for count, dtype in shapes:
        for root in range(comm.size):
            want = (np.arange(count) * 7 + root).astype(dtype)
            x = want.copy() if comm.rank == root else np.zeros(count, dtype)
            comm.broadcast(x, root, algorithm="direct")
            if not np.array_equal(x, want):
                bad.append((count, np.dtype(dtype).name, root))
    return bad


@pytest.mark.parametrize("size", [3, 4])
def test_broadcasts_beyond_the_halves_go_through_them_piece_by_piece_where_ranks_outnumber_cores(size, monkeypatch):
    """Every piece one small call through the halves: every size (whole pieces and a last short
    one), every dtype and every root gives the root's bits on every rank, back to back."""
    from collectives.engines import small
    from collectives.transports import progress

    piece = 64 << 10
    sizes = (small.PIPELINED_BROADCAST_BYTES + 8, 300000, 8 * piece)  # beyond the slots
    monkeypatch.setattr(small, "BROADCAST_BYTES", piece)
    monkeypatch.setattr(progress, "usable_cpus", lambda: 2)
    calls = []
    whole = small.BroadcastPlan.__call__
    monkeypatch.setattr(small.BroadcastPlan, "__call__", lambda self, *a: calls.append(self.nbytes) or whole(self, *a))

    def fn(comm):
        shapes = [(nbytes // np.dtype(dtype).itemsize, dtype) for nbytes in sizes for dtype in (np.uint8, np.int32, np.float64)]
        return _broadcasts_from_every_root(comm, shapes), comm._context.windows.small_window.oversubscribed, max(calls), len(calls)

    pieces = sum(-(-nbytes // piece) for nbytes in sizes) * 3 * size
    assert run_world(fn, size, "shm", timeout=120) == [([], True, piece, pieces)] * size


def test_direct_broadcast_buffers_can_be_rewritten_as_soon_as_the_call_returns(monkeypatch):
    """Receivers read the root's x and the root writes into theirs: neither may return
    before the other side is done with its buffer."""
    from collectives.engines import small
    from collectives.transports import progress

    monkeypatch.setattr(small, "BROADCAST_BYTES", 16 << 10)
    monkeypatch.setattr(progress, "usable_cpus", lambda: 64)  # the root writes too

    def fn(comm):
        k = 100000
        x = np.empty(k, np.int64)
        bad = 0
        for i in range(40):
            root = i % comm.size
            x[...] = i if comm.rank == root else -1
            comm.broadcast(x, root, algorithm="direct")
            bad += int(np.count_nonzero(x != i))
            x[...] = -2  # what the others would see if they were still copying
        return bad

    assert run_world(fn, 3, "shm", timeout=120) == [0, 0, 0]


def test_broadcasts_up_to_the_window_size_and_just_above_it():
    """Broadcast takes the small window up to BROADCAST_BYTES (larger than the other
    collectives' limit) and single-copy reads above it."""
    from collectives.engines import small

    def fn(comm):
        bad = []
        for nbytes in (small.HALF_BYTES + 1, small.BROADCAST_BYTES - 3, small.BROADCAST_BYTES, small.BROADCAST_BYTES + 5):
            for root in range(comm.size):
                want = (np.arange(nbytes) * 3 + root).astype(np.uint8)
                x = want.copy() if comm.rank == root else np.zeros(nbytes, np.uint8)
                comm.broadcast(x, root)
                if not np.array_equal(x, want):
                    bad.append((nbytes, root))
        return bad

    assert run_world(fn, 3, "shm", timeout=120) == [[]] * 3


def test_ranks_that_see_different_cpu_sets_settle_on_one_view_of_the_host(monkeypatch):
    """A launcher may pin ranks to different CPU sets; algorithms that choose by
    oversubscription (the broadcast root writing or not) must choose alike everywhere."""
    from collectives.engines import small
    from collectives.transports import progress

    monkeypatch.setattr(small, "BROADCAST_BYTES", 16 << 10)

    def fn(comm):
        progress.usable_cpus = (lambda: 64) if comm.rank == 0 else (lambda: 1)
        x = np.arange(50000, dtype=np.int64) if comm.rank == 1 else np.zeros(50000, np.int64)
        comm.broadcast(x, 1)
        return comm._context.windows.small_window.oversubscribed, bool(np.array_equal(x, np.arange(50000)))

    assert run_world(fn, 3, "shm", timeout=120) == [(True, True)] * 3


@pytest.mark.parametrize("cores", [2, 64], ids=["oversubscribed", "a core each"])
def test_all_gather_through_the_window_up_to_its_limit_and_by_reads_above(cores, monkeypatch):
    """Where every rank has a core, all-gather takes the window below GATHER_READS_BYTES and
    single-copy reads from there; where ranks outnumber cores, the window up to gather_bytes
    (512 KiB) and reads above. Both give every block in rank order, in place and not."""
    from collectives.engines import exchange_reads, small
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: cores)
    monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")  # so every window call passes through resume(), counted
    routes = []
    for owner, attribute, name in ((small.AllGatherPlan, "resume", "window"),
                                   (exchange_reads.ExchangeByReads, "__call__", "reads")):
        original = getattr(owner, attribute)

        def counted(*args, _original=original, _name=name, **kwargs):
            routes.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, attribute, counted)  # the forked ranks inherit it
    lo = direct_routes.GATHER_READS_BYTES
    sizes = (lo - 8, lo, direct_routes.GATHER_BYTES_OVERSUBSCRIBED, direct_routes.GATHER_BYTES_OVERSUBSCRIBED + 8,
             direct_routes.GATHER_BYTES, direct_routes.GATHER_BYTES + 8)

    def fn(comm):
        bad = []
        window_limit = small.gather_bytes(_small_window(comm))
        for nbytes in sizes:
            k = nbytes // 8
            x = np.arange(k, dtype=np.int64) + 1000 * comm.rank
            out = np.full(k * comm.size, -1, np.int64)
            comm.all_gather(x, out)
            inplace = np.full(k * comm.size, -1, np.int64)
            inplace[comm.rank * k : (comm.rank + 1) * k] = x
            comm.all_gather(inplace[comm.rank * k : (comm.rank + 1) * k], inplace)
            want = np.concatenate([np.arange(k, dtype=np.int64) + 1000 * r for r in range(comm.size)])
            if not (np.array_equal(out, want) and np.array_equal(inplace, want)):
                bad.append(nbytes)
        return window_limit, bad, routes

    limit = direct_routes.GATHER_BYTES_OVERSUBSCRIBED if cores < 3 else direct_routes.GATHER_BYTES
    want_routes = []
    for nbytes in sizes:
        route = "window" if nbytes <= limit and (cores < 3 or nbytes < lo) else "reads"
        want_routes += [route, route]
    assert run_world(fn, 3, "shm", timeout=120) == [(limit, [], want_routes)] * 3


def test_in_place_all_gather_through_the_window_leaves_my_block_where_it_is(monkeypatch):
    """In place, from IN_PLACE_SKIP_BYTES, my block is already in ``out``: one copy in and
    p - 1 out, where out of place (or below the size) takes p out."""
    from collectives.engines import small
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 2)  # ranks outnumber cores: the window up to 512 KiB
    copies = []
    original = small.copy_array

    def counted(dst, src):
        copies.append(src.nbytes)
        original(dst, src)

    monkeypatch.setattr(small, "copy_array", counted)
    # The Python plan's copies are counted here; the C plan (engines/_small_c.c) never copies
    # a block onto itself, at any size (tests/engines/test_small_native.py checks its results).
    monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")

    def fn(comm):
        got = []
        for nbytes in (small.IN_PLACE_SKIP_BYTES - 8, small.IN_PLACE_SKIP_BYTES):
            k = nbytes // 8
            for in_place in (False, True):
                out = np.full(k * comm.size, -1, np.int64)
                x = out[comm.rank * k : (comm.rank + 1) * k] if in_place else np.empty(k, np.int64)
                x[...] = comm.rank
                comm.all_gather(x, out)  # once to make the window, then counted
                del copies[:]
                comm.all_gather(x, out)
                ok = np.array_equal(out, np.repeat(np.arange(comm.size), k))
                got.append((nbytes, in_place, len(copies), ok))
        return got

    p = 3
    skip = small.IN_PLACE_SKIP_BYTES
    want = [(skip - 8, False, p + 1, True), (skip - 8, True, p + 1, True), (skip, False, p + 1, True), (skip, True, p, True)]
    assert run_world(fn, p, "shm", timeout=120) == [want] * p


@pytest.mark.parametrize("size", [2, 3, 4])
def test_large_reduce_scatter_by_reads_matches_the_reference_in_place_and_not(size, reads_from_small_sizes):
    ops = [ReduceOp.SUM, ReduceOp.MIN, ReduceOp.AVG, ReduceOp.BXOR]
    k = 20011  # elements per rank: blocks of several 4 KiB steps and a ragged end

    def fn(comm):
        got = []
        for op in ops:
            dtype = np.dtype(np.int64 if op is ReduceOp.BXOR else np.float64)
            x = rank_input(comm.rank, k * comm.size, dtype, op)
            kept = x.copy()
            out = np.full(k, -7, dtype)
            assert comm.reduce_scatter(x, out, op=op) is out
            assert np.array_equal(x, kept)
            mine = x[comm.rank * k : (comm.rank + 1) * k]  # in place, nccl-tests style
            comm.reduce_scatter(x, mine, op=op)
            got += [out, mine.copy()]
        return got, reads_from_small_sizes.count(2)

    results = run_world(fn, size, "shm", timeout=120)
    for i, op in enumerate(ops):
        dtype = np.dtype(np.int64 if op is ReduceOp.BXOR else np.float64)
        want = reference_all_reduce([rank_input(r, k * size, dtype, op) for r in range(size)], op)[0]
        for r in range(size):
            for j in (2 * i, 2 * i + 1):
                np.testing.assert_allclose(results[r][0][j], want[r * k : (r + 1) * k], rtol=1e-12, err_msg=f"{op} rank {r}")
    assert [calls for _, calls in results] == [2 * len(ops)] * size  # every call went by reads


def test_reduce_scatter_by_reads_input_can_be_rewritten_as_soon_as_the_call_returns(reads_from_small_sizes):
    def fn(comm):
        k = 20000
        x = np.empty(k * comm.size)
        out = np.empty(k)
        bad = 0
        for i in range(30):
            x[...] = comm.rank + 10 * i
            comm.reduce_scatter(x, out)
            x[...] = -1.0  # what a peer would read if it were still reading
            bad += int(np.count_nonzero(out != sum(range(comm.size)) + comm.size * 10 * i))
        return bad, reads_from_small_sizes.count(2)

    assert run_world(fn, 3, "shm", timeout=120) == [(0, 30)] * 3


def _small_window(comm):
    """The communicator's small window, opened (collectively) if it is not yet."""
    from collectives.engines.call import Call

    call = Call(60.0)
    call.name, call.deadline = "all_gather", time.monotonic() + 60
    return comm._context.windows.small(call)


def test_every_flag_of_the_window_has_a_word_of_its_own():
    # The flags are numbered by hand across direct.py, small.py and shm_window.py; a word
    # shared by two flags (say the broadcast byte counts growing into CPU) corrupts both.
    from collectives.engines import direct, small
    from collectives.transports import shm_window

    words = [direct.IN, direct.RED, direct.GOT, direct.SEG, direct.OFF, direct.SMALL, direct.ADDR, direct.POSTED,
             direct.READ, direct.PROBE, direct.VERDICT, direct.RESULT, direct.PUSHED, direct.BROADCAST, direct.LEN,
             direct.HALF_LEN, direct.HALF_LEN + 1, *range(direct.SLOT_LEN, direct.SLOT_LEN + small.SLOT_LENS),
             direct.CPU, direct.EXITED, shm_window.OVERSUBSCRIBED_SLOT]
    assert len(set(words)) == len(words)
    assert max(words) < shm_window.FLAG_AREA // shm_window.FLAG_STRIDE


def _slot_pages_present(comm):
    """After one broadcast of 8 B (which made the plan): how many pages of its slots, in
    every rank's window as this rank maps them, are in this process's page table
    (/proc/self/pagemap, bit 63), of how many."""
    import struct

    x = np.zeros(2, np.float32)
    comm.broadcast(x, root=0)
    kernel = comm._plans[("broadcast", x.dtype, x.size, 0, None)].kernel
    pages = sorted({view.ctypes.data // 4096 for area in kernel.slots for view in area})
    with open("/proc/self/pagemap", "rb") as pagemap:
        present = 0
        for page in pages:
            pagemap.seek(page * 8)
            present += struct.unpack("<Q", pagemap.read(8))[0] >> 63
    return present, len(pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/pagemap")
def test_a_broadcast_plan_maps_its_slots_pages_before_the_calls_rotate_through_them():
    # Each broadcast takes the next of 32 slots, on a page of its own: mapped one by one, the
    # first round of calls took a page fault per call on every rank.
    for present, pages in run_world(_slot_pages_present, 2, "shm", timeout=60):
        assert pages == 64 and present == pages, f"{present} of {pages} slot pages mapped"


@pytest.mark.parametrize("cores", [1, 64], ids=["oversubscribed", "a core each"])
def test_all_reduces_go_by_reads_from_their_size_where_every_rank_has_a_core(cores, monkeypatch):
    """Beyond the halves, all-reduces take the reads from ALL_REDUCE_READS_FROM_BYTES where every
    rank has a core, from READS_FROM_BYTES where ranks outnumber cores; reduce-scatters from
    READS_FROM_BYTES either way; below, two shots through the scratch window (reduce-scatters
    where ranks outnumber cores: the halves, up to REDUCE_SCATTER_HALVES_CROWDED_BYTES). Every
    path gives the reference's result. (All-reduces keep the halves up to ALL_REDUCE_HALVES_BYTES,
    where ranks outnumber cores up to ALL_REDUCE_HALVES_CROWDED_BYTES and piece by piece up to
    ALL_REDUCE_PIECES_CROWDED_BYTES, all shrunk here to HALF_BYTES so that both sizes leave them.)"""
    from collectives.engines import direct, small
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: cores)
    monkeypatch.setattr(small, "ALL_REDUCE_HALVES_BYTES", small.HALF_BYTES)
    monkeypatch.setattr(direct_routes, "ALL_REDUCE_HALVES_CROWDED_BYTES", small.HALF_BYTES)
    monkeypatch.setattr(direct_routes, "ALL_REDUCE_PIECES_CROWDED_BYTES", small.HALF_BYTES)
    routes = []
    for name in ("all_reduce_by_reads", "reduce_scatter_by_reads", "all_reduce", "reduce_scatter"):
        original = getattr(direct, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            routes.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(direct, name, counted)  # the forked ranks inherit it
    sizes = (direct_routes.ALL_REDUCE_READS_FROM_BYTES - 1024, direct_routes.ALL_REDUCE_READS_FROM_BYTES)

    def fn(comm):
        bad = []
        for nbytes in sizes:
            k = nbytes // 8
            x = rank_input(comm.rank, k, np.dtype(np.float64), ReduceOp.SUM)
            want = reference_all_reduce([rank_input(q, k, np.dtype(np.float64), ReduceOp.SUM) for q in range(comm.size)],
                                        ReduceOp.SUM)[0]
            got = comm.all_reduce(x, out=np.empty_like(x))
            block = np.empty(k // comm.size)
            comm.reduce_scatter(x, block)
            if not (np.allclose(got, want) and np.allclose(block, want[comm.rank * block.size : (comm.rank + 1) * block.size])):
                bad.append(nbytes)
        return bad, routes

    crowded = cores < 2
    assert max(sizes) <= direct_routes.REDUCE_SCATTER_HALVES_CROWDED_BYTES
    reads = (["all_reduce", "all_reduce"] if crowded
             else ["all_reduce", "reduce_scatter", "all_reduce_by_reads", "reduce_scatter"])
    assert run_world(fn, 2, "shm", timeout=120) == [([], reads)] * 2


def test_scratch_window_all_reduces_into_out_fold_straight_into_it_and_leave_x_untouched(monkeypatch):
    """Through the scratch window, an all-reduce into ``out`` folds straight into it (no copy of
    ``x`` into ``out`` first) where ``x`` lives outside the registered windows, and into a copy
    of ``x`` where it lives in one (peers read ``x`` itself there); either way ``x`` is untouched
    and ``out`` has the in-place call's bits, on every rank alike (3 ranks, odd counts, some
    ranks passing registered buffers; the halves' limit shrunk so that the call leaves them)."""
    from collectives.engines import direct, small
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 64)
    for module in (small, direct_routes):
        monkeypatch.setattr(module, "ALL_REDUCE_HALVES_BYTES", 1 << 10)
    into = []
    original = direct.all_reduce

    def counted(*args, **kwargs):
        into.append("out" in kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(direct, "all_reduce", counted)  # the forked ranks inherit it
    k = 40001

    def fn(comm):
        registered = comm.alloc(k, np.float32)
        results = []
        for op in (ReduceOp.SUM, ReduceOp.AVG):
            for mixed in (False, True):
                x = registered if mixed and comm.rank % 2 else np.empty(k, np.float32)
                x[...] = rank_input(comm.rank, k, np.dtype(np.float32), op)
                before = x.copy()
                out = comm.all_reduce(x, op=op, out=np.empty_like(x), algorithm="direct")
                untouched = np.array_equal(x, before)
                comm.all_reduce(x, op=op, algorithm="direct")
                results.append((untouched, np.array_equal(out.view(np.uint32), x.view(np.uint32)), out.view(np.uint32).copy()))
        return results, into

    results = run_world(fn, 3, "shm", timeout=120)
    for rank, (calls, into_out) in enumerate(results):
        assert [(untouched, same) for untouched, same, _ in calls] == [(True, True)] * 4
        for call, first in zip(calls, results[0][0]):
            assert np.array_equal(call[2], first[2])
        odd = rank % 2 == 1  # these ranks pass the registered buffer in the mixed calls
        assert into_out == [True, False, not odd, False] * 2
