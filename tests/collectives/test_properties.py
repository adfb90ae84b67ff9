"""Property tests: every collective × algorithm × dtype × op against the numpy reference.

Two layers:

* a matrix (pytest parameters: collective × algorithm × world size) that runs, inside one
  world, every dtype and every operator defined for it, so no combination is left to
  chance;
* hypothesis tests per collective drawing the world size (1..9), the element count (0,
  fewer than the ranks, not divisible by them, larger), the root, a small ``chunk_bytes``
  (multi-segment pipelines) or the default, exact or rounding-sensitive inputs and a
  preallocated or library-allocated output; each drawn world runs a few drawn calls.

Results are compared with :mod:`collectives.testing.reference` (integers and data
movement bit for bit, floats within its tolerance); all_reduce, all_gather and broadcast
must also give the same bits on every rank, and a reduction repeated (in the same world
or a new one) must give the same bits again.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectives import ReduceOp, Work
from collectives.buffers import SUPPORTED_DTYPES, dtype_name
from collectives.testing import reference as ref
from collectives.testing import run_world

ALGORITHMS = (None, "ring", "tree", "recursive")
NAMED_ALGORITHMS = ("ring", "tree", "recursive")
DTYPES = tuple(SUPPORTED_DTYPES)
FLOAT_DTYPES = tuple(d for d in DTYPES if d.kind not in "iu")
REDUCTIONS = ("all_reduce", "reduce_scatter", "reduce")
BLOCKED = ("reduce_scatter", "scatter", "all_to_all")  # input holds world_size·k elements
COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "gather", "scatter", "all_to_all")
SAME_ON_EVERY_RANK = ("all_reduce", "all_gather", "broadcast")
ALIASABLE = ("all_to_all", "all_gather", "reduce_scatter", "scatter")
WORLD_TIMEOUT = 60.0

# 100 drawn shapes per collective: the matrix above already runs every dtype x op x named
# algorithm x world size (2, 3, 4, 7) deterministically; these add the shapes around them.
# A drawn world (its size and chunk_bytes) runs CALLS_PER_WORLD drawn calls, one after
# another, each checked on its own: a world's start-up, which costs about what its calls
# do, is paid once per CALLS_PER_WORLD shapes, and a call also meets a communicator that
# already ran another.
CALLS_PER_WORLD = 2
PROPERTY_SETTINGS = settings(
    max_examples=100 // CALLS_PER_WORLD,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).view(np.uint8).tobytes()


# -- one collective call on one rank ---------------------------------------------------------


def call(comm: Any, collective: str, x: np.ndarray, *, op: ReduceOp | None, root: int,
         algorithm: str | None, preallocate: bool, alias: bool = False, async_op: bool = False) -> Any:
    """Run ``collective`` on this rank's input ``x`` (a private copy) and return what the
    rank ends with (a copy), after checking what the call returned and that inputs
    the collective must only read were left alone.

    With ``alias``, input and output share memory where that is meaningful: all_to_all
    with ``out is x``, all_gather with ``x`` the rank's own block of ``out`` (MPI's in
    place), reduce_scatter with ``out`` a block of ``x``, scatter with the root's ``out``
    a block of its ``x``. With ``async_op`` the call returns a Work, waited on at once."""
    n, rank = comm.size, comm.rank

    def _done(value: Any) -> Any:
        if not async_op:
            return value
        assert isinstance(value, Work), f"{collective}(async_op=True) returned {type(value).__name__}"
        result = value.wait(timeout=WORLD_TIMEOUT)
        assert value.is_completed()
        return result

    before = x.copy()
    kw: dict[str, Any] = {"algorithm": algorithm, "async_op": async_op}
    if collective == "all_reduce":
        got = _done(comm.all_reduce(x, op=op, **kw))
        assert got is x, "all_reduce must return its (in-place) argument"
        return x.copy()
    if collective == "broadcast":
        got = _done(comm.broadcast(x, root=root, **kw))
        assert got is x, "broadcast must return its (in-place) argument"
        if rank == root:
            assert _bytes(x) == _bytes(before), "broadcast changed the root's x"
        return x.copy()
    if collective == "reduce":
        got = _done(comm.reduce(x, root=root, op=op, **kw))
        assert got is x, "reduce must return its argument"
        return x.copy()
    k = x.size // n if collective in BLOCKED else x.size
    out_size = {"reduce_scatter": k, "all_gather": n * k, "gather": n * k, "scatter": k,
                "all_to_all": n * k}[collective]
    out = np.full(out_size, 7, dtype=x.dtype) if preallocate or collective == "scatter" else None
    if alias and collective == "all_to_all":
        out = x
    elif alias and collective == "all_gather":
        out = np.full(out_size, 7, dtype=x.dtype)
        out[rank * k : (rank + 1) * k] = x
        x = out[rank * k : (rank + 1) * k]
    elif alias and collective == "reduce_scatter":
        out = x[rank * k : (rank + 1) * k]
    elif alias and collective == "scatter" and rank == root:
        out = x[(n - 1 - rank) * k : (n - rank) * k]
    if collective == "reduce_scatter":
        got = _done(comm.reduce_scatter(x, out, op=op, **kw))
    elif collective == "all_gather":
        got = _done(comm.all_gather(x, out, **kw))
    elif collective == "gather":
        got = _done(comm.gather(x, out, root=root, **kw))
        if rank != root:
            assert got is None, f"gather returned {type(got).__name__} on non-root rank {rank}"
            assert _bytes(x) == _bytes(before), "gather changed x"
            return None
    elif collective == "scatter":
        source = x if rank == root else None
        got = _done(comm.scatter(source, out, root=root, **kw))
    elif collective == "all_to_all":
        got = _done(comm.all_to_all(x, out, **kw))
    else:  # pragma: no cover
        raise AssertionError(collective)
    if out is not None:
        assert got is out, f"{collective} must return the out it was given"
    assert isinstance(got, np.ndarray) and got.dtype == x.dtype and got.shape == (out_size,), (
        f"{collective} returned {type(got).__name__} {getattr(got, 'dtype', '')} {getattr(got, 'shape', '')}"
    )
    if not np.shares_memory(x, got):
        assert _bytes(x) == _bytes(before), f"{collective} changed its input x"
    return got.copy()


def expected(collective: str, inputs: list[np.ndarray], op: ReduceOp | None, root: int) -> list[Any]:
    if collective == "all_reduce":
        return ref.all_reduce(inputs, op)
    if collective == "reduce_scatter":
        return ref.reduce_scatter(inputs, op)
    if collective == "all_gather":
        return ref.all_gather(inputs)
    if collective == "broadcast":
        return ref.broadcast(inputs, root)
    if collective == "reduce":
        return ref.reduce(inputs, root, op)
    if collective == "gather":
        return ref.gather(inputs, root)
    if collective == "scatter":
        return ref.scatter(inputs, root)
    if collective == "all_to_all":
        return ref.all_to_all(inputs)
    raise AssertionError(collective)


def check(collective: str, results: list[Any], inputs: list[np.ndarray], *, op: ReduceOp | None,
          root: int, label: str) -> None:
    """Compare every rank's result with the reference (and with each other)."""
    n = len(inputs)
    want = expected(collective, inputs, op, root)
    scale = ref.error_scale(inputs, op) if op is not None else None
    for r, (got, exp) in enumerate(zip(results, want)):
        what = f"{label}: rank {r}"
        if exp is None:
            assert got is None, f"{what}: expected None"
            continue
        rank_op, rank_scale = op, scale
        if collective == "reduce_scatter":
            k = exp.size
            rank_scale = scale[r * k : (r + 1) * k]
        elif collective == "reduce" and r != root:
            rank_op = None  # a non-root's x is unchanged: exact
        ref.assert_close(got, exp, op=rank_op, world_size=n, scale=rank_scale, what=what)
    if collective in SAME_ON_EVERY_RANK:
        for r in range(1, n):
            assert _bytes(results[r]) == _bytes(results[0]), f"{label}: rank {r}'s bits differ from rank 0's"


