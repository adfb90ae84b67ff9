"""What one rank does for a row of the table: nccl-tests' ``BenchTime``, twice.

For each placement (out-of-place, then in-place):

1. zeroed buffers of the row's size (nccl-tests' layouts, ``-u`` misalignment);
2. before the out-of-place cell, the row's warm-up (``spec.warm`` untimed collectives,
   sized by perf.sweep), then one untimed collective and a barrier, so every rank starts
   the clock together;
3. ``iters x agg_iters`` back-to-back collectives timed with ``time.perf_counter``
   (a monotonic clock, like nccl-tests' steady_clock); ``-z 1`` adds a barrier after each
   collective (timed), ``-z 3`` one after each outer iteration (not timed);
4. per-collective time = elapsed / (iters x agg_iters), in microseconds;
5. a barrier, then ``-c`` verification rounds: fill the buffers with generated data
   (seed = the cell's ``rep``), run the collective once, count wrong elements.

The times and counts of every rank are combined by the caller (perf.harness), either
in the coordinator (``--np``) or with the backend's own all-gather (external launchers).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .colls import COLLECTIVES, numpy_dtype, warmup_sizes
from .verify import count_wrong, prepare, tolerance

CALL_LOG_ENV = "PERF_CALL_LOG"
"""A folder: each rank appends its cells' per-call end times there (``_logged_loop``)."""


@dataclass
class RowSpec:
    """Everything a world needs to run one row (sent as JSON to --np workers)."""

    coll: str
    dtype: str
    op: str
    root: int
    size: int
    iters: int = 20
    agg: int = 1
    check: int = 1
    blocking: int = 0
    unalign: int = 0
    reps: tuple[int, int] = (1, 2)
    corrupt: int = -1  # test hook: this rank flips a bit of its result before checking
    warm: int = 0  # untimed calls at the row's size before the out-of-place cell (perf.sweep sizes them)

    def to_msg(self) -> dict[str, Any]:
        return {"cmd": "row", **asdict(self)}

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> RowSpec:
        fields = {k: v for k, v in msg.items() if k != "cmd"}
        fields["reps"] = tuple(fields.get("reps", (1, 2)))
        return cls(**fields)


@dataclass
class RankRow:
    """One rank's measurement of a row: microseconds and wrong elements per round,
    per placement (None where the placement is not verified)."""

    time: list[float]
    wrong: list[list[int] | None] = field(default_factory=lambda: [None, None])

    def to_msg(self) -> dict[str, Any]:
        return {"time": self.time, "wrong": self.wrong}

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> RankRow:
        return cls(list(msg["time"]), list(msg["wrong"]))


def _flip(recv: np.ndarray) -> None:
    """Test hook: flip the sign bit (top bit) of element 0."""
    if recv.size:
        raw = recv[:1].view(np.uint8)
        raw[recv.dtype.itemsize - 1] ^= 0x80


def bench_cell(backend: Any, spec: RowSpec, in_place: bool) -> tuple[float, list[int] | None]:
    coll = COLLECTIVES[spec.coll]
    dtype = numpy_dtype(spec.dtype) if spec.coll != "barrier" else np.dtype(np.uint8)
    rank, n = backend.rank, backend.size
    count = coll.counts(spec.size, dtype.itemsize, n)[0]
    send, recv = coll.buffers(rank, n, count, dtype, in_place, spec.unalign)
    op, root = spec.op, spec.root

    if not in_place:  # the row's warm-up: the in-place cell follows this one at the same size, warm
        for _ in range(max(spec.warm, 0)):
            coll.run(backend, send, recv, op, root)
    coll.run(backend, send, recv, op, root)  # sync
    backend.barrier()
    iters, agg, blocking = max(spec.iters, 0), max(spec.agg, 1), spec.blocking
    log_dir = os.environ.get(CALL_LOG_ENV)
    if log_dir and blocking == 0:
        time_us = _logged_loop(backend, spec, coll, send, recv, in_place, iters * agg, log_dir)
        backend.barrier()
        return time_us, _check(backend, spec, coll, dtype, count, send, recv, in_place)
    clock = time.perf_counter
    coll_only = 0.0
    start = clock()
    for _ in range(iters):
        t0 = clock()
        for _ in range(agg):
            coll.run(backend, send, recv, op, root)
            if blocking == 1:
                backend.barrier()
        if blocking == 3:
            coll_only += clock() - t0
            backend.barrier()
    elapsed = coll_only if blocking == 3 else clock() - start
    time_us = elapsed / max(iters * agg, 1) * 1e6
    backend.barrier()
    return time_us, _check(backend, spec, coll, dtype, count, send, recv, in_place)


