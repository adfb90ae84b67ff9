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
from checks_helpers import ALGORITHMS, count_outcome, fresh, wrong_outcomes
from collectives.errors import CollectiveMismatchError, CollectivesError, MessageMismatchError
from collectives.testing import run_world

pytestmark = pytest.mark.multiprocess

def _count_cases(transport: str, large: bool) -> list[tuple[str, str | None, int]]:
    cases = [(c, a, 4) for c, algos in ALGORITHMS.items() for a in algos if a != "direct" or transport == "shm"]
    if large:  # the window engine's larger routes: two-shot, halves, reads of peers' memory
        cases += [(c, a, k) for c in ("all_reduce", "reduce_scatter", "all_gather", "broadcast")
                  for a in ("direct",) for k in (300_000, 2_200_000)]
    return cases


def _count_mismatch_job(transport: str, large: bool) -> Any:
    def fn(comm: Any) -> list[tuple[str, str | None, int, str, float]]:
        outcomes = []
        for i, (collective, algorithm, k) in enumerate(_count_cases(transport, large)):
            case = fresh(comm, f"count/{i}", transport, timeout=3.0)
            start = time.monotonic()
            try:
                outcome = count_outcome(case, collective, k, algorithm)
            finally:
                case.close()
            outcomes.append((collective, algorithm, k, outcome, time.monotonic() - start))
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
    some rank names the mismatch itself; and no rank waits out its timeout."""
    per_rank = run_world(_count_mismatch_job(transport, large=size == 2 and transport == "shm"), size, transport,
                         timeout=240)
    assert not wrong_outcomes([[case[:4] for case in cases] for cases in per_rank])
    slowest = max(case[4] for cases in per_rank for case in cases)
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
