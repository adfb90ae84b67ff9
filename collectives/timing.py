"""Time our own collectives per call, the same way on every rank: what ``collectives-tune``
fits the cost model to and what ``perf/validate_model.py`` checks its predictions against.

Each case (collective, bytes, algorithm) runs a few warm-up calls, then ``rounds`` batches
of back-to-back calls behind a barrier, the cases in another order each round (``round_order``);
a case's time is the fastest batch's time per call on the slowest rank (the caller takes the
maximum over ranks). With ``repeats``
(``measure_repeats``) all of that is done several times over, every case once per repeat
before the next repeat begins, so that two repeats of one case are minutes apart at most and
their difference shows how reproducible the figure is. ``measure_outside`` also tells, per case,
how much CPU work outside the job ran on the machine while the case was timed (``machine_cpu``).
"""

from __future__ import annotations

import math
import os
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


def machine_cpu() -> tuple[Callable[[], float], str] | None:
    """A reader of the CPU seconds every task on the machine has used, and what it reads: the root
    cgroup's ``cpuacct.usage`` (cgroup v1, ns) or ``cpu.stat`` ``usage_usec`` (v2), else
    ``/proc/stat``'s busy time (10 ms ticks, steal included); None where none is readable. The
    cgroup counters are exact to the scheduler's last update, where ``/proc/stat`` is 10 ms coarse:
    a small call's batches last a few ms."""
    try:
        usage = open("/sys/fs/cgroup/cpuacct/cpuacct.usage", "rb", buffering=0)
        int(usage.read())
    except (OSError, ValueError):
        pass
    else:
        def read_v1() -> float:
            usage.seek(0)
            return int(usage.read()) * 1e-9
        return read_v1, "cpuacct.usage"
    def read_v2() -> float:
        with open("/sys/fs/cgroup/cpu.stat") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("usage_usec ")) * 1e-6
    def read_stat() -> float:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    for read, source in ((read_v2, "cpu.stat"), (read_stat, "/proc/stat")):
        try:
            read()
        except (OSError, ValueError, StopIteration):
            continue
        return read, source
    return None


def time_cases(comm: Any, cases: Sequence[Case], rounds: int = 5) -> list[float]:
    """Seconds per call of each case on this rank (the fastest of ``rounds`` batches: on a shared machine noise only adds time),
    the cases interleaved round by round so that load falls on all of them alike."""
    return [r[0] for r in time_repeats(comm, cases, rounds, 1)]


def time_repeats(comm: Any, cases: Sequence[Case], rounds: int = 5, repeats: int = 1,
                 cpu: list[list[float]] | None = None) -> list[list[float]]:
    """Per case, ``time_cases``'s figure ``repeats`` times: every case's ``rounds`` batches
    (interleaved round by round), then all of them again. With ``cpu`` (a list), each batch is
    followed by a second barrier, after which every rank reads its own CPU time and rank 0 the
    machine's (``machine_cpu``): outside the timed span, and at nearly the same moment on every
    rank, where before the first barrier a rank that finished early would count its wait there
    and rank 0 not. ``cpu`` then gets per case the sums over its batches of: seconds since the
    previous batch's reading, this process's CPU seconds in them, and the machine's (rank 0; NaN
    elsewhere)."""
    calls = [_call(comm, c, n, None if a == "auto" else a) for c, n, a in cases]
    per_batch = [calls_for(n) for _, n, _ in cases]
    for call in calls:  # warm-up: plans built and kept
        call()
        call()
    out: list[list[float]] = [[] for _ in cases]
    reader = machine_cpu() if cpu is not None and comm.rank == 0 else None
    machine = reader[0] if reader else lambda: math.nan
    sums = [[0.0, 0.0, 0.0] for _ in cases]
    if cpu is not None:
        comm.barrier()
        read = [time.process_time(), machine(), time.perf_counter()]  # own first: it brings this CPU's count up
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
                if cpu is not None:
                    comm.barrier()
                    now = [time.process_time(), machine(), time.perf_counter()]
                    sums[i][0] += now[2] - read[2]
                    sums[i][1] += now[0] - read[0]
                    sums[i][2] += now[1] - read[1]
                    read = now
        for i, s in enumerate(samples):
            out[i].append(min(s))
    if cpu is not None:
        cpu[:] = sums
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
    return _measure(cases, size, transport, rounds, timeout, hosts, repeats, netns, False)[0]


def measure_outside(cases: Sequence[Case], size: int, transport: str, *, rounds: int = 5, timeout: float = 600,
                    hosts: Sequence[str] | None = None, repeats: int = 1,
                    netns: Sequence[Host] | None = None) -> tuple[list[list[float]], list[float | None]]:
    """``measure_repeats``, and per case the cores' worth of CPU work outside the job while it
    was timed: the machine's CPU seconds over the case's batches (``time_repeats``' spans, on
    rank 0) less the job's ranks' own (each process counted once), over the spans' seconds
    (None where the machine's time is not readable). 0 is a machine that ran nothing else; a
    busy loop beside the job that took a whole core would be 1."""
    return _measure(cases, size, transport, rounds, timeout, hosts, repeats, netns, True)


def _measure(cases: Sequence[Case], size: int, transport: str, rounds: int, timeout: float,
             hosts: Sequence[str] | None, repeats: int, netns: Sequence[Host] | None,
             outside: bool) -> tuple[list[list[float]], list[float | None]]:
    from .testing import run_world

    if repeats < 1 or rounds < 1:
        raise InvalidArgumentError(f"rounds ({rounds}) and repeats ({repeats}) must be at least 1")
    unknown = sorted({c for c, _, _ in cases} - set(COLLECTIVES))
    if unknown:  # before starting a world, so the error is ours and not a rank's
        raise InvalidArgumentError(f"collective: {unknown[0]!r} is not one of {', '.join(COLLECTIVES)}")
    def rank(comm: Any) -> tuple[list[list[float]], list[list[float]], int]:
        cpu: list[list[float]] = []
        return time_repeats(comm, cases, rounds, repeats, cpu if outside else None), cpu, os.getpid()

    per_rank = run_world(rank, size, transport, timeout=timeout, hosts=hosts, netns=netns)
    times = [[max(r[0][i][k] for r in per_rank) for k in range(repeats)] for i in range(len(cases))]
    if not outside:
        return times, []
    return times, outside_shares([(cpu, pid) for _, cpu, pid in per_rank])


def outside_shares(per_rank: Sequence[tuple[Sequence[Sequence[float]], int]]) -> list[float | None]:
    """Per case, the cores' worth of work outside the job from each rank's ``time_repeats`` ``cpu``
    sums and process id (rank order): rank 0's machine CPU seconds less every process's own (a
    process whose ranks are threads counted once), over rank 0's seconds; None where rank 0 could
    not read the machine's."""
    first = {pid: cpu for cpu, pid in reversed(per_rank)}
    shares: list[float | None] = []
    for i, (span, _, used) in enumerate(per_rank[0][0]):
        own = sum(cpu[i][1] for cpu in first.values())
        shares.append(None if math.isnan(used) or span <= 0 else (used - own) / span)
    return shares
