"""Mismatched calls: a count mismatch raises with checking off, and COLLECTIVES_CHECK names
the differing field on every rank before data moves (issue 16, cases 4 and 5).

Per transport (shm, tcp) at 2 and 4 ranks; the mpi transport in test_faults_mpi_checks.py.
One job per transport and size runs every case, each on a fresh communicator (a count
mismatch leaves its communicator broken, as any transport error does).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

import collectives
from checks_helpers import fresh
from collectives.errors import CollectiveMismatchError, CollectivesError, MessageMismatchError
from collectives.testing import run_world

pytestmark = pytest.mark.multiprocess

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
}
RECEIVES_NOTHING = {("broadcast", "root"), ("reduce", "other"), ("gather", "other"), ("scatter", "root")}
"""(collective, role) pairs whose rank takes no data from its peers: it may return, with
its own data untouched, where the peers raise (as MPI's and NCCL's senders do)."""


def _data(rank: int, n: int) -> np.ndarray:
    """Rank ``rank``'s input of ``n`` elements: distinct per rank and index."""
    return ((rank + 1) * 100 + np.arange(n)).astype(np.float32)


def _call(comm: Any, collective: str, k: int, algorithm: str | None) -> Any:
    """Run ``collective`` with ``k`` elements per rank; returns what the rank ended with."""
    kw = {"algorithm": algorithm}
    n, me = comm.size, comm.rank
    if collective == "all_reduce":
        return comm.all_reduce(_data(me, k), **kw)
    if collective == "reduce_scatter":
        return comm.reduce_scatter(_data(me, k * n), np.zeros(k, np.float32), **kw)
    if collective == "all_gather":
        return comm.all_gather(_data(me, k), np.zeros(k * n, np.float32), **kw)
    if collective == "broadcast":
        return comm.broadcast(_data(me, k), 0, **kw)
    if collective == "reduce":
        return comm.reduce(_data(me, k), 0, **kw)
    if collective == "gather":
        return comm.gather(_data(me, k), None, 0, **kw)
    if collective == "scatter":
        return comm.scatter(_data(me, k * n) if me == 0 else None, np.zeros(k, np.float32), 0, **kw)
    return comm.all_to_all(_data(me, k * n), **kw)


def _expected(collective: str, me: int, n: int, k: int) -> Any:
    """What rank ``me`` ends with where every rank passed ``k`` elements."""
    every = [_data(r, k) for r in range(n)]
    blocks = [_data(r, k * n)[me * k : (me + 1) * k] for r in range(n)]
    return {
        "all_reduce": sum(every),
        "reduce_scatter": sum(blocks),
        "all_gather": np.concatenate(every),
        "broadcast": every[0],
        "reduce": sum(every) if me == 0 else every[me],
        "gather": np.concatenate(every) if me == 0 else None,
        "scatter": _data(0, k * n)[me * k : (me + 1) * k],
        "all_to_all": np.concatenate(blocks),
    }[collective]


def _count_cases(transport: str, large: bool) -> list[tuple[str, str | None, int]]:
    cases = [(c, a, 4) for c, algos in ALGORITHMS.items() for a in algos if a != "direct" or transport == "shm"]
    if large:  # the window engine's larger routes: two-shot, halves, reads of peers' memory
        cases += [(c, a, k) for c in ("all_reduce", "reduce_scatter", "all_gather", "broadcast")
                  for a in ("direct",) for k in (300_000, 2_200_000)]
    return cases


def _count_mismatch_job(transport: str, large: bool) -> Any:
    def fn(comm: Any) -> list[tuple[str, str | None, int, str, str, float]]:
        outcomes = []
        for i, (collective, algorithm, k) in enumerate(_count_cases(transport, large)):
            case = fresh(comm, f"count/{i}", transport, timeout=3.0)
            mine = k - 1 if comm.rank == comm.size - 1 else k  # the last rank passes one element fewer
            start = time.monotonic()
            try:
                got = _call(case, collective, mine, algorithm)
                want = _expected(collective, comm.rank, comm.size, mine)
                right = got is None and want is None or (got is not None and want is not None and np.array_equal(got, want))
                outcome = "returned" if right else "returned wrong data"
            except CollectivesError as exc:
                outcome = type(exc).__name__
            finally:
                case.close()
            role = "root" if comm.rank == 0 else "other"
            outcomes.append((collective, algorithm, k, role, outcome, time.monotonic() - start))
        return outcomes

    return fn


