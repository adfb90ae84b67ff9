"""Helpers of the mismatch, recorder and skew tests: fresh communicators inside a job.

A ``run_world`` job hands each rank one communicator; a case that leaves it broken (a
count mismatch) or that needs other settings per rank (skew) makes its own over the job's
store instead, under a name of its own, so that one job runs many cases.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import collectives
from collectives.store import PrefixStore


def fresh(comm: Any, name: str, transport: str, **settings: Any) -> Any:
    """A new communicator of ``comm``'s ranks, meeting under ``name`` in the job's store."""
    store = comm.store
    while isinstance(store, PrefixStore):  # the job's own store, under the communicator's prefixes
        store = store.store
    settings.setdefault("timeout", 5.0)
    return collectives.init(rank=comm.rank, size=comm.size, store=PrefixStore(f"case/{name}", store),
                            transport=transport, **settings)


SCHEDULES = ("ring", "tree", "recursive")
ALGORITHMS = {
    # every algorithm= each collective takes (None: automatic, "direct" on shared memory)
    "all_reduce": (None, *SCHEDULES, "direct"),
    "reduce_scatter": (None, *SCHEDULES, "direct"),
    "all_gather": (None, *SCHEDULES, "direct"),
    "broadcast": (None, *SCHEDULES, "direct"),
    "reduce": (None, *SCHEDULES),
    "gather": (None, *SCHEDULES),
    "scatter": (None, *SCHEDULES),
    "all_to_all": (None, *SCHEDULES),
    "all_to_all_v": (None, *SCHEDULES),
}
RECEIVES_NOTHING = {("broadcast", "root"), ("reduce", "other"), ("gather", "other"), ("scatter", "root")}
"""(collective, role) pairs whose rank takes no data from its peers: it may return, with
its own data untouched, where the peers raise (as MPI's and NCCL's senders do)."""


def rank_data(rank: int, n: int) -> np.ndarray:
    """Rank ``rank``'s input of ``n`` elements: distinct per rank and index."""
    return ((rank + 1) * 100 + np.arange(n)).astype(np.float32)


def call_with_count(comm: Any, collective: str, k: int, algorithm: str | None) -> Any:
    """Run ``collective`` with ``k`` elements per rank; returns what the rank ended with."""
    kw = {"algorithm": algorithm}
    n, me = comm.size, comm.rank
    if collective == "all_reduce":
        return comm.all_reduce(rank_data(me, k), **kw)
    if collective == "reduce_scatter":
        return comm.reduce_scatter(rank_data(me, k * n), np.zeros(k, np.float32), **kw)
    if collective == "all_gather":
        return comm.all_gather(rank_data(me, k), np.zeros(k * n, np.float32), **kw)
    if collective == "broadcast":
        return comm.broadcast(rank_data(me, k), 0, **kw)
    if collective == "reduce":
        return comm.reduce(rank_data(me, k), 0, **kw)
    if collective == "gather":
        return comm.gather(rank_data(me, k), None, 0, **kw)
    if collective == "scatter":
        return comm.scatter(rank_data(me, k * n) if me == 0 else None, np.zeros(k, np.float32), 0, **kw)
    if collective == "all_to_all":
        return comm.all_to_all(rank_data(me, k * n), **kw)
    return comm.all_to_all_v(rank_data(me, k * n), [k] * n, [k] * n, **kw)  # as if every rank sent k


def expected_result(collective: str, me: int, n: int, k: int) -> Any:
    """What rank ``me`` ends with where every rank passed ``k`` elements."""
    every = [rank_data(r, k) for r in range(n)]
    blocks = [rank_data(r, k * n)[me * k : (me + 1) * k] for r in range(n)]
    return {
        "all_reduce": sum(every),
        "reduce_scatter": sum(blocks),
        "all_gather": np.concatenate(every),
        "broadcast": every[0],
        "reduce": sum(every) if me == 0 else every[me],
        "gather": np.concatenate(every) if me == 0 else None,
        "scatter": rank_data(0, k * n)[me * k : (me + 1) * k],
        "all_to_all": np.concatenate(blocks),
        "all_to_all_v": np.concatenate(blocks),
    }[collective]


def count_outcome(comm: Any, collective: str, k: int, algorithm: str | None) -> str:
    """Run ``collective`` where the last rank passes ``k - 1`` elements and the others
    ``k``: "returned" (with the right result for this rank's count), "returned wrong
    data", or the name of the CollectivesError raised."""
    mine = k - 1 if comm.rank == comm.size - 1 else k
    try:
        got = call_with_count(comm, collective, mine, algorithm)
    except collectives.CollectivesError as exc:
        return type(exc).__name__
    want = expected_result(collective, comm.rank, comm.size, mine)
    right = (got is None and want is None) or (got is not None and want is not None and np.array_equal(got, want))
    return "returned" if right else "returned wrong data"


def wrong_outcomes(outcomes: list[list[tuple[str, str | None, int, str]]]) -> list[str]:
    """What breaks the promise in per-rank lists of (collective, algorithm, k, outcome):
    wrong data anywhere; the odd (last) rank returning where it takes data from a peer; a
    case where no rank names the mismatch itself (MessageMismatchError)."""
    size = len(outcomes)
    wrong = []
    for rank, cases in enumerate(outcomes):
        role = "root" if rank == 0 else "other"
        for collective, algorithm, k, outcome in cases:
            where = f"rank {rank}: {collective} algorithm={algorithm} k={k}: {outcome}"
            if outcome == "returned wrong data":
                wrong.append(where)
            elif rank == size - 1 and outcome == "returned" and (collective, role) not in RECEIVES_NOTHING:
                wrong.append(where + " although it passed another count")
    for i, case in enumerate(outcomes[0]):
        if "MessageMismatchError" not in {outcomes[r][i][3] for r in range(size)}:
            wrong.append(f"{case[:3]}: no rank raised MessageMismatchError ({[outcomes[r][i][3] for r in range(size)]})")
    return wrong
