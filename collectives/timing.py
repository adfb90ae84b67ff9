"""Time our own collectives per call, the same way on every rank: what ``collectives-tune``
fits the cost model to and what ``perf/validate_model.py`` checks its predictions against.

Each case (collective, bytes, algorithm) runs a few warm-up calls, then ``rounds`` batches
of back-to-back calls behind a barrier; a case's time is the fastest batch's time
per call on the slowest rank (the caller takes the maximum over ranks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

Case = tuple[str, int, str]
"""(collective, bytes, algorithm or "auto")."""

COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "gather", "scatter",
               "all_to_all")


def _call(comm: Any, collective: str, nbytes: int, algorithm: str | None) -> Callable[[], Any]:
    """A call of ``collective`` moving ``nbytes`` in all (nccl-tests' size; float32 elements)."""
    p = comm.size
    total = max(1, nbytes // 4)
    per = max(1, total // p)
    if collective == "all_reduce":
        x = np.zeros(total, np.float32)
        return lambda: comm.all_reduce(x, algorithm=algorithm)
    if collective == "reduce_scatter":
        x, out = np.zeros(per * p, np.float32), np.empty(per, np.float32)
        return lambda: comm.reduce_scatter(x, out, algorithm=algorithm)
    if collective == "all_gather":
        x, out = np.zeros(per, np.float32), np.empty(per * p, np.float32)
        return lambda: comm.all_gather(x, out, algorithm=algorithm)
    if collective == "broadcast":
        x = np.zeros(total, np.float32)
        return lambda: comm.broadcast(x, 0, algorithm=algorithm)
    if collective == "reduce":
        x = np.zeros(total, np.float32)
        return lambda: comm.reduce(x, 0, algorithm=algorithm)
    if collective == "gather":
        x, out = np.zeros(per, np.float32), np.empty(per * p, np.float32)
        return lambda: comm.gather(x, out if comm.rank == 0 else None, 0, algorithm=algorithm)
    if collective == "scatter":
        x, out = np.zeros(per * p, np.float32), np.empty(per, np.float32)
        return lambda: comm.scatter(x if comm.rank == 0 else None, out, 0, algorithm=algorithm)
    if collective == "all_to_all":
        x, out = np.zeros(per * p, np.float32), np.empty(per * p, np.float32)
        return lambda: comm.all_to_all(x, out, algorithm=algorithm)
    raise InvalidArgumentError(f"collective: {collective!r} is not one of {', '.join(COLLECTIVES)}")


def calls_for(nbytes: int, budget: float = 0.05) -> int:
    """Calls per batch: many for small calls, one for large (about ``budget`` s per batch at 1 GB/s)."""
    return max(1, min(50, int(budget * 1e9 / max(nbytes, 1 << 14))))


def time_cases(comm: Any, cases: Sequence[Case], rounds: int = 5) -> list[float]:
    """Seconds per call of each case on this rank (the fastest of ``rounds`` batches: on a shared machine noise only adds time),
    the cases interleaved round by round so that load falls on all of them alike."""
    calls = [_call(comm, c, n, None if a == "auto" else a) for c, n, a in cases]
    per_batch = [calls_for(n) for _, n, _ in cases]
    for call in calls:  # warm-up: plans built and kept
        call()
        call()
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for i, call in enumerate(calls):
            comm.barrier()
            start = time.perf_counter()
            for _ in range(per_batch[i]):
                call()
            samples[i].append((time.perf_counter() - start) / per_batch[i])
    return [min(s) for s in samples]


def measure(cases: Sequence[Case], size: int, transport: str, *, rounds: int = 5, timeout: float = 600,
            hosts: Sequence[str] | None = None) -> list[float]:
    """Run ``cases`` on a world of ``size`` ranks over ``transport`` (``run_world``); seconds
    per call of each, on the slowest rank."""
    from .testing import run_world

    unknown = sorted({c for c, _, _ in cases} - set(COLLECTIVES))
    if unknown:  # before starting a world, so the error is ours and not a rank's
        raise InvalidArgumentError(f"collective: {unknown[0]!r} is not one of {', '.join(COLLECTIVES)}")
    per_rank = run_world(lambda comm: time_cases(comm, cases, rounds), size, transport, timeout=timeout,
                         hosts=hosts)
    return [max(rank[i] for rank in per_rank) for i in range(len(cases))]