def make_inputs(collective: str, n: int, count: int, dtype: np.dtype, op: ReduceOp | None,
                seed: int, exact: bool) -> list[np.ndarray]:
    return [ref.rank_input(r, count, dtype, op, seed=seed, exact=exact) for r in range(n)]


def run_cases(collective: str, *, n: int, chunk_bytes: int | None, calls: list[dict[str, Any]]) -> list[list[Any]]:
    """The ``calls`` (count, dtype, op, root, algorithm, seed, exact, preallocate, alias,
    async_op) one after another in one world of ``n`` ranks, each checked against the
    reference; what every rank ended with, per call."""
    inputs = [make_inputs(collective, n, c["count"], c["dtype"], c["op"], c["seed"], c["exact"]) for c in calls]
    kwargs = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}

    def fn(comm: Any) -> list[Any]:
        return [call(comm, collective, inputs[i][comm.rank].copy(), op=c["op"], root=c["root"],
                     algorithm=c["algorithm"], preallocate=c["preallocate"], alias=c["alias"],
                     async_op=c["async_op"]) for i, c in enumerate(calls)]

    results = run_world(fn, n, timeout=WORLD_TIMEOUT, **kwargs)
    per_call = []
    for i, c in enumerate(calls):
        label = (f"{collective}(n={n}, count={c['count']}, dtype={dtype_name(c['dtype'])}, "
                 f"op={c['op'] and c['op'].name}, root={c['root']}, algorithm={c['algorithm']}, "
                 f"chunk_bytes={chunk_bytes}, seed={c['seed']}, exact={c['exact']}, alias={c['alias']}, "
                 f"async_op={c['async_op']}, call {i + 1} of {len(calls)} in the world)")
        got = [results[r][i] for r in range(n)]
        check(collective, got, inputs[i], op=c["op"], root=c["root"], label=label)
        per_call.append(got)
    return per_call


