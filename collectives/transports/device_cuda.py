"""The device primitives on CUDA (``device_memory.Device``), for torch CUDA tensors and cupy
arrays alike.

Memory, IPC handles, events and copies go through cupy's runtime API on raw pointers and
stream handles, whichever library the caller's buffer belongs to:

- memory: ``runtime.malloc`` / ``free`` (plain cudaMalloc, so an allocation's handle
  needs no offset); handles: ``ipcGetMemHandle(ptr)`` -> 64 bytes,
  ``ipcOpenMemHandle(handle)`` (lazy peer access) and ``ipcCloseMemHandle(ptr)``.
- events: ``eventCreateWithFlags(eventDisableTiming | eventInterprocess)``,
  ``ipcGetEventHandle`` / ``ipcOpenEventHandle``, ``eventRecord(event, stream)``,
  ``streamWaitEvent(stream, event, 0)``.
- copies: ``memcpyAsync(dst, src, n, memcpyDefault, stream)`` (unified addressing finds
  the devices, peers' mapped memory included).
- the stream: the caller's current one, ``torch.cuda.current_stream(device).cuda_stream``
  for a tensor, ``cupy.cuda.get_current_stream().ptr`` for a cupy array.
- reductions: cupy's ufuncs with ``out=`` on views of the raw memory, on that stream;
  bfloat16 (which cupy lacks) through torch on the same memory. Element-wise, one kernel
  per pair of operands, so the same operands give the same bits on every rank.

cupy is required (``pip install cupy-cuda12x``, or the build for your CUDA); without it
no device transport is built and device buffers are staged through the host.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any

import numpy as np

from ..buffers import check_dtype, check_torch_tensor, is_torch_tensor
from ..errors import InvalidArgumentError, UnsupportedError
from ..ops import ReduceOp
from .device_memory import DeviceBuffer, Span

logger = logging.getLogger("collectives")

_UFUNCS = {
    ReduceOp.SUM: "add", ReduceOp.AVG: "add", ReduceOp.PROD: "multiply", ReduceOp.MIN: "minimum",
    ReduceOp.MAX: "maximum", ReduceOp.BAND: "bitwise_and", ReduceOp.BOR: "bitwise_or", ReduceOp.BXOR: "bitwise_xor",
}
_TORCH_OPS = {ReduceOp.SUM: "add", ReduceOp.AVG: "add", ReduceOp.PROD: "mul", ReduceOp.MIN: "minimum",
              ReduceOp.MAX: "maximum"}


def visible_device() -> tuple[int, str] | None:
    """The CUDA device this process works on (torch's current device where torch is
    imported with CUDA, else cupy's) and its PCI bus id; None without cupy or a device."""
    if "cupy" not in sys.modules and importlib.util.find_spec("cupy") is None:
        return None
    try:
        cupy = importlib.import_module("cupy")
        runtime = cupy.cuda.runtime
        if runtime.getDeviceCount() < 1:
            return None
        torch = sys.modules.get("torch")
        index = torch.cuda.current_device() if torch is not None and torch.cuda.is_available() else runtime.getDevice()
        return int(index), str(runtime.deviceGetPCIBusId(int(index)))
    except Exception as exc:  # noqa: BLE001 - no usable device: staged paths, said at debug level
        logger.debug("cuda: no usable device through cupy: %r", exc)
        return None


class CudaDevice:
    """:class:`~collectives.transports.device_memory.Device` on CUDA device ``index``."""

    def __init__(self, index: int) -> None:
        try:
            self._cp = importlib.import_module("cupy")
        except ImportError as exc:
            raise UnsupportedError("cuda_ipc needs cupy (pip install cupy-cuda12x)") from exc
        self._rt = self._cp.cuda.runtime
        self.index = index
        self.name = f"cuda:{index}"
        rt = self._rt
        self._event_flags = getattr(rt, "eventDisableTiming", 2) | getattr(rt, "eventInterprocess", 4)
        self._copy_kind = getattr(rt, "memcpyDefault", 4)

    def _on(self) -> Any:
        return self._cp.cuda.Device(self.index)

    # -- caller buffers ----------------------------------------------------------------------

    def buffer(self, obj: Any, name: str) -> DeviceBuffer | None:
        if is_torch_tensor(obj):
            if not obj.is_cuda:
                return None
            if obj.device.index != self.index:
                raise InvalidArgumentError(f"{name}: a tensor on {obj.device}, but this communicator works on {self.name}")
            if not obj.is_contiguous():
                raise InvalidArgumentError(f"{name}: the tensor is not contiguous (use .contiguous())")
            dtype = check_torch_tensor(obj, name)
            torch = sys.modules["torch"]
            span = Span(int(obj.data_ptr()), 0, obj.numel() * obj.element_size())
            stream = torch.cuda.current_stream(obj.device).cuda_stream
            return DeviceBuffer(span, dtype, obj.numel(), stream, f"torch {obj.device} tensor")
        if type(obj).__module__.startswith("cupy") and hasattr(obj, "data") and hasattr(obj, "device"):
            if obj.device.id != self.index:
                raise InvalidArgumentError(f"{name}: a cupy array on cuda:{obj.device.id}, but this communicator "
                                           f"works on {self.name}")
            if not obj.flags.c_contiguous:
                raise InvalidArgumentError(f"{name}: the array is not C-contiguous (use cupy.ascontiguousarray)")
            dtype = np.dtype(obj.dtype)
            check_dtype(dtype, name)
            with self._on():
                stream = self._cp.cuda.get_current_stream().ptr
            return DeviceBuffer(Span(int(obj.data.ptr), 0, int(obj.nbytes)), dtype, int(obj.size), stream,
                                f"cupy array on {self.name}")
        return None

    def new_like(self, obj: Any, count: int) -> Any:
        if is_torch_tensor(obj):
            return obj.new_empty((count,))
        with self._on():
            return self._cp.empty(count, dtype=obj.dtype)

    # -- memory ---------------------------------------------------------------------------------

    def allocate(self, nbytes: int) -> Span:
        with self._on():
            return Span(int(self._rt.malloc(max(nbytes, 1))), 0, nbytes)

    def free(self, span: Span) -> None:
        with self._on():
            self._rt.free(span.memory)

    def export(self, span: Span) -> bytes:
        with self._on():
            return bytes(self._rt.ipcGetMemHandle(span.memory))

    def unexport(self, span: Span) -> None:
        """Nothing to release: a CUDA handle names the allocation itself."""

    def open(self, handle: bytes, nbytes: int, owner: int) -> Span:
        with self._on():
            return Span(int(self._rt.ipcOpenMemHandle(bytes(handle))), 0, nbytes)

    def close(self, span: Span) -> None:
        with self._on():
            self._rt.ipcCloseMemHandle(span.memory)

    # -- events ---------------------------------------------------------------------------------

    def event(self) -> int:
        with self._on():
            return int(self._rt.eventCreateWithFlags(self._event_flags))

    def export_event(self, event: int) -> bytes:
        with self._on():
            return bytes(self._rt.ipcGetEventHandle(event))

    def open_event(self, handle: bytes, owner: int) -> int:
        with self._on():
            return int(self._rt.ipcOpenEventHandle(bytes(handle)))

    def destroy_event(self, event: int) -> None:
        with self._on():
            self._rt.eventDestroy(event)

    def record(self, event: int, stream: int) -> None:
        self._rt.eventRecord(event, stream)

    def wait(self, stream: int, event: int) -> None:
        self._rt.streamWaitEvent(stream, event, 0)

    # -- work -----------------------------------------------------------------------------------

    def copy(self, dst: Span, src: Span, stream: int) -> None:
        if dst.nbytes != src.nbytes:
            raise ValueError(f"copy: {src.nbytes} bytes into {dst.nbytes}")
        if dst.nbytes:
            self._rt.memcpyAsync(dst.memory + dst.offset, src.memory + src.offset, dst.nbytes, self._copy_kind, stream)

    def _stream(self, stream: int) -> Any:
        return self._cp.cuda.Stream.null if stream == 0 else self._cp.cuda.ExternalStream(stream)

    def _torch_stream(self, torch: Any, stream: int) -> Any:
        return torch.cuda.default_stream(self.index) if stream == 0 else torch.cuda.ExternalStream(stream)

    def _cupy_view(self, span: Span, dtype: np.dtype) -> Any:
        cp = self._cp
        memory = cp.cuda.UnownedMemory(span.memory + span.offset, span.nbytes, None, self.index)
        return cp.ndarray((span.nbytes // dtype.itemsize,), dtype=dtype, memptr=cp.cuda.MemoryPointer(memory, 0))

    def _torch_view(self, span: Span) -> Any:
        """A bfloat16 tensor over ``span`` (through a cupy int16 view: no copy)."""
        torch = importlib.import_module("torch")
        raw = self._cupy_view(span, np.dtype(np.int16))
        return torch.as_tensor(raw, device=f"cuda:{self.index}").view(torch.bfloat16)

    def reduce(self, op: ReduceOp, dtype: np.dtype, dst: Span, a: Span, b: Span, stream: int) -> None:
        if not dst.nbytes:
            return
        if dtype.name == "bfloat16":
            torch = importlib.import_module("torch")
            if op not in _TORCH_OPS:
                raise InvalidArgumentError(f"op: {op.name} is not defined for bfloat16")
            with torch.cuda.device(self.index), torch.cuda.stream(self._torch_stream(torch, stream)):
                out = self._torch_view(dst)
                getattr(torch, _TORCH_OPS[op])(self._torch_view(a), self._torch_view(b), out=out)
            return
        with self._on(), self._stream(stream):
            getattr(self._cp, _UFUNCS[op])(self._cupy_view(a, dtype), self._cupy_view(b, dtype),
                                           out=self._cupy_view(dst, dtype))

    def average(self, dtype: np.dtype, span: Span, world_size: int, stream: int) -> None:
        if not span.nbytes or world_size == 1:
            return
        if dtype.name == "bfloat16":
            torch = importlib.import_module("torch")
            with torch.cuda.device(self.index), torch.cuda.stream(self._torch_stream(torch, stream)):
                self._torch_view(span).div_(world_size)
            return
        cp = self._cp
        with self._on(), self._stream(stream):
            view = self._cupy_view(span, dtype)
            if dtype.kind in "iu":
                rest = (view < 0) & (view % world_size != 0) if dtype.kind == "i" else None
                cp.floor_divide(view, world_size, out=view)
                if rest is not None:
                    cp.add(view, rest.astype(dtype), out=view)  # floor -> toward zero, as C and NCCL divide
            else:
                cp.divide(view, dtype.type(world_size), out=view)

    def synchronize(self, stream: int) -> None:
        self._rt.streamSynchronize(stream)

    def shutdown(self) -> None:
        """Nothing kept beyond what ``cuda_ipc`` frees itself."""
