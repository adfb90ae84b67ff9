"""The soak of issue 16: a long random mix of every collective, each result checked.

Every rank draws the same sequence from one seed (collective, dtype, size, operator, root,
algorithm, in place or not, async or not), so all ranks issue the same calls; inputs are
slices of deterministic per-rank pools (:func:`collectives.testing.reference.rank_input`),
so each rank computes locally what it must end with from every rank's input
(:mod:`collectives.testing.reference`). Inputs are exact (multiples of 1/2, products of
±1 and ±2), so float results are exact too and a plain equality check suffices; where it
fails, :func:`~collectives.testing.reference.assert_close` decides and explains.

The library keeps what it may need again (scratch slabs per dtype, shared windows, plans),
each bounded by the largest call it has seen: a warm-up pass first runs every collective
and algorithm at the largest size, so that what grows after it is a leak. Descriptors
and mappings are counted after the first thousand random calls and at the end; private
resident memory is sampled every hundred calls, and the lowest sample of the first
thousand calls is compared with the lowest of the last thousand (the allocator keeps or
returns freed buffers as it pleases, which moves single samples by ±10 MiB; a leak lifts
the floor).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from collectives import ReduceOp
from collectives.buffers import SUPPORTED_DTYPES
from collectives.testing import reference as ref

COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "gather", "scatter",
               "all_to_all", "all_to_all_v", "barrier", "send_recv")
WEIGHTS = (6, 2, 2, 3, 2, 1, 1, 1, 1, 1, 1)
REDUCING = ("all_reduce", "reduce_scatter", "reduce")
LAYOUT_ALGORITHMS = {  # algorithms.registry: DIRECT (shared windows), HIERARCHICAL (several hosts)
    "direct": ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "all_to_all"),
    "hierarchical": ("all_reduce",),
}
PER_RANK_BLOCKS = ("reduce_scatter", "scatter", "all_to_all")  # inputs of size·k elements
ALGORITHMS = (None, None, None, "auto", "ring", "tree", "recursive")
POOL_BYTES = 64 << 10
LARGE_BYTES = 1 << 20
LARGE_DTYPES = tuple(np.dtype(t) for t in ("float32", "int64", "uint8"))
LARGE_SHARE = 0.005  # of the calls: 128 KiB - 1 MiB per rank instead of 8 B - 64 KiB
FIRST = 1000  # the first thousand random calls: the baseline for growth
EVERY = 100  # calls between samples of private memory


@dataclass
class Call:
    """One collective call, the same on every rank."""

    kind: str
    dtype: np.dtype
    count: int  # elements of each rank's input
    op: ReduceOp | None
    root: int
    algorithm: str | None
    large: bool
    offset: int  # where in the pools the inputs start
    out_of_place: bool
    async_op: bool
    shift: int  # send_recv: to rank + shift; all_to_all_v: unused
    tag: int
    splits: list[list[int]] | None  # all_to_all_v: splits[i][j] elements from rank i to rank j


def _variant(op: ReduceOp | None) -> ReduceOp | None:
    """The input pool an operator needs (rank_input shapes inputs for PROD, BAND, BOR)."""
    return op if op in (ReduceOp.PROD, ReduceOp.BAND, ReduceOp.BOR) else None


class Pools:
    """Every rank's inputs, per (dtype, variant, large): the same arrays on every rank."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self._pools: dict[tuple[Any, ...], list[np.ndarray]] = {}
        for dtype in SUPPORTED_DTYPES:  # all now, so that their memory is there before sampling
            for op in (None, *ref.ops_for(dtype)):
                self.get(dtype, op, False)
                if dtype in LARGE_DTYPES:
                    self.get(dtype, op, True)

    def get(self, dtype: np.dtype, op: ReduceOp | None, large: bool) -> list[np.ndarray]:
        key = (dtype, _variant(op), large)
        pool = self._pools.get(key)
        if pool is None:
            count = limit(dtype, large)
            pool = [ref.rank_input(r, count, dtype, key[1], seed=self.seed) for r in range(self.size)]
            self._pools[key] = pool
        return pool


