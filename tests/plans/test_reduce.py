"""Reduce: on one host over shared memory, small reduces run as the small window's all-reduce
whose result only the root keeps (``windowed.SmallReduce``) where every rank has a core; larger
ones, those where ranks outnumber cores, and any asked for by name, run their schedule. Either way the root gets the rank-order reduction and every other
rank's ``x`` stays as it was."""

from __future__ import annotations

import numpy as np
import pytest

from collectives.algorithms.registry import DIRECT_REDUCE_BYTES
from collectives.testing import run_world
from collectives.transports.progress import oversubscribed

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
def test_small_reduces_take_the_window_and_every_reduce_gives_the_root_the_reduction(size):
    results = run_world(_reduces, size, "shm", timeout=60)
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
    routes = results[0][1]
    # the window's all-reduce where every rank has a core, else the schedule (every rank waiting
    # for every other costs a round of context switches there)
    small_route = "Reduce" if oversubscribed(size) else "SmallReduction"
    assert routes[(1, None)] == routes[(300, None)] == ("SmallReduce", small_route)
    assert routes[(LARGE, None)][0] == routes[(300, "tree")][0] == "Reduce"
