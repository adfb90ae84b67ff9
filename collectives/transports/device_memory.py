"""Device memory primitives: what the ``cuda_ipc`` transport and the device engine use.

Everything above this interface (``transports/cuda_ipc.py``, ``engines/device_direct.py``)
is written against :class:`Device`, which has two implementations:

- :class:`~collectives.transports.device_cuda.CudaDevice`: CUDA memory through cupy's
  runtime API (``cudaIpcGetMemHandle``, ``cudaIpcOpenMemHandle``, interprocess events,
  ``cudaMemcpyAsync``, ``cudaStreamWaitEvent``), reductions by cupy (torch for bfloat16),
  on the caller's current stream. Takes torch CUDA tensors and cupy arrays.
- :class:`~collectives.transports.device_host.HostDevice`: the same primitives over host
  memory, so that the protocol runs on CPU (CI): shared-memory segments stand for device
  memory, segment names for IPC handles, counters in shared memory for events, and a
  worker thread per stream executes its work in order, asynchronously to the caller, as a
  GPU would.

The semantics are CUDA's: work queued on a stream runs in order, after the caller's
earlier work on that stream; ``record(event, stream)`` marks the point reached;
``wait(stream, event)`` makes later work on ``stream`` wait for the most recent record of
``event`` made before the call (in any process, for an opened IPC event). Nothing waits on
the host except ``synchronize``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

from ..ops import ReduceOp

HANDLE_BYTES = 64
"""Size of a CUDA IPC handle (memory or event); host handles are padded to it too."""


@dataclasses.dataclass(frozen=True)
class Span:
    """Bytes ``offset : offset + nbytes`` of one piece of device memory: an allocation, a
    peer's memory opened through its handle, or a caller's buffer.

    ``memory`` is the device's own object for the whole piece (the host device: a uint8
    numpy array; the CUDA device: the base address as an int).
    """

    memory: Any
    offset: int
    nbytes: int

    def sub(self, offset: int, nbytes: int) -> Span:
        """The part ``offset : offset + nbytes`` of this span (offsets relative to it)."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.nbytes:
            raise ValueError(f"span: bytes {offset}:{offset + nbytes} are outside a span of {self.nbytes} bytes")
        return Span(self.memory, self.offset + offset, nbytes)


@dataclasses.dataclass(frozen=True)
class DeviceBuffer:
    """A caller's buffer as the device sees it: its bytes, element type and count, and the
    stream its work is ordered on (the caller's current stream for the buffer's library)."""

    span: Span
    dtype: np.dtype
    count: int
    stream: Any
    description: str  # "torch cuda:0 tensor", for messages


class Device(Protocol):
    """The primitives (see the module docstring for their semantics)."""

    name: str  # "cuda:0", "host": for log lines
    index: int  # the device number this process uses (CUDA's numbering)

    def buffer(self, obj: Any, name: str) -> DeviceBuffer | None:
        """``obj`` as a buffer of this device, or None where it is not this device's memory
        (a host array, another device). Raises InvalidArgumentError for one it cannot take
        (not contiguous, a dtype no collective moves), naming ``name``."""

    def new_like(self, obj: Any, count: int) -> Any:
        """A new 1-D buffer of ``count`` elements like ``obj`` (same library, device, dtype)."""

    def allocate(self, nbytes: int) -> Span: ...
    def free(self, span: Span) -> None: ...

    def export(self, span: Span) -> bytes:
        """The IPC handle of an allocation (HANDLE_BYTES long)."""

    def unexport(self, span: Span) -> None:
        """Every peer has opened the handle: release what only served to open it."""

    def open(self, handle: bytes, nbytes: int, owner: int) -> Span:
        """Map rank ``owner``'s allocation of ``nbytes`` from its handle (once: the caller caches)."""

    def close(self, span: Span) -> None:
        """Unmap what ``open`` mapped."""

    def event(self) -> Any:
        """A new interprocess event."""

    def export_event(self, event: Any) -> bytes: ...
    def open_event(self, handle: bytes, owner: int) -> Any: ...
    def destroy_event(self, event: Any) -> None: ...
    def record(self, event: Any, stream: Any) -> None: ...
    def wait(self, stream: Any, event: Any) -> None: ...

    def copy(self, dst: Span, src: Span, stream: Any) -> None:
        """Queue ``dst[:] = src`` (same size; either may be a peer's mapped memory)."""

    def reduce(self, op: ReduceOp, dtype: np.dtype, dst: Span, a: Span, b: Span, stream: Any) -> None:
        """Queue ``dst = a op b`` element-wise in ``dtype`` (``dst`` may be ``a``). AVG sums."""

    def average(self, dtype: np.dtype, span: Span, world_size: int, stream: Any) -> None:
        """Queue the division of a sum by ``world_size`` as ``ops.finalize`` does it
        (integers truncate toward zero, floats divide in their own precision)."""

    def synchronize(self, stream: Any) -> None:
        """Block until everything queued on ``stream`` has run."""

    def shutdown(self) -> None:
        """Release what the device keeps for this process (streams' threads); idempotent."""
