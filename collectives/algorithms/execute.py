"""The executor: runs a schedule over real channels.

For each step it posts the receives (straight into the destination, or into scratch when
the data is to be reduced), then the sends, waits for all of them through the progress
engine, and finally folds the scratch into the destinations. One tag per collective;
messages between a pair match in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..ops import ReduceOp, reduce_into
from ..transports.base import Channel, Request
from ..transports.progress import ProgressEngine
from .schedule import Recv, Send, Step


class Executor:
    """Runs schedules for one communicator (one thread at a time)."""

    def __init__(self, channels: Mapping[int, Channel], engine: ProgressEngine) -> None:
        self.channels = channels
        self.engine = engine
        self._scratch: dict[np.dtype, np.ndarray] = {}

    def _scratch_for(self, dtype: np.dtype, count: int) -> np.ndarray:
        scratch = self._scratch.get(dtype)
        if scratch is None or scratch.size < count:
            scratch = np.empty(max(count, 1), dtype=dtype)
            self._scratch[dtype] = scratch
        return scratch[:count]

    def release_scratch(self) -> None:
        self._scratch.clear()

    def run(
        self,
        steps: Iterable[Step],
        buffers: Sequence[np.ndarray],
        *,
        op: ReduceOp | None,
        tag: int,
        deadline: float,
        on_timeout: Callable[[list[int]], BaseException],
    ) -> None:
        """Execute ``steps`` on ``buffers`` (index WORK, INPUT; flat arrays of one dtype)."""
        channels = self.channels
        for step in steps:
            if not step:
                continue
            requests: list[Request] = []
            folds: list[tuple[np.ndarray, np.ndarray]] = []
            reduce_total = sum(o.count for o in step if isinstance(o, Recv) and o.reduce)
            scratch = self._scratch_for(buffers[0].dtype, reduce_total) if reduce_total else None
            used = 0
            for o in step:
                if isinstance(o, Recv):
                    dst = buffers[o.buf][o.offset : o.offset + o.count]
                    if o.reduce:
                        assert scratch is not None
                        landing = scratch[used : used + o.count]
                        used += o.count
                        folds.append((dst, landing))
                    else:
                        landing = dst
                    requests.append(channels[o.peer].irecv(landing, tag))
            for o in step:
                if isinstance(o, Send):
                    requests.append(channels[o.peer].isend(buffers[o.buf][o.offset : o.offset + o.count], tag))
            self.engine.wait(requests, deadline, on_timeout)
            if folds:
                assert op is not None, "a schedule with reducing receives needs an op"
                for dst, landing in folds:
                    reduce_into(op, dst, landing)