# -- the matrix: every dtype × op, per collective × algorithm × world size -------------------


def _combos(collective: str) -> list[tuple[np.dtype, ReduceOp | None]]:
    if collective in REDUCTIONS:
        return [(d, op) for d in DTYPES for op in ref.ops_for(d)]
    return [(d, None) for d in DTYPES]


@pytest.mark.parametrize("n", [2, 3, 4, 7])
@pytest.mark.parametrize("algorithm", NAMED_ALGORITHMS)
@pytest.mark.parametrize("collective", COLLECTIVES)
def test_matrix_every_dtype_and_op(collective: str, algorithm: str, n: int) -> None:
    """One world runs the collective for every dtype (and every op that dtype allows),
    cycling counts (0, 1, < n, not divisible, larger), roots, preallocated/aliased outputs."""
    _matrix(collective, algorithm, n)


@pytest.mark.parametrize("hosts", [("a", "a", "b", "b"), ("a", "b", "c", "a", "b", "c")], ids=["2x2", "3x2-interleaved"])
def test_hierarchical_matrix_every_dtype_and_op(hosts: tuple[str, ...]) -> None:
    """The same matrix for all_reduce in two levels (ranks on several hosts)."""
    _matrix("all_reduce", "hierarchical", len(hosts), hosts=hosts)


