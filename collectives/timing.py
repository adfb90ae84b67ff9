"""Time our own collectives per call, the same way on every rank: what ``collectives-tune``
fits the cost model to and what ``perf/validate_model.py`` checks its predictions against.

Each case (collective, bytes, algorithm) runs a few warm-up calls, then ``rounds`` batches
of back-to-back calls behind a barrier, the cases in another order each round (``round_order``);
a case's time is the fastest batch's time per call on the slowest rank (the caller takes the
maximum over ranks). With ``repeats``
(``measure_repeats``) all of that is done several times over, every case once per repeat
before the next repeat begins, so that two repeats of one case are minutes apart at most and
their difference shows how reproducible the figure is.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .testing.netns import Host

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


def round_order(n: int, k: int) -> list[int]:
    """The order of ``n`` cases in round ``k`` (the same on every rank): rotated by ``k`` and, in
    odd rounds, reversed, so that a case does not always follow the same one. A batch's time
    depends on how the case before left the ranks (one still finishing while the other starts
    the barrier): in a fixed order that cost falls on the same case every round."""
    order = [(i + k) % n for i in range(n)]
    return order[::-1] if k % 2 else order


def time_cases(comm: Any, cases: Sequence[Case], rounds: int = 5) -> list[float]:
    """Seconds per call of each case on this rank (the fastest of ``rounds`` batches: on a shared machine noise only adds time),
    the cases interleaved round by round so that load falls on all of them alike."""
    return [r[0] for r in time_repeats(comm, cases, rounds, 1)]


def time_repeats(comm: Any, cases: Sequence[Case], rounds: int = 5, repeats: int = 1) -> list[list[float]]:
    """Per case, ``time_cases``'s figure ``repeats`` times: every case's ``rounds`` batches
    (interleaved round by round), then all of them again."""
    calls = [_call(comm, c, n, None if a == "auto" else a) for c, n, a in cases]
    per_batch = [calls_for(n) for _, n, _ in cases]
    for call in calls:  # warm-up: plans built and kept
        call()
        call()
    out: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        samples: list[list[float]] = [[] for _ in cases]
        for k in range(rounds):
            for i in round_order(len(calls), k):
                call = calls[i]
                comm.barrier()
                start = time.perf_counter()
                for _ in range(per_batch[i]):
                    call()
                samples[i].append((time.perf_counter() - start) / per_batch[i])
        for i, s in enumerate(samples):
            out[i].append(min(s))
    return out


def measure(cases: Sequence[Case], size: int, transport: str, *, rounds: int = 5, timeout: float = 600,
            hosts: Sequence[str] | None = None, repeats: int = 1,
            netns: Sequence[Host] | None = None) -> list[float]:
    """Run ``cases`` on a world of ``size`` ranks over ``transport`` (``run_world``, its
    ``hosts`` and ``netns``); seconds per call of each, on the slowest rank (with
    ``repeats``, the median of the repeats)."""
    return [statistics.median(r) for r in measure_repeats(cases, size, transport, rounds=rounds, timeout=timeout,
                                                          hosts=hosts, repeats=repeats, netns=netns)]


def measure_repeats(cases: Sequence[Case], size: int, transport: str, *, rounds: int = 5, timeout: float = 600,
                    hosts: Sequence[str] | None = None, repeats: int = 1,
                    netns: Sequence[Host] | None = None) -> list[list[float]]:
    """``measure``, each case's time per repeat (slowest rank of that repeat), in order."""
    from .testing import run_world

    if repeats < 1 or rounds < 1:
        raise InvalidArgumentError(f"rounds ({rounds}) and repeats ({repeats}) must be at least 1")
    unknown = sorted({c for c, _, _ in cases} - set(COLLECTIVES))
    if unknown:  # before starting a world, so the error is ours and not a rank's
        raise InvalidArgumentError(f"collective: {unknown[0]!r} is not one of {', '.join(COLLECTIVES)}")
    per_rank = run_world(lambda comm: time_repeats(comm, cases, rounds, repeats), size, transport, timeout=timeout,
                         hosts=hosts, netns=netns)
    return [[max(rank[i][k] for rank in per_rank) for k in range(repeats)] for i in range(len(cases))]
