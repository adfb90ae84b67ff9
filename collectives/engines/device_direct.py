"""Direct collectives over peers' device memory (``transports/cuda_ipc.py``), on the
caller's current stream: the one-shot and two-shot schemes GPU libraries use over NVLink.

Nothing here waits for the device. Each step is queued on the caller's stream, an
interprocess event is recorded after it, and a host flag says which call that record
belongs to; a peer waits for the flag on the host, then makes its own stream wait for
the event (``cudaStreamWaitEvent``), then queues its reads of our memory. Per call ``s``
and rank ``r`` (flags are monotonic counters in a host window, written by their owner):

    begin  wait each peer's DONE >= s-1 and its ``done`` event: it has finished reading my
           scratch in the previous call, so I may overwrite it
    IN     my input (the parts peers read) is in my scratch: record ``in``, post IN = s
    RED    my block is reduced into my scratch: record ``red``, post RED = s
    DONE   my reads of peers' scratch are queued: record ``done``, post DONE = s

A peer re-records an event only after a handshake that needs my next flag, so the record
I wait on is always the one of this call.

Bits: the two-shot all-reduce reduces block b once, on rank b, in rank order (rank 0's
contribution op rank 1's, then op rank 2's, ...), and every rank copies that block: the
same bits everywhere. The one-shot all-reduce (small vectors) reduces the whole vector
on every rank, each in rank order with the same element-wise kernels: the same bits too.
Reductions run in the buffers' own dtype (float16 and bfloat16 included), as on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..algorithms.schedule import partition
from ..ops import ReduceOp
from ..transports.cuda_ipc import DONE, IN, RED, CudaIpc
from ..transports.device_memory import DeviceBuffer, Span
from .call import Call

ONE_SHOT_BYTES = 256 << 10
"""All-reduces up to this size take the one-shot scheme (one step, every rank reduces
everything: fewer hand-offs); larger ones the two-shot scheme (each rank reduces 1/p,
then all copy the blocks: 1/p of the reduction work per rank). Not measured on a GPU yet
(docs/gpu.md): the device check's sweep is where it is to be set."""

FLAGS_WINDOW_ID = -2