def _logged_loop(backend: Any, spec: RowSpec, coll: Any, send: np.ndarray, recv: np.ndarray, in_place: bool,
                 calls: int, log_dir: str) -> float:
    """The timed loop of ``-z 0`` with each call's end on CLOCK_MONOTONIC (the clock a tracefs instance
    with ``trace_clock`` mono stamps its events with), appended as one JSON line per cell to
    ``log_dir/<pid>.jsonl`` after the loop: perf/sched_trace.py lines the calls up with the scheduler's
    trace. A list append a call is all it adds to the loop; the plain loop runs without this variable."""
    op, root = spec.op, spec.root
    mono = time.monotonic_ns
    ends: list[int] = []
    start = mono()
    for _ in range(calls):
        coll.run(backend, send, recv, op, root)
        ends.append(mono())
    record = {"pid": os.getpid(), "rank": backend.rank, "size_ranks": backend.size,
              "backend": type(backend).__name__, "coll": spec.coll, "bytes": spec.size, "in_place": in_place,
              "start": start, "ends": ends}
    with open(os.path.join(log_dir, f"{os.getpid()}.jsonl"), "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return (ends[-1] - start) / 1e3 / calls if calls else 0.0


def _check(backend: Any, spec: RowSpec, coll: Any, dtype: np.dtype, count: int, send: np.ndarray,
           recv: np.ndarray, in_place: bool) -> list[int] | None:
    """The cell's ``-c`` verification rounds (None where the placement is not verified)."""
    checked = spec.check > 0 and coll.name != "barrier" and (coll.check_in_place or not in_place)
    if not checked:
        return None
    rank, n, op, root = backend.rank, backend.size, spec.op, spec.root
    rep = spec.reps[1 if in_place else 0]
    tol = tolerance(dtype, op)
    wrongs = []
    for _ in range(spec.check):
        expected = prepare(coll, dtype, op, n, rank, root, count, rep, send, recv)
        coll.run(backend, send, recv, op, root)
        if spec.corrupt == rank:
            _flip(recv)
        wrongs.append(count_wrong(recv, expected, tolerance=tol) if expected is not None else 0)
    return wrongs


def run_row(backend: Any, spec: RowSpec) -> RankRow:
    t_oop, w_oop = bench_cell(backend, spec, in_place=False)
    t_ip, w_ip = bench_cell(backend, spec, in_place=True)
    return RankRow([t_oop, t_ip], [w_oop, w_ip])


def warmup(backend: Any, coll_name: str, dtype_name: str, op: str, root: int, minbytes: int, maxbytes: int,
           iters: int, unalign: int = 0) -> None:
    """nccl-tests' warm-up: ``iters`` out-of-place collectives at every power-of-two
    multiple of ``minbytes`` up to ``maxbytes``."""
    if iters <= 0:
        return
    coll = COLLECTIVES[coll_name]
    dtype = numpy_dtype(dtype_name) if coll_name != "barrier" else np.dtype(np.uint8)
    for size in warmup_sizes(minbytes, maxbytes):
        count = coll.counts(size, dtype.itemsize, backend.size)[0]
        send, recv = coll.buffers(backend.rank, backend.size, count, dtype, False, unalign)
        for _ in range(iters):
            coll.run(backend, send, recv, op, root)
        if coll_name == "barrier":
            break
    backend.barrier()


# -- combining ranks (nccl-tests' -a) -------------------------------------------------------

AVERAGE_NAMES = {0: "rank 0's time", 1: "mean over ranks", 2: "min over ranks", 3: "max over ranks"}


def combine_time(times: list[float], average: int) -> float:
    if average == 0:
        return times[0]
    if average == 2:
        return min(times)
    if average == 3:
        return max(times)
    return sum(times) / len(times)


def combine_wrong(per_rank: list[list[int] | None]) -> tuple[int | None, int]:
    """(#wrong to print, failing ranks) for one cell: like nccl-tests, the sum over ranks
    of the first round with any error (0 if none); failing ranks counts the ranks with a
    local error in that round (nccl-tests' "Out of bounds values" adds those up)."""
    if not per_rank or per_rank[0] is None:
        return None, 0
    rounds = len(per_rank[0])
    for c in range(rounds):
        total = sum(int(w[c]) for w in per_rank if w is not None)
        if total:
            return total, sum(1 for w in per_rank if w is not None and w[c])
    return 0, 0


def pack(row: RankRow, check: int) -> np.ndarray:
    """A rank's row as float64 (for gather_all): 2 times, then 2 x check counts (-1 = N/A)."""
    values = [row.time[0], row.time[1]]
    for w in row.wrong:
        values.extend([-1.0] * check if w is None else [float(x) for x in w])
    return np.array(values, dtype=np.float64)


def unpack(values: np.ndarray, check: int) -> RankRow:
    times = [float(values[0]), float(values[1])]
    wrong: list[list[int] | None] = []
    for p in range(2):
        part = values[2 + p * check: 2 + (p + 1) * check]
        wrong.append(None if check == 0 or (part.size and part[0] < 0) else [int(x) for x in part])
    return RankRow(times, wrong)
