"""``Communicator.all_to_all_v`` (MPI_Alltoallv) in in-process worlds of 1, 2, 3 and 5
ranks: every dtype, uneven and zero-length splits, ``out`` given or allocated, in place,
``async_op``, and a count that two ranks disagree on, which must raise on the receiver
rather than truncate. Refused arguments are in ``test_arguments.py``; real processes over
shared memory and TCP in ``tests/collectives/test_worlds.py``; the schedule alone in
``tests/algorithms/test_schedules.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from collectives import Work
from collectives.buffers import SUPPORTED_DTYPES, dtype_name
from collectives.errors import MessageMismatchError
from collectives.testing import RankError, run_world
from collectives.testing import reference as ref

SIZES = (1, 2, 3, 5)
TIMEOUT = 30.0


def splits_for(size: int, pattern: str) -> list[list[int]]:
    """``splits[i][j]``: elements rank i sends rank j."""
    if pattern == "uneven":
        return [[(3 * i + 2 * j + 1) % 5 for j in range(size)] for i in range(size)]
    if pattern == "zeros":  # only rank 0 sends, and only to the odd ranks (and itself)
        return [[(j % 2 + (j == 0)) * 4 if i == 0 else 0 for j in range(size)] for i in range(size)]
    if pattern == "empty":
        return [[0] * size for _ in range(size)]
    raise AssertionError(pattern)


def rank_input(rank: int, count: int, dtype: np.dtype) -> np.ndarray:
    values = (np.arange(count) % 50 + 60 * rank + 1).astype(np.float64)
    return values.astype(dtype)


def _bytes(a: np.ndarray) -> bytes:
    return a.view(np.uint8).tobytes()


@pytest.mark.parametrize("pattern", ["uneven", "zeros", "empty"])
@pytest.mark.parametrize("size", SIZES)
def test_matches_reference_for_every_dtype(size: int, pattern: str) -> None:
    splits = splits_for(size, pattern)

    def fn(comm: Any) -> list[bytes]:
        r = comm.rank
        ins, outs = splits[r], [splits[j][r] for j in range(size)]
        got = []
        for i, dtype in enumerate(SUPPORTED_DTYPES):
            x = rank_input(r, sum(ins), dtype)
            before = x.copy()
            if i % 2:
                out = np.full(sum(outs), 7, dtype=dtype)
                assert comm.all_to_all_v(x, ins, outs, out) is out
            else:
                out = comm.all_to_all_v(x, ins, outs)
                assert out.dtype == dtype and out.shape == (sum(outs),)
            assert _bytes(x) == _bytes(before), "all_to_all_v changed its input"
            got.append(_bytes(out))
        return got

    results = run_world(fn, size, timeout=TIMEOUT)
    for i, dtype in enumerate(SUPPORTED_DTYPES):
        want = ref.all_to_all_v([rank_input(r, sum(splits[r]), dtype) for r in range(size)], splits)
        for r in range(size):
            assert results[r][i] == _bytes(want[r]), f"rank {r} {dtype_name(dtype)}"


@pytest.mark.parametrize("size", SIZES)
def test_in_place_and_async(size: int) -> None:
    """``out is x`` where every rank receives as much as it sends (a permutation of the
    counts), and ``async_op=True`` returns a Work whose result is ``out``; a synchronous
    call after it runs in order."""
    counts = [(j + 1) for j in range(size)]
    splits = [[counts[(i + j) % size] for j in range(size)] for i in range(size)]

    def fn(comm: Any) -> tuple[list[int], list[int]]:
        r = comm.rank
        ins, outs = splits[r], [splits[j][r] for j in range(size)]
        assert sum(ins) == sum(outs)
        x = rank_input(r, sum(ins), np.dtype(np.int64))
        assert comm.all_to_all_v(x, ins, outs, x) is x
        y = rank_input(r, sum(ins), np.dtype(np.int64))
        work = comm.all_to_all_v(y, ins, outs, async_op=True)
        assert isinstance(work, Work)
        got = work.wait(timeout=TIMEOUT)
        return x.tolist(), got.tolist()

    results = run_world(fn, size, timeout=TIMEOUT)
    want = ref.all_to_all_v([rank_input(r, sum(splits[r]), np.dtype(np.int64)) for r in range(size)], splits)
    for r in range(size):
        assert results[r][0] == want[r].tolist(), f"rank {r} in place"
        assert results[r][1] == want[r].tolist(), f"rank {r} async"


def test_counts_the_ranks_disagree_on_raise_on_the_receiver() -> None:
    """Rank 0 sends 3 elements to rank 1, which expects 2: rank 1 must raise
    MessageMismatchError (never keep 2 of the 3 and go on)."""

    def fn(comm: Any) -> None:
        if comm.rank == 0:
            comm.all_to_all_v(np.arange(4, dtype=np.float32), [1, 3], [1, 1])
        else:
            comm.all_to_all_v(np.arange(3, dtype=np.float32), [1, 2], [2, 2])

    with pytest.raises(RankError) as info:
        run_world(fn, 2, timeout=10.0)
    assert info.value.rank == 1
    assert isinstance(info.value.exception, MessageMismatchError), info.value