class DeviceEngine:
    """The device collectives of one communicator (every rank on one host, cuda_ipc to every peer)."""

    def __init__(self, ipc: CudaIpc, windows: Any, label: str) -> None:
        self.ipc = ipc
        self.device = ipc.device
        self.rank, self.size = ipc.rank, ipc.size
        self.others = ipc.others
        self.label = label
        self._windows = windows  # engines.windows.SharedWindows: opens the host flags window
        self._flags: Any = None
        self.serial = 0

    def buffer(self, obj: Any, name: str) -> DeviceBuffer | None:
        return self.device.buffer(obj, name)

    # -- the steps --------------------------------------------------------------------------------

    def _begin(self, call: Call, scratch_bytes: int, stream: Any) -> int:
        if self._flags is None:
            self._flags = self._windows.open(0, FLAGS_WINDOW_ID, call)
            self.ipc.connect(self._flags, call.deadline, call.timed_out)
        self.ipc.ensure(scratch_bytes, stream, call.deadline, call.timed_out)
        self.serial += 1
        s = self.serial
        for q in self.others:
            self._flags.wait(q, DONE, s - 1, call.deadline, call.timed_out)
            self.device.wait(stream, self.ipc.event(q, "done"))
        return s

    def _publish(self, kind: str, slot: int, s: int, stream: Any) -> None:
        self.device.record(self.ipc.event(self.rank, kind), stream)
        self._flags.post(slot, s)

    def _await(self, q: int, kind: str, slot: int, s: int, stream: Any, call: Call) -> None:
        self._flags.wait(q, slot, s, call.deadline, call.timed_out)
        self.device.wait(stream, self.ipc.event(q, kind))

    def _reduce_in_order(self, op: ReduceOp, dtype: np.dtype, dst: Span, sources: list[Span], stream: Any) -> None:
        """``dst = sources[0] op sources[1] op ...`` left to right (rank order)."""
        self.device.reduce(op, dtype, dst, sources[0], sources[1], stream)
        for src in sources[2:]:
            self.device.reduce(op, dtype, dst, dst, src, stream)

    # -- collectives ------------------------------------------------------------------------------

    def all_reduce(self, x: DeviceBuffer, out: DeviceBuffer, op: ReduceOp, call: Call) -> None:
        stream, n, dtype = x.stream, x.span.nbytes, x.dtype
        if n <= ONE_SHOT_BYTES:
            s = self._begin(call, n, stream)
            mine = self.ipc.scratch(self.rank).sub(0, n)
            self.device.copy(mine, x.span, stream)
            self._publish("in", IN, s, stream)
            for q in self.others:
                self._await(q, "in", IN, s, stream, call)
            sources = [self.ipc.scratch(r).sub(0, n) for r in range(self.size)]
            self._reduce_in_order(op, dtype, out.span, sources, stream)
            if op is ReduceOp.AVG:
                self.device.average(dtype, out.span, self.size, stream)
            self._publish("done", DONE, s, stream)
            return
        item = dtype.itemsize
        blocks = [(lo * item, length * item) for lo, length in partition(x.count, self.size)]
        widest = max(length for _, length in blocks)
        s = self._begin(call, n + widest, stream)
        for q in self.others:  # the parts of my input that peers reduce
            lo, length = blocks[q]
            self.device.copy(self.ipc.scratch(self.rank).sub(lo, length), x.span.sub(lo, length), stream)
        self._publish("in", IN, s, stream)
        for q in self.others:
            self._await(q, "in", IN, s, stream, call)
        lo, length = blocks[self.rank]
        red = self.ipc.scratch(self.rank).sub(n, length)
        sources = [x.span.sub(lo, length) if r == self.rank else self.ipc.scratch(r).sub(lo, length)
                   for r in range(self.size)]
        self._reduce_in_order(op, dtype, red, sources, stream)
        if op is ReduceOp.AVG:
            self.device.average(dtype, red, self.size, stream)
        self._publish("red", RED, s, stream)
        for q in range(self.size):
            if q != self.rank:
                self._await(q, "red", RED, s, stream, call)
            lo_q, length_q = blocks[q]
            self.device.copy(out.span.sub(lo_q, length_q), self.ipc.scratch(q).sub(n, length_q), stream)
        self._publish("done", DONE, s, stream)

    def reduce_scatter(self, x: DeviceBuffer, out: DeviceBuffer, op: ReduceOp, call: Call) -> None:
        stream, n, dtype = x.stream, x.span.nbytes, x.dtype
        k = out.span.nbytes
        s = self._begin(call, n + k, stream)
        for q in self.others:
            self.device.copy(self.ipc.scratch(self.rank).sub(q * k, k), x.span.sub(q * k, k), stream)
        self._publish("in", IN, s, stream)
        for q in self.others:
            self._await(q, "in", IN, s, stream, call)
        me = self.rank * k
        red = self.ipc.scratch(self.rank).sub(n, k)  # then copied: ``out`` may be part of ``x``
        sources = [x.span.sub(me, k) if r == self.rank else self.ipc.scratch(r).sub(me, k) for r in range(self.size)]
        self._reduce_in_order(op, dtype, red, sources, stream)
        if op is ReduceOp.AVG:
            self.device.average(dtype, red, self.size, stream)
        self.device.copy(out.span, red, stream)
        self._publish("done", DONE, s, stream)

    def all_gather(self, x: DeviceBuffer, out: DeviceBuffer, call: Call) -> None:
        stream, k = x.stream, x.span.nbytes
        s = self._begin(call, k, stream)
        self.device.copy(self.ipc.scratch(self.rank).sub(0, k), x.span, stream)
        self._publish("in", IN, s, stream)
        for q in range(self.size):  # my own block from my scratch too: ``x`` may be part of ``out``
            if q != self.rank:
                self._await(q, "in", IN, s, stream, call)
            self.device.copy(out.span.sub(q * k, k), self.ipc.scratch(q).sub(0, k), stream)
        self._publish("done", DONE, s, stream)

    def broadcast(self, x: DeviceBuffer, out: DeviceBuffer, root: int, call: Call) -> None:
        """The root's ``x`` into every rank's ``out`` (``x`` itself for an in-place broadcast)."""
        stream, n = x.stream, x.span.nbytes
        s = self._begin(call, n, stream)
        if self.rank == root:
            self.device.copy(self.ipc.scratch(root).sub(0, n), x.span, stream)
            self._publish("in", IN, s, stream)
            if out is not x:
                self.device.copy(out.span, x.span, stream)
        else:
            self._await(root, "in", IN, s, stream, call)
            self.device.copy(out.span, self.ipc.scratch(root).sub(0, n), stream)
        self._publish("done", DONE, s, stream)

    def close(self) -> None:
        """Release the device memory and events (``cuda_ipc``), then the host flags window."""
        try:
            self.ipc.close()
        finally:
            if self._flags is not None:
                self._flags.close()
                self._flags = None
