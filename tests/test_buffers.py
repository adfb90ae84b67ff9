"""Buffer helpers (collectives/buffers.py): whether two arrays' bytes overlap."""

from __future__ import annotations

import numpy as np
import pytest

from collectives import buffers
from collectives.buffers import overlap
from collectives.errors import InvalidTypeError


def test_slices_of_one_array_overlap_only_where_their_bytes_do() -> None:
    a = np.arange(100, dtype=np.float64)
    assert overlap(a, a)
    assert overlap(a[10:20], a[19:30])
    assert not overlap(a[10:20], a[20:30])  # adjacent, apart
    assert overlap(a.view(np.uint8)[80:88], a[10:11])


def test_separate_and_empty_arrays_do_not_overlap() -> None:
    a, b = np.zeros(16), np.zeros(16)
    assert not overlap(a, b)
    assert not overlap(a[:0], a)
    assert not overlap(a, a[5:5])


def test_it_agrees_with_numpy_on_contiguous_slices() -> None:
    a = np.arange(64, dtype=np.uint8)
    for lo1, hi1, lo2, hi2 in [(0, 8, 4, 12), (0, 8, 8, 16), (3, 60, 10, 11), (10, 11, 3, 60), (0, 1, 1, 2)]:
        x, y = a[lo1:hi1], a[lo2:hi2]
        assert overlap(x, y) == np.shares_memory(x, y)


def test_a_wrong_dtype_is_refused_naming_every_supported_dtype() -> None:
    """The message lists SUPPORTED_DTYPES (bfloat16 where ml_dtypes is installed), found
    without importing ml_dtypes on the refusal's path."""
    with pytest.raises(InvalidTypeError, match=r"^x: dtype bool is not supported \(supported: (.*)\)$") as info:
        buffers.check_dtype(np.dtype(np.bool_), "x")
    listed = str(info.value).split("(supported: ")[1].rstrip(")")
    assert listed == ", ".join(buffers.dtype_name(d) for d in buffers.SUPPORTED_DTYPES)