@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("size", [2, 4])
def test_count_mismatch_raises_on_every_algorithm(transport: str, size: int) -> None:
    """The last rank passes one element fewer (4 against 3; on shm at 2 ranks also large
    counts through the window engine's other routes), every collective x every algorithm,
    checking off: no rank returns wrong data; the odd rank raises wherever it takes data
    from a peer (MessageMismatchError, or the error of a peer that left because of it); a
    rank that agrees with everyone it takes data from may return, with the right result;
    and no rank waits out its timeout."""
    per_rank = run_world(_count_mismatch_job(transport, large=size == 2 and transport == "shm"), size, transport,
                         timeout=240)
    slowest = 0.0
    for rank, outcomes in enumerate(per_rank):
        for collective, algorithm, k, role, outcome, seconds in outcomes:
            where = f"rank {rank}: {collective} algorithm={algorithm} k={k}"
            slowest = max(slowest, seconds)
            assert outcome != "returned wrong data", where
            if rank == size - 1 and (collective, role) not in RECEIVES_NOTHING:
                assert outcome != "returned", f"{where} returned although it passed another count"
    for i in range(len(per_rank[0])):  # somebody names the mismatch itself in every case
        names = {per_rank[r][i][4] for r in range(size)}
        assert "MessageMismatchError" in names, (per_rank[0][i][:3], names)
    assert slowest < 3.0, f"a case waited {slowest:.1f} s: a mismatch must raise, not time out"


def _check_job(transport: str) -> Any:
    """Each case makes the last rank differ in one field; every rank must raise
    CollectiveMismatchError naming it, and the communicator must stay usable."""

    def fn(comm: Any) -> list[tuple[str, str, list[Any], bool]]:
        case = fresh(comm, "check", transport, check=True)
        odd = comm.rank == comm.size - 1
        x = np.ones(4, np.float32)
        calls = {
            "op": lambda: case.broadcast(x, 0) if odd else case.all_reduce(x),
            "dtype": lambda: case.all_reduce(np.ones(4, np.float64 if odd else np.float32)),
            "count": lambda: case.all_reduce(np.ones(3 if odd else 4, np.float32)),
            "root": lambda: case.broadcast(x, 1 if odd else 0),
            "reduce_op": lambda: case.all_reduce(x, "max" if odd else "sum"),
        }
        seen = []
        for field, call in calls.items():
            try:
                call()
                seen.append((field, "returned", [], False))
            except CollectiveMismatchError as exc:
                seen.append((exc.field, str(exc), exc.values, isinstance(exc, collectives.InvalidArgumentError)))
        y = np.full(4, comm.rank, np.float32)
        case.all_reduce(y)  # still usable: every rank gave up the same calls
        seen.append(("after", str(y.tolist()), [], True))
        case.close()
        return seen

    return fn


@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("size", [2, 4])
def test_check_mode_names_the_differing_field_on_every_rank(transport: str, size: int) -> None:
    per_rank = run_world(_check_job(transport), size, transport, timeout=120)
    for rank, seen in enumerate(per_rank):
        fields = [field for field, *_ in seen[:-1]]
        assert fields == ["op", "dtype", "count", "root", "reduce_op"], (rank, seen)
        for field, message, values, typed in seen[:-1]:
            assert typed and len(values) == size and values[0] != values[-1], (rank, field, values)
            assert f"disagree on {field}" in message and f"rank {size - 1}: {values[-1]}" in message
        assert seen[-1][1] == str([float(sum(range(size)))] * 4)


def test_check_mode_from_the_environment() -> None:
    """COLLECTIVES_CHECK=1 turns it on (and a mismatch reads as one on every rank)."""
    from collectives.config import Config

    assert Config.from_env({"COLLECTIVES_CHECK": "1"}).check
    assert not Config.from_env({}).check

    def fn(comm: Any) -> str:
        os.environ["COLLECTIVES_CHECK"] = "1"
        case = fresh(comm, "env", "tcp")
        try:
            case.all_reduce(np.ones(2 + comm.rank, np.int32))
        except CollectiveMismatchError as exc:
            return exc.field
        finally:
            case.close()
        return "returned"

    assert run_world(fn, 2, "tcp", timeout=60) == ["count", "count"]


def test_count_mismatch_error_is_the_documented_one() -> None:
    assert issubclass(CollectiveMismatchError, collectives.InvalidArgumentError)
    assert issubclass(MessageMismatchError, CollectivesError)
