"""``collectives.testing.reference``: the average of integers is the wrapped sum, in the
inputs' dtype, divided by the world size and truncated toward zero, as the library computes it."""

from __future__ import annotations

import numpy as np

from collectives import ReduceOp
from collectives.testing import reference as ref


def test_the_integer_average_truncates_the_wrapped_sum_toward_zero():
    int8 = [np.array([-3, 3, 100, -128, 0], np.int8), np.array([0, 0, 100, -1, 0], np.int8)]
    # sums in int8: -3, 3, 200 wraps to -56, -129 wraps to 127, 0
    assert ref.all_reduce(int8, ReduceOp.AVG)[0].tolist() == [-1, 1, -28, 63, 0]
    int64 = [np.array([-5, 5, np.iinfo(np.int64).min], np.int64)] * 2 + [np.array([-4, 4, 0], np.int64)]
    # -14 / 3 is -4 (floor division would give -5); the least int64 twice wraps to 0
    assert ref.all_reduce(int64, ReduceOp.AVG)[2].tolist() == [-4, 4, 0]
    top = np.iinfo(np.uint64).max
    uint64 = [np.array([top, 7], np.uint64)] * 2  # 2^64 - 2 after wrapping, and 14
    got = ref.all_reduce(uint64, ReduceOp.AVG)[1]
    assert got.dtype == np.uint64 and got.tolist() == [(top - 1) // 2, 7]
    assert ref.all_reduce([np.array([], np.int16)] * 4, ReduceOp.AVG)[0].dtype == np.int16
