"""engines/executor.py: the work buffer an out-of-place call's input pends into is kept from
call to call (a fresh large one would be mapped and faulted in on every call); a reducing receive
is folded as it arrives where no operation in flight touches its range, else from scratch, and
either way every root gets the reduction (ranks are threads over real transports)."""

from __future__ import annotations

import functools
import importlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np
import pytest

from collectives.algorithms import ring, tree
from collectives.algorithms.schedule import Step
from collectives.engines.executor import STREAM_FOLD_BYTES, Executor
from collectives.ops import ReduceOp, kernel_of
from collectives.store import HashStore
from collectives.testing import build_world, make_inproc_world
from collectives.transports.base import Transport
from collectives.transports.progress import ProgressEngine


def test_a_work_buffer_is_kept_per_dtype_grown_when_too_small_and_dropped_on_release() -> None:
    executor = Executor({}, ProgressEngine([]))
    first = executor.work_for(np.dtype(np.float32), 1000)
    assert first.shape == (1000,) and first.dtype == np.float32
    again = executor.work_for(np.dtype(np.float32), 600)
    assert again.shape == (600,) and np.shares_memory(first, again)  # the same memory, shorter
    other = executor.work_for(np.dtype(np.int64), 600)
    assert not np.shares_memory(first, other)  # one per dtype
    grown = executor.work_for(np.dtype(np.float32), 2000)
    assert grown.shape == (2000,) and not np.shares_memory(first, grown)
    executor.release_scratch()
    assert not np.shares_memory(grown, executor.work_for(np.dtype(np.float32), 10))


# -- reducing receives folded as they arrive ------------------------------------------------

SEGMENT = STREAM_FOLD_BYTES // 8 * 2 + 7  # float64 elements: segments above the streaming size ...
COUNT = 2 * SEGMENT + STREAM_FOLD_BYTES // 8 + 3  # ... an odd count, the last one shorter but above it


def _world(kind: str, n: int) -> list[Transport]:
    if kind == "inproc":
        return make_inproc_world(n)
    if kind == "shm":
        return build_world(importlib.import_module("collectives.transports.shm").ShmTransport, n)
    store = HashStore(timeout=20.0)
    store.set("secret", secrets.token_bytes(32))
    return build_world(importlib.import_module("collectives.transports.tcp").TcpTransport, n, store=store)


def _reduce_everywhere(kind: str, n: int, schedule: Callable[..., Iterable[Step]], segment: int,
                       op: ReduceOp) -> list[tuple[np.ndarray, np.ndarray, list[Executor]]]:
    """For every root: ``schedule`` run on one world of ``n`` threads, the non-roots' work buffers
    pending on their inputs; (the root's result, the reference, every rank's executor)."""
    world = _world(kind, n)
    xs = [((np.arange(COUNT) * (r + 3) + 5 * r) % 89 - 40).astype(np.float64) for r in range(n)]
    results = []
    try:
        for root in range(n):
            executors = [Executor(t.channels, ProgressEngine([t])) for t in world]
            outs: list[np.ndarray | None] = [None] * n
            failures: list[BaseException] = []

            def body(r: int) -> None:
                try:
                    steps = schedule(r, n, root, COUNT, segment)
                    run = functools.partial(executors[r].run, steps, op=op, tag=root + 1,
                                            deadline=time.monotonic() + 20, on_timeout=RuntimeError)
                    if r == root:
                        outs[r] = xs[r].copy()
                        run([outs[r]])
                    else:
                        work = np.empty(COUNT)
                        left = run([work], source=xs[r])
                        assert left is not None
                        left.finish()
                        outs[r] = work
                except BaseException as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=body, args=(r,)) for r in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not failures, failures
            want = functools.reduce(lambda a, b: kernel_of(op)(a, b), xs)
            results.append((outs[root], want, executors))
    finally:
        for t in world:
            t.close()
    return results


@pytest.mark.parametrize("kind", ["inproc", "shm", "tcp"])
@pytest.mark.parametrize("n", [3, 4])
def test_a_ring_reduce_folds_every_piece_as_it_arrives_and_gives_every_root_the_reduction(kind: str, n: int) -> None:
    for root, (got, want, executors) in enumerate(_reduce_everywhere(kind, n, ring.reduce, SEGMENT, ReduceOp.SUM)):
        assert got.tobytes() == want.tobytes(), f"root {root}"
        assert [e.scratch_folds for e in executors] == [0] * n  # nothing lands in scratch first
        head = (root + n - 1) % n  # the chain's first rank folds nothing
        assert [e.streamed_folds for e in executors] == [0 if r == head else COUNT for r in range(n)]


def test_a_tree_reduce_folds_as_they_arrive_the_pieces_whose_range_no_step_in_flight_folds() -> None:
    # the root of 4 folds child 1's piece of a segment, then child 2's: the second may not fold
    # into that range while the first's fold is in flight, so it lands in scratch as before
    for root, (got, want, executors) in enumerate(_reduce_everywhere("shm", 4, tree.reduce, SEGMENT, ReduceOp.MAX)):
        assert got.tobytes() == want.tobytes(), f"root {root}"
        assert (executors[root].streamed_folds, executors[root].scratch_folds) == (COUNT, COUNT)


def test_pieces_below_the_streaming_size_are_folded_from_scratch() -> None:
    small = STREAM_FOLD_BYTES // 8 - 1
    for got, want, executors in _reduce_everywhere("shm", 3, ring.reduce, small, ReduceOp.SUM):
        assert got.tobytes() == want.tobytes()
        assert sum(e.streamed_folds for e in executors) == 0
        assert sum(e.scratch_folds for e in executors) == 2 * COUNT