def _matrix(collective: str, algorithm: str, n: int, **world: Any) -> None:
    combos = _combos(collective)
    salt = zlib.crc32(f"{collective}/{algorithm}/{n}".encode())
    counts = [0, 1, n - 1, n + 1, 2 * n + 3, 29] if collective not in BLOCKED else [0, n, 2 * n, 5 * n]
    cases = []
    for i, (dtype, op) in enumerate(combos):
        count = counts[(i + salt) % len(counts)]
        root = (i + salt) % n
        cases.append((dtype, op, count, root, i % 2 == 0))
    inputs = {i: make_inputs(collective, n, c[2], c[0], c[1], seed=salt + i, exact=True)
              for i, c in enumerate(cases)}

    def fn(comm: Any) -> list[Any]:
        out = []
        for i, (_dtype, op, _count, root, prealloc) in enumerate(cases):
            x = inputs[i][comm.rank].copy()
            out.append(call(comm, collective, x, op=op, root=root, algorithm=algorithm, preallocate=prealloc,
                            alias=i % 3 == 1))
        return out

    # a small chunk so that even these few elements travel in several segments
    results = run_world(fn, n, timeout=WORLD_TIMEOUT, chunk_bytes=8 + salt % 17, **world)
    for i, (dtype, op, count, root, _) in enumerate(cases):
        label = (f"{collective}(n={n}, count={count}, dtype={dtype_name(dtype)}, op={op and op.name}, "
                 f"root={root}, algorithm={algorithm})")
        check(collective, [results[r][i] for r in range(n)], inputs[i], op=op, root=root, label=label)


DIRECT = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "all_to_all")


@pytest.fixture
def direct_paths_at_small_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thresholds shrunk so that a few hundred elements walk every path of the direct
    algorithms: the small window (to 256 B), the two-shot window scheme and the
    single-copy reads (from 2 KiB), in 512-byte steps. Forked ranks inherit them."""
    from collectives.algorithms import direct_routes
    from collectives.engines import windows as window_engine
    from collectives.engines import small

    for name in ("HALF_BYTES", "ALL_REDUCE_HALVES_BYTES", "BROADCAST_BYTES"):
        monkeypatch.setattr(small, name, 256)
    for name in ("GATHER_BYTES", "GATHER_BYTES_OVERSUBSCRIBED"):
        monkeypatch.setattr(direct_routes, name, 256)
    monkeypatch.setattr(direct_routes, "READS_FROM_BYTES", 2048)
    monkeypatch.setattr(window_engine, "DIRECT_STEP_BYTES", 512)


@pytest.mark.multiprocess
@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("collective", DIRECT)
def test_direct_matrix_every_dtype_and_op(collective: str, n: int, direct_paths_at_small_sizes: None) -> None:
    """The direct algorithms (ranks as processes sharing memory) for every dtype and every
    op it allows, at counts that land in each path, with outputs preallocated or aliased;
    all_reduce also into ``out=``."""
    combos = _combos(collective)
    salt = zlib.crc32(f"direct/{collective}/{n}".encode())
    counts = [0, 1, 20, 100, 700] if collective not in BLOCKED else [0, n, 20 * n, 100 * n, 700 * n]
    cases = []
    for i, (dtype, op) in enumerate(combos):
        for j, count in enumerate(counts):
            cases.append((dtype, op, count, (i + j + salt) % n, (i + j) % 2 == 0, (i + j) % 3 == 1))
    inputs = {i: make_inputs(collective, n, c[2], c[0], c[1], seed=salt + i, exact=True) for i, c in enumerate(cases)}

    def fn(comm: Any) -> list[Any]:
        out = []
        for i, (_dtype, op, _count, root, prealloc, alias) in enumerate(cases):
            x = inputs[i][comm.rank].copy()
            out.append(call(comm, collective, x, op=op, root=root, algorithm="direct", preallocate=prealloc,
                            alias=alias))
            if collective == "all_reduce":
                x = inputs[i][comm.rank].copy()
                into = np.full_like(x, 7)
                assert comm.all_reduce(x, op=op, out=into, algorithm="direct") is into
                assert _bytes(x) == _bytes(inputs[i][comm.rank]), "all_reduce into out= changed x"
                out.append(into)
        return out

    results = run_world(fn, n, "shm", timeout=WORLD_TIMEOUT)
    per_case = 2 if collective == "all_reduce" else 1
    for i, (dtype, op, count, root, _, _) in enumerate(cases):
        for k in range(per_case):
            label = (f"direct {collective}(n={n}, count={count}, dtype={dtype_name(dtype)}, op={op and op.name}, "
                     f"root={root}{', into out=' if k else ''})")
            check(collective, [results[r][per_case * i + k] for r in range(n)], inputs[i], op=op, root=root,
                  label=label)


# -- hypothesis: random shapes, roots, chunks -------------------------------------------------


def _call(draw: st.DrawFn, collective: str, n: int, dtypes: tuple[np.dtype, ...]) -> dict[str, Any]:
    """One call's draws for a world of ``n`` ranks: shape, dtype, op, root, algorithm, data, outputs."""
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    op = draw(st.sampled_from(ref.ops_for(dtype)), label="op") if collective in REDUCTIONS else None
    if collective in BLOCKED:
        k = draw(st.one_of(st.just(0), st.just(1), st.integers(2, 9)), label="block")
        count = n * k
    else:
        count = draw(
            st.one_of(
                st.just(0),
                st.integers(1, max(1, n - 1)),  # fewer elements than ranks
                st.integers(n, 5 * n + 3),  # around the world size, mostly not divisible
                st.integers(30, 90),  # larger
            ),
            label="count",
        )
    return {
        "count": count,
        "dtype": dtype,
        "op": op,
        "root": draw(st.integers(0, n - 1), label="root"),
        "algorithm": draw(st.sampled_from(ALGORITHMS), label="algorithm"),
        "seed": draw(st.integers(0, 2**31 - 1), label="seed"),
        "exact": draw(st.booleans(), label="exact"),
        "preallocate": draw(st.booleans(), label="preallocate"),
        "alias": draw(st.booleans(), label="alias") if collective in ALIASABLE else False,
        "async_op": draw(st.booleans(), label="async_op"),
    }


