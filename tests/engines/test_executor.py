"""engines/executor.py: the work buffer an out-of-place call's input pends into is kept from
call to call (a fresh large one would be mapped and faulted in on every call)."""

from __future__ import annotations

import numpy as np

from collectives.engines.executor import Executor
from collectives.transports.progress import ProgressEngine


def test_a_work_buffer_is_kept_per_dtype_grown_when_too_small_and_dropped_on_release() -> None:
    executor = Executor({}, ProgressEngine([]))
    first = executor.work_for(np.dtype(np.float32), 1000)
    assert first.shape == (1000,) and first.dtype == np.float32
    again = executor.work_for(np.dtype(np.float32), 600)
    assert again.shape == (600,) and np.shares_memory(first, again)  # the same memory, shorter
    other = executor.work_for(np.dtype(np.int64), 600)
    assert not np.shares_memory(first, other)  # one per dtype
    grown = executor.work_for(np.dtype(np.float32), 2000)
    assert grown.shape == (2000,) and not np.shares_memory(first, grown)
    executor.release_scratch()
    assert not np.shares_memory(grown, executor.work_for(np.dtype(np.float32), 10))
