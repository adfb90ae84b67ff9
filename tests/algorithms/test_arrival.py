"""algorithms/arrival.py: which reducing receives the executor folds as they arrive. The rule is
the executor's own: the counts it reports running the schedules over real channels are the
counts the rule gives each rank's steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import numpy as np
import pytest

from collectives.algorithms import recursive, ring, tree
from collectives.algorithms.arrival import STREAM_FOLD_BYTES, arrivals, folds_on_arrival
from collectives.algorithms.schedule import Recv, Send, Step, partition
from collectives.engines.executor import Executor
from collectives.ops import ReduceOp
from collectives.testing import make_inproc_world
from collectives.transports.progress import ProgressEngine

BIG = STREAM_FOLD_BYTES // 4  # float32 elements of a receive just at the streaming size


def test_a_large_reducing_receive_folds_on_arrival_unless_its_range_is_busy() -> None:
    fold = Recv(1, 0, BIG, reduce=True)
    assert folds_on_arrival((fold, Send(2, BIG, BIG)), None, int, 4) == {0}
    assert folds_on_arrival((fold, Send(2, BIG - 1, BIG)), None, int, 4) == set()  # a send reads it meanwhile
    assert folds_on_arrival((fold,), [(0, 5, 6)], int, 4) == set()  # the step in flight touches it
    assert folds_on_arrival((fold,), [(1, 5, 6)], int, 4) == {0}  # another buffer
    assert folds_on_arrival((Recv(1, 0, BIG - 1, reduce=True),), None, int, 4) == set()  # too small
    assert folds_on_arrival((Recv(1, 0, BIG),), None, int, 4) == set()  # not a fold


def test_a_tree_roots_second_child_lands_in_scratch_while_the_first_ones_fold_is_in_flight() -> None:
    steps = list(arrivals(tree.reduce(0, 4, 0, 3 * BIG, BIG), 4))
    assert [sorted(a) for _, a in steps] == [[0], [], [0], [], [0], []]


def _streamed_by_the_executor(factory: Callable[[int], Iterable[Step]], n: int, count: int) -> list[int]:
    world = make_inproc_world(n)
    executors = [Executor(t.channels, ProgressEngine([t])) for t in world]

    def body(r: int) -> None:
        executors[r].run(factory(r), [np.ones(count, np.float32)], op=ReduceOp.SUM, tag=1,
                         deadline=time.monotonic() + 20, on_timeout=RuntimeError)

    threads = [threading.Thread(target=body, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for t in world:
        t.close()
    return [e.streamed_folds for e in executors]


SCHEDULES = {
    "ring reduce": lambda r, n, c: ring.reduce(r, n, 1, c, 2 * BIG),
    "tree reduce": lambda r, n, c: tree.reduce(r, n, 1, c, 2 * BIG),
    "ring all_reduce": lambda r, n, c: ring.all_reduce(r, n, c, BIG + 3),
    "tree all_reduce": lambda r, n, c: tree.all_reduce(r, n, c, 2 * BIG),
    "recursive all_reduce": lambda r, n, c: recursive.all_reduce(r, n, c, 2 * BIG),
    "ring reduce_scatter": lambda r, n, c: ring.reduce_scatter(r, n, partition(c, n), BIG + 3),
}


@pytest.mark.parametrize("n", [3, 4])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_the_rule_counts_what_the_executor_folds_on_arrival(name: str, n: int) -> None:
    count = 9 * BIG + 7
    factory = SCHEDULES[name]
    by_rule = [sum(step[i].count for step, arriving in arrivals(factory(r, n, count), 4) for i in arriving)
               for r in range(n)]
    assert by_rule == _streamed_by_the_executor(lambda r: factory(r, n, count), n, count)
    assert any(by_rule)