@st.composite
def worlds(draw: st.DrawFn, collective: str, dtypes: tuple[np.dtype, ...] = DTYPES) -> dict[str, Any]:
    """A world (its size, its ``chunk_bytes``) and the CALLS_PER_WORLD calls drawn for it."""
    n = draw(st.integers(1, 9), label="world size")
    chunk_bytes = draw(st.one_of(st.none(), st.integers(8, 64)), label="chunk_bytes")
    return {"n": n, "chunk_bytes": chunk_bytes,
            "calls": [_call(draw, collective, n, dtypes) for _ in range(CALLS_PER_WORLD)]}


@PROPERTY_SETTINGS
@given(world=worlds("all_reduce"))
def test_all_reduce_matches_reference(world: dict[str, Any]) -> None:
    run_cases("all_reduce", **world)


@PROPERTY_SETTINGS
@given(world=worlds("reduce_scatter"))
def test_reduce_scatter_matches_reference(world: dict[str, Any]) -> None:
    run_cases("reduce_scatter", **world)


@PROPERTY_SETTINGS
@given(world=worlds("all_gather"))
def test_all_gather_matches_reference(world: dict[str, Any]) -> None:
    run_cases("all_gather", **world)


@PROPERTY_SETTINGS
@given(world=worlds("broadcast"))
def test_broadcast_matches_reference(world: dict[str, Any]) -> None:
    run_cases("broadcast", **world)


@PROPERTY_SETTINGS
@given(world=worlds("reduce"))
def test_reduce_matches_reference(world: dict[str, Any]) -> None:
    run_cases("reduce", **world)


@PROPERTY_SETTINGS
@given(world=worlds("gather"))
def test_gather_matches_reference(world: dict[str, Any]) -> None:
    run_cases("gather", **world)


@PROPERTY_SETTINGS
@given(world=worlds("scatter"))
def test_scatter_matches_reference(world: dict[str, Any]) -> None:
    run_cases("scatter", **world)


@PROPERTY_SETTINGS
@given(world=worlds("all_to_all"))
def test_all_to_all_matches_reference(world: dict[str, Any]) -> None:
    run_cases("all_to_all", **world)