def limit(dtype: np.dtype, large: bool) -> int:
    """Elements in a pool: the largest count a call of ``dtype`` may have."""
    return (LARGE_BYTES if large else POOL_BYTES) // dtype.itemsize


def algorithms_for(kind: str, layout: tuple[str, ...]) -> tuple[str | None, ...]:
    """The algorithms a ``kind`` of call may name, ``layout`` being those of
    LAYOUT_ALGORITHMS that this job's layout offers."""
    return ALGORITHMS + tuple(name for name in layout if kind in LAYOUT_ALGORITHMS[name])


def draw(rng: random.Random, size: int, layout: tuple[str, ...]) -> Call:
    """The next random call (every rank draws the same from the same seed)."""
    kind = rng.choices(COLLECTIVES, WEIGHTS)[0]
    large = rng.random() < LARGE_SHARE
    dtype = rng.choice(LARGE_DTYPES if large else SUPPORTED_DTYPES)
    op = rng.choice(ref.ops_for(dtype)) if kind in REDUCING else None
    most = limit(dtype, large)
    if large:
        count = rng.randint((128 << 10) // dtype.itemsize, most)
    else:  # log-uniform from 1 element to the pool, and sometimes nothing
        count = 0 if rng.random() < 0.01 else min(most, int(2 ** rng.uniform(0, np.log2(most))))
    return _complete(rng, kind, dtype, count, op, rng.choice(algorithms_for(kind, layout)), large, size)


def _complete(rng: random.Random, kind: str, dtype: np.dtype, count: int, op: ReduceOp | None,
              algorithm: str | None, large: bool, size: int) -> Call:
    if kind in PER_RANK_BLOCKS:
        count -= count % size
    splits = None
    if kind == "all_to_all_v":
        splits = [[rng.randint(0, count // size) for _ in range(size)] for _ in range(size)]
    return Call(kind, dtype, count, op, rng.randrange(size), algorithm, large,
                offset=rng.randint(0, limit(dtype, large) - count), out_of_place=rng.random() < 0.3,
                async_op=rng.random() < 0.05, shift=rng.randrange(1, size) if size > 1 else 0,
                tag=rng.randrange(1 << 20), splits=splits)


def warm_up_calls(rng: random.Random, size: int, layout: tuple[str, ...]) -> list[Call]:
    """Calls that take every kept buffer to its high-water mark before the baseline: the
    executor's two scratch slabs per dtype (a short recursive all_reduce receives the whole
    vector in both; at 1 MiB a tree reduce does, on its root), those of the communicators
    inside a hierarchical plan, shared windows (the largest call of every collective), so
    that what grows afterwards is a leak."""
    calls = [_complete(rng, "all_reduce", dtype, limit(dtype, False), ReduceOp.SUM, algorithm, False, size)
             for algorithm in ("recursive", *layout)  # (a hierarchical plan's communicators have executors too)
             for dtype in SUPPORTED_DTYPES]
    for dtype in LARGE_DTYPES:
        for root in range(size):
            call = _complete(rng, "reduce", dtype, limit(dtype, True), ReduceOp.SUM, "tree", True, size)
            call.root = root
            calls.append(call)
    uint8 = np.dtype(np.uint8)
    for kind in COLLECTIVES:
        for algorithm in (None, *(name for name in layout if kind in LAYOUT_ALGORITHMS[name])):
            op = ReduceOp.SUM if kind in REDUCING else None
            calls.append(_complete(rng, kind, uint8, limit(uint8, True), op, algorithm, True, size))
    return calls


WARM_UP_TAG = 1 << 20
"""The tag of ``start_point_to_point``'s messages: beyond the random calls' (``_complete``)."""


def start_point_to_point(comm: Any) -> None:
    """Receives posted before any send (a barrier between), so that each rank's point-to-point
    engine starts its thread for pending works (once per communicator, on the first work that
    does not complete at once) before the baseline: a later start shows as a thread's stack and
    its malloc arena, new mappings that are not a leak."""
    if comm.size < 2:
        return
    dst, src = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    got = np.empty(4, np.float64)
    receiving = comm.recv(got, src, tag=WARM_UP_TAG, async_op=True)
    comm.barrier()
    comm.send(np.full(4, float(comm.rank)), dst, tag=WARM_UP_TAG)
    receiving.wait()
    if not np.array_equal(got, np.full(4, float(src))):
        raise AssertionError(f"rank {comm.rank}: the warm-up receive from rank {src} got {got!r}")


def resident_bytes() -> dict[str, int]:
    """Resident memory of this process: private (RssAnon: the heap, where a leak shows) and
    shared (RssShmem: pages of shared-memory segments touched so far)."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssShmem:")):
                name, value, _ = line.split()
                found[name[3:-1].lower()] = int(value) * 1024
    return found


def descriptors() -> set[str]:
    """What each open descriptor points at (to name a leak)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass  # the descriptor listdir itself used, closed by now
    return found


def run_call(comm: Any, c: Call, pools: Pools, what: str) -> None:
    """Issue ``c`` on ``comm`` and check this rank's result against the reference."""
    size, me, n, dtype, op, root = comm.size, comm.rank, c.count, c.dtype, c.op, c.root

    def check(got: Any, want: np.ndarray, op: ReduceOp | None = None, note: str = "") -> None:
        got = np.asarray(got)
        if got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want):
            return  # (exact inputs: exact results; else within tolerance, or it says how not)
        ref.assert_close(got, want, op=op, world_size=size, what=f"{what}{note} on rank {me}: {c}")

    pool = pools.get(dtype, op, c.large)
    inputs = [p[c.offset : c.offset + n] for p in pool]
    mine = inputs[me].copy()
    kw: dict[str, Any] = {"algorithm": c.algorithm, "async_op": c.async_op}

    def done(result: Any) -> Any:
        return result.wait() if c.async_op else result

    if c.kind == "all_reduce":
        want = ref.all_reduce(inputs, op)[me] if n else mine
        if c.out_of_place:
            check(done(comm.all_reduce(mine, op, out=np.empty_like(mine), **kw)), want, op)
            check(mine, inputs[me], note=" (x left as it was)")
        else:
            check(done(comm.all_reduce(mine, op, **kw)), want, op)
    elif c.kind == "reduce_scatter":
        out = np.empty(n // size, dtype)
        done(comm.reduce_scatter(mine, out, op, **kw))
        check(out, ref.reduce_scatter(inputs, op)[me] if n else out, op)
    elif c.kind == "all_gather":
        out = np.empty(n * size, dtype)
        done(comm.all_gather(mine, out, **kw))
        check(out, np.concatenate(inputs))
    elif c.kind == "broadcast":
        done(comm.broadcast(mine, root, **kw))
        check(mine, inputs[root])
    elif c.kind == "reduce":
        done(comm.reduce(mine, root, op, **kw))
        check(mine, ref.reduce(inputs, root, op)[me] if n and me == root else inputs[me], op)
    elif c.kind == "gather":
        got = done(comm.gather(mine, np.empty(n * size, dtype) if me == root else None, root, **kw))
        if me == root:
            check(got, np.concatenate(inputs))
        elif got is not None:
            raise AssertionError(f"{what} on rank {me}: gather returned {got!r} on a rank that is not the root")
    elif c.kind == "scatter":
        out = np.empty(n // size, dtype)
        done(comm.scatter(mine if me == root else None, out, root, **kw))
        k = n // size
        check(out, inputs[root][me * k : (me + 1) * k])
    elif c.kind == "all_to_all":
        out = np.empty(n, dtype)
        done(comm.all_to_all(mine, out, **kw))
        check(out, ref.all_to_all(inputs)[me])
    elif c.kind == "all_to_all_v":
        assert c.splits is not None
        sent = [p[c.offset : c.offset + sum(row)] for p, row in zip(pool, c.splits)]
        out_splits = [c.splits[j][me] for j in range(size)]
        got = done(comm.all_to_all_v(sent[me].copy(), c.splits[me], out_splits, **kw))
        check(got, ref.all_to_all_v(sent, c.splits)[me])
    elif c.kind == "barrier":
        done(comm.barrier(async_op=c.async_op))
    else:  # send_recv: a shift around the ring, each rank's receive posted after its send
        dst, src = (me + c.shift) % size, (me - c.shift) % size
        sending = comm.send(mine, dst, tag=c.tag, async_op=True)
        got = comm.recv(np.empty_like(mine), src, tag=c.tag)
        sending.wait()
        check(got, inputs[src])


def mappings() -> set[str]:
    """This process's memory mappings, each as its address range, permissions and path (a
    segment mapped and never unmapped shows here even once its descriptor is closed)."""
    with open("/proc/self/maps") as f:
        return {" ".join(line.split()[:2] + line.split()[5:]) for line in f}


ARENA_BYTES = 64 << 20
"""The reservation of one glibc malloc arena (HEAP_MAX_SIZE on 64-bit): a thread that mallocs
while another holds its arena gets a new one, mapped as a read-write head and the rest of the
reservation with no access, which ends on this alignment. glibc bounds their number (8 per
core); it is not a leak."""


def new_arenas(new_mappings: Sequence[str]) -> int:
    """How many of ``new_mappings`` (as :func:`mappings` writes them) are the no-access rest
    of a new malloc arena's reservation (each comes with its read-write head)."""
    count = 0
    for line in new_mappings:
        fields = line.split()
        if len(fields) == 2 and fields[1] == "---p" and int(fields[0].split("-")[1], 16) % ARENA_BYTES == 0:
            count += 1
    return count


def sample() -> dict[str, Any]:
    return {**resident_bytes(), "descriptors": descriptors(), "mappings": mappings(),
            "threads": {f"{t.name} ({t.native_id})" for t in threading.enumerate()}}


def soak(comm: Any, calls: int, pools: Pools, layout: tuple[str, ...] = ()) -> dict[str, Any]:
    """A warm-up pass, then ``calls`` random collectives on ``comm``, each checked (the
    sequence follows from ``pools.seed``). Returns the figures: seconds and CPU seconds of
    the random calls, calls per collective, :func:`sample` after the first thousand
    (``first``) and at the end (``end``), descriptors and mappings as counts, plus
    ``new_descriptors`` and ``new_mappings`` (those at the end not there at first),
    private memory every thousand calls and its floors over the first and last thousand."""
    assert pools.size == comm.size
    rng = random.Random(pools.seed)
    for i, c in enumerate(warm_up_calls(rng, comm.size, layout)):
        run_call(comm, c, pools, f"warm-up call {i}")
    start_point_to_point(comm)
    counts = dict.fromkeys(COLLECTIVES, 0)
    first = sample()
    private: list[int] = []  # every EVERY calls
    start, cpu = time.monotonic(), time.process_time()
    for i in range(calls):
        if i == FIRST:
            first = sample()
        if i % EVERY == 0:
            private.append(resident_bytes()["anon"])
        c = draw(rng, comm.size, layout)
        counts[c.kind] += 1
        run_call(comm, c, pools, f"call {i}")
    seconds, cpu = time.monotonic() - start, time.process_time() - cpu
    private.append(resident_bytes()["anon"])
    end = sample()
    new = sorted(end["descriptors"] - first["descriptors"])
    new_mappings = sorted(end["mappings"] - first["mappings"])
    new_threads = sorted(end["threads"] - first["threads"])
    for counted in ("descriptors", "mappings", "threads"):
        first[counted], end[counted] = len(first[counted]), len(end[counted])
    window = FIRST // EVERY
    return {"seconds": seconds, "cpu_seconds": cpu, "counts": counts, "first": first, "end": end,
            "new_descriptors": new, "new_mappings": new_mappings,
            "new_threads": new_threads, "private": private[::window],
            "private_floor_first": min(private[:window]), "private_floor_last": min(private[-window:])}