# -- determinism ------------------------------------------------------------------------------


@st.composite
def reductions(draw: st.DrawFn) -> dict[str, Any]:
    """A world and the CALLS_PER_WORLD reductions (each its collective and algorithm) drawn for it."""
    n = draw(st.integers(1, 9), label="world size")
    chunk_bytes = draw(st.one_of(st.none(), st.integers(8, 64)), label="chunk_bytes")
    calls = []
    for _ in range(CALLS_PER_WORLD):
        collective = draw(st.sampled_from(REDUCTIONS), label="collective")
        algorithm = draw(st.sampled_from(NAMED_ALGORITHMS), label="named algorithm")
        c = _call(draw, "all_reduce", n, FLOAT_DTYPES)
        count = n * max(1, c["count"] // n) if collective == "reduce_scatter" else c["count"]
        calls.append({**c, "collective": collective, "algorithm": algorithm, "count": count})
    return {"n": n, "chunk_bytes": chunk_bytes, "calls": calls}


@PROPERTY_SETTINGS
@given(world=reductions())
def test_reductions_are_deterministic(world: dict[str, Any]) -> None:
    """The same reduction of inputs whose rounding depends on the order gives the same
    bits twice in one world and again in a fresh world (per algorithm)."""
    n, chunk, calls = world["n"], world["chunk_bytes"], world["calls"]
    inputs = [make_inputs(c["collective"], n, c["count"], c["dtype"], c["op"], c["seed"], exact=False) for c in calls]
    kwargs = {} if chunk is None else {"chunk_bytes": chunk}

    def fn(comm: Any) -> list[Any]:
        return [[call(comm, c["collective"], inputs[i][comm.rank].copy(), op=c["op"], root=c["root"],
                      algorithm=c["algorithm"], preallocate=True) for _ in range(2)] for i, c in enumerate(calls)]

    first = run_world(fn, n, timeout=WORLD_TIMEOUT, **kwargs)
    second = run_world(fn, n, timeout=WORLD_TIMEOUT, **kwargs)
    for i, c in enumerate(calls):
        label = (f"{c['collective']}(n={n}, count={c['count']}, dtype={dtype_name(c['dtype'])}, op={c['op'].name}, "
                 f"algorithm={c['algorithm']}, call {i + 1} of {len(calls)} in the world)")
        for r in range(n):
            a, b = first[r][i]
            d, _ = second[r][i]
            assert _bytes(a) == _bytes(b), f"{label}: rank {r} got different bits on the second call in one world"
            assert _bytes(a) == _bytes(d), f"{label}: rank {r} got different bits in a second world"
        check(c["collective"], [first[r][i][0] for r in range(n)], inputs[i], op=c["op"], root=c["root"],
              label=label)


@pytest.mark.parametrize("algorithm", NAMED_ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, "bfloat16"], ids=str)
def test_all_reduce_bits_identical_on_every_rank_with_rounding(algorithm: str, dtype: Any) -> None:
    """Inputs whose sum rounds differently in different orders: every rank must still
    end with the same bits (each element reduced in one order everywhere)."""
    dt = ref.BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    for n in (3, 5, 8, 9):  # one world per size runs the three ops
        run_cases("all_reduce", n=n, chunk_bytes=8, calls=[
            {"count": 3 * n + 2, "dtype": dt, "op": op, "root": 0, "algorithm": algorithm, "seed": n,
             "exact": False, "preallocate": False, "alias": False, "async_op": False}
            for op in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PROD)])


# -- many asynchronous collectives in flight --------------------------------------------------


@pytest.mark.parametrize("n", [3, 5])
def test_many_async_collectives_in_flight(n: int) -> None:
    """Every rank issues a long mixed sequence of collectives with ``async_op=True`` before
    waiting on any: they must run in issue order on every rank and each give its result."""
    plan = []
    for i, collective in enumerate(COLLECTIVES * 3):
        dtype = DTYPES[(i * 5) % len(DTYPES)]
        ops = ref.ops_for(dtype)
        op = ops[i % len(ops)] if collective in REDUCTIONS else None
        count = n * (i % 4) if collective in BLOCKED else (i * 7) % 23
        plan.append((collective, dtype, op, count, i % n, NAMED_ALGORITHMS[i % 3]))
    inputs = [make_inputs(c, n, count, dt, op, seed=i, exact=True) for i, (c, dt, op, count, _, _) in enumerate(plan)]

    def fn(comm: Any) -> list[Any]:
        r = comm.rank
        issued = []
        for i, (collective, dtype, op, count, root, algorithm) in enumerate(plan):
            x = inputs[i][r].copy()
            kw: dict[str, Any] = {"algorithm": algorithm, "async_op": True}
            k = x.size // n if collective in BLOCKED else x.size
            if collective == "all_reduce":
                work, keep = comm.all_reduce(x, op=op, **kw), x
            elif collective == "reduce":
                work, keep = comm.reduce(x, root=root, op=op, **kw), x
            elif collective == "broadcast":
                work, keep = comm.broadcast(x, root=root, **kw), x
            elif collective == "reduce_scatter":
                work, keep = comm.reduce_scatter(x, op=op, **kw), None
            elif collective == "all_gather":
                work, keep = comm.all_gather(x, **kw), None
            elif collective == "gather":
                work, keep = comm.gather(x, root=root, **kw), None
            elif collective == "scatter":
                work, keep = comm.scatter(x if r == root else None, np.empty(k, dtype), root=root, **kw), None
            else:
                work, keep = comm.all_to_all(x, **kw), None
            assert isinstance(work, Work)
            issued.append((work, keep))
        results = []
        for work, keep in issued:
            got = work.wait(timeout=WORLD_TIMEOUT)
            if keep is not None:
                assert got is keep
            results.append(None if got is None else np.array(got, copy=True))
        return results

    results = run_world(fn, n, timeout=WORLD_TIMEOUT, chunk_bytes=16)
    for i, (collective, dtype, op, count, root, algorithm) in enumerate(plan):
        label = f"async #{i} {collective}(n={n}, count={count}, dtype={dtype_name(dtype)}, op={op and op.name})"
        check(collective, [results[r][i] for r in range(n)], inputs[i], op=op, root=root, label=label)


# -- the reference itself ---------------------------------------------------------------------


def test_reference_wraps_integers_like_numpy() -> None:
    a = np.array([120, -128, 7], dtype=np.int8)
    b = np.array([10, -1, -7], dtype=np.int8)
    assert ref.all_reduce([a, b], ReduceOp.SUM)[0].tolist() == [-126, 127, 0]
    assert ref.all_reduce([a, b], ReduceOp.PROD)[0].tolist() == [-80, -128, -49]
    assert ref.all_reduce([a, b], ReduceOp.AVG)[0].tolist() == [-63, 63, 0]  # of the wrapped sum
    u = np.array([250, 3], dtype=np.uint8)
    assert ref.all_reduce([u, u], ReduceOp.SUM)[0].tolist() == [244, 6]
    c = np.array([-7, 7, -1], dtype=np.int32)
    assert ref.all_reduce([c, np.zeros(3, np.int32)], ReduceOp.AVG)[0].tolist() == [-3, 3, 0]  # toward zero


def test_reference_layouts() -> None:
    x = [np.arange(6) + 10 * r for r in range(3)]
    assert [a.tolist() for a in ref.all_to_all(x)] == [[0, 1, 10, 11, 20, 21], [2, 3, 12, 13, 22, 23],
                                                        [4, 5, 14, 15, 24, 25]]
    assert [a.tolist() for a in ref.reduce_scatter(x, ReduceOp.SUM)] == [[30, 33], [36, 39], [42, 45]]
    assert [a.tolist() for a in ref.scatter([None, x[1], None], 1)] == [[10, 11], [12, 13], [14, 15]]
    assert ref.gather(x, 2)[:2] == [None, None] and ref.gather(x, 2)[2].tolist() == list(np.concatenate(x))
    assert [a.tolist() for a in ref.reduce(x, 1, ReduceOp.MAX)] == [x[0].tolist(), x[2].tolist(), x[2].tolist()]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_rank_inputs_are_varied_finite_and_tolerance_is_sane(dtype: np.dtype) -> None:
    for op in ref.ops_for(dtype):
        for exact in (True, False):
            xs = [ref.rank_input(r, 16, dtype, op, exact=exact) for r in range(9)]
            assert len({_bytes(x) for x in xs}) == 9, "ranks must contribute different inputs"
            assert len({_bytes(x[i : i + 1]) for x in xs for i in range(16)}) >= 4
            assert not all((x == 1).all() for x in xs)
            assert _bytes(ref.rank_input(3, 16, dtype, op, exact=exact)) == _bytes(xs[3]), "not deterministic"
            result = ref.all_reduce(xs, op)[0]
            if dtype.kind not in "iu":
                assert np.isfinite(result.astype(np.complex128)).all(), f"{op.name} overflowed"
            if exact and dtype.kind not in "iu" and op is not ReduceOp.AVG:
                # exactly representable: the reference in the dtype equals the float64 one
                wide = [x.astype(np.complex128) for x in xs]
                acc = wide[0]
                for w in wide[1:]:
                    acc = acc + w if op is ReduceOp.SUM else acc * w if op is ReduceOp.PROD else acc
                if op in (ReduceOp.SUM, ReduceOp.PROD):
                    assert (result.astype(np.complex128) == acc).all()
    is_int = dtype.kind in "iu"
    assert (ref.tolerance(dtype, 8, ReduceOp.SUM) == 0) == is_int
    if not is_int:
        assert ref.tolerance(dtype, 8, ReduceOp.SUM) > ref.tolerance(dtype, 2, ReduceOp.SUM) > 0
        assert ref.tolerance(dtype, 8, ReduceOp.SUM) < 0.5


def test_assert_close_catches_errors_beyond_the_tolerance() -> None:
    xs = [ref.rank_input(r, 8, np.float32, ReduceOp.SUM, exact=False) for r in range(4)]
    want = ref.all_reduce(xs, ReduceOp.SUM)[0]
    scale = ref.error_scale(xs, ReduceOp.SUM)
    ref.assert_close(want.copy(), want, op=ReduceOp.SUM, world_size=4, scale=scale)
    close = want.copy()
    close[3] = np.nextafter(close[3], np.float32(np.inf))  # one ulp: within
    ref.assert_close(close, want, op=ReduceOp.SUM, world_size=4, scale=scale)
    for wrong in (want - xs[2], want * np.float32(1.001), np.full_like(want, np.nan)):
        with pytest.raises(AssertionError):
            ref.assert_close(wrong.astype(np.float32), want, op=ReduceOp.SUM, world_size=4, scale=scale)
    ints = ref.all_reduce([ref.rank_input(r, 8, np.int16, ReduceOp.SUM) for r in range(3)], ReduceOp.SUM)[0]
    off = ints.copy()
    off[0] += 1
    with pytest.raises(AssertionError):
        ref.assert_close(off, ints, op=ReduceOp.SUM, world_size=3)
    with pytest.raises(AssertionError):  # MIN/MAX and data movement are exact, floats too
        ref.assert_close(close, want, op=ReduceOp.MAX, world_size=4)
    with pytest.raises(AssertionError):  # -0.0 is not 0.0 bit for bit
        ref.assert_close(np.array([-0.0]), np.array([0.0]), op=None, world_size=2)
    with pytest.raises(AssertionError):  # the dtype must match
        ref.assert_close(want.astype(np.float64), want, op=ReduceOp.SUM, world_size=4, scale=scale)
