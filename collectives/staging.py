"""Device buffers (torch CUDA tensors, cupy arrays, other ``__cuda_array_interface__`` or
DLPack device objects) through host memory: copied in when a collective is issued,
copied back into the caller's device buffers once it has run.

This is what gloo does with CUDA tensors, and the only way device memory is taken until
device transports exist (``docs/gpu.md``): the data makes a trip through the host, which
a warning says once per communicator. The copies go through the library that owns the
buffer, on the caller's current stream, and wait for it, so kernels queued before the
call have finished writing the input, and the result is on the device when the call
returns. A call that fails writes nothing back: the device buffers keep what they held.
"""

from __future__ import annotations

import importlib
import logging
import importlib.util
import sys
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .buffers import (
    as_flat_array,
    check_dtype,
    check_torch_tensor,
    device_memory_kind,
    is_torch_tensor,
    torch_bytes_view,
)
from .engines.call import Call
from .errors import InvalidArgumentError

logger = logging.getLogger("collectives")


class DeviceArray(Protocol):
    """A buffer in device memory, seen through the library that owns it."""

    description: str  # "torch cuda:0 tensor", for messages and the log
    dtype: np.dtype

    def to_host(self) -> np.ndarray:
        """A flat host copy of the buffer (after work queued on it has finished)."""

    def empty_host(self) -> np.ndarray:
        """A flat host buffer of the same size and dtype, not filled."""

    def from_host(self, host: np.ndarray) -> None:
        """Write ``host`` (from ``to_host`` or ``empty_host``) back into the buffer; on the
        device when this returns."""

    def new_like(self, count: int) -> Any:
        """A new 1-D buffer of ``count`` elements of this dtype, same library and device."""


class TorchDeviceArray:
    """A torch tensor off the host (CUDA, ROCm, or any other torch device)."""

    def __init__(self, tensor: Any, name: str) -> None:
        import torch

        if tensor.device.type == "meta":
            raise InvalidArgumentError(f"{name}: a meta tensor holds no data to send or receive")
        dtype = check_torch_tensor(tensor, name)
        self.tensor = tensor.detach()
        self.dtype = dtype
        self.description = f"torch {tensor.device} tensor"
        self._pin = tensor.device.type == "cuda" and torch.cuda.is_available()
        self._host: Any = None  # the host tensor the call works on

    def empty_host(self) -> np.ndarray:
        import torch

        self._host = torch.empty(self.tensor.numel(), dtype=self.tensor.dtype, pin_memory=self._pin)
        return torch_bytes_view(self._host).view(self.dtype)

    def to_host(self) -> np.ndarray:
        host = self.empty_host()
        self._host.copy_(self.tensor.reshape(-1))  # blocking: waits for the producer on the current stream
        return host

    def from_host(self, host: np.ndarray) -> None:
        self.tensor.reshape(-1).copy_(self._host)  # blocking: on the device when this returns

    def new_like(self, count: int) -> Any:
        return self.tensor.new_empty((count,))


class CupyDeviceArray:
    """A cupy array (or another device object cupy takes without a copy)."""

    def __init__(self, array: Any, name: str, cupy: Any) -> None:
        if not array.flags.c_contiguous:
            raise InvalidArgumentError(f"{name}: the array is not C-contiguous (use cupy.ascontiguousarray)")
        dtype = np.dtype(array.dtype)
        check_dtype(dtype, name)
        self.array = array
        self.dtype = dtype
        self.description = f"cupy array on cuda:{array.device.id}"
        self._cupy = cupy

    def to_host(self) -> np.ndarray:
        host = self.empty_host()
        with self.array.device:
            self.array.reshape(-1).get(out=host)  # blocking, on the current stream
        return host

    def empty_host(self) -> np.ndarray:
        return np.empty(self.array.size, dtype=self.dtype)

    def from_host(self, host: np.ndarray) -> None:
        with self.array.device:
            self.array.reshape(-1).set(host)
            self._cupy.cuda.get_current_stream().synchronize()

    def new_like(self, count: int) -> Any:
        with self.array.device:
            return self._cupy.empty(count, dtype=self.array.dtype)


def _cupy() -> Any:
    """The cupy module where it is installed, else None."""
    if "cupy" not in sys.modules and importlib.util.find_spec("cupy") is None:
        return None
    return importlib.import_module("cupy")


def _through_a_library(obj: Any, kind: str, name: str) -> DeviceArray:
    """Another library's device object, viewed (no copy) by cupy or an already imported
    torch with CUDA; refused where neither is at hand."""
    cupy = _cupy()
    if cupy is not None:
        view = cupy.asarray(obj) if hasattr(obj, "__cuda_array_interface__") else cupy.from_dlpack(obj)
        return CupyDeviceArray(view, name, cupy)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        view = torch.as_tensor(obj, device="cuda") if hasattr(obj, "__cuda_array_interface__") else torch.from_dlpack(obj)
        return TorchDeviceArray(view, name)
    raise InvalidArgumentError(
        f"{name}: a {kind} device buffer ({type(obj).__name__}) that cannot be copied to the host here: "
        f"collectives stages device memory through the host with cupy or torch (install cupy, or pass a torch tensor)"
    )


def device_array(obj: Any, name: str) -> DeviceArray | None:
    """``obj`` as a device array, or None where it is host memory (the usual case: cheap)."""
    if isinstance(obj, np.ndarray):
        return None
    if is_torch_tensor(obj):
        return None if obj.is_cpu else TorchDeviceArray(obj, name)
    kind = device_memory_kind(obj)
    if kind is None:
        return None
    if type(obj).__module__.startswith("cupy"):
        return CupyDeviceArray(obj, name, _cupy())
    return _through_a_library(obj, kind, name)


class Staging:
    """The host buffers standing in for one call's device buffers.

    ``flat`` replaces ``buffers.as_flat_array`` in a collective's checks; ``wrap`` makes its
    body write the results back. A call without device buffers pays one object.
    """

    __slots__ = ("_devices", "_stores", "_on_device")

    def __init__(self, on_device: Callable[[DeviceArray, str], None]) -> None:
        self._devices: dict[int, DeviceArray] = {}
        self._stores: list[tuple[DeviceArray, np.ndarray]] = []
        self._on_device = on_device

    def flat(self, obj: Any, name: str, *, writable: bool = False, load: bool = True) -> np.ndarray:
        """A flat host array for ``obj``: a view of host memory, or a host copy of a device
        buffer (filled when ``load``; written back after the call when ``writable``)."""
        device = device_array(obj, name)
        if device is None:
            return as_flat_array(obj, name, writable=writable)
        self._on_device(device, name)
        self._devices[id(obj)] = device
        host = device.to_host() if load else device.empty_host()
        if writable:
            self._stores.append((device, host))
        return host

    def new_like(self, template: Any, count: int, dtype: np.dtype) -> Any:
        """A new output of ``count`` elements like ``template``: same library and device."""
        device = self._devices.get(id(template))
        if device is not None:
            return device.new_like(count)
        if is_torch_tensor(template):
            return sys.modules["torch"].empty(count, dtype=template.dtype)
        return np.empty(count, dtype=dtype)

    def wrap(self, body: Callable[[Call], Any]) -> Callable[[Call], Any]:
        """``body``, followed by the copies back into device outputs (none if it raises)."""
        if not self._stores:
            return body
        stores = self._stores

        def staged(call: Call) -> Any:
            result = body(call)
            for device, host in stores:
                device.from_host(host)
            return result

        return staged

    def wrap_plan(self, plan: Callable[[Any, Any, Call], None], x: Any, out: Any, result: Any) -> Callable[[Call], Any]:
        """The body of a planned call (``plan(x, out, call)``, returning ``result``), wrapped."""

        def body(call: Call) -> Any:
            plan(x, out, call)
            return result

        return self.wrap(body)


class NoteStaged:
    """The ``on_device`` callback of a communicator's :class:`Staging`: says once per
    communicator that device buffers go through host memory (:func:`warn_staged`)."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.said = False

    def __call__(self, device: DeviceArray, name: str) -> None:
        if not self.said:
            self.said = True
            warn_staged(self.comm.rank, self.comm.transport_names, device, name)


def warn_staged(rank: int, routes: dict[int, str], device: DeviceArray, name: str) -> None:
    """Say that device buffers go through host memory, and by which host transport to each
    peer (``routes``: peer -> transport name; ``shm_staged``, ``tcp_staged`` in docs/gpu.md)."""
    by_transport: dict[str, list[int]] = {}
    for peer, transport in sorted(routes.items()):
        by_transport.setdefault(transport, []).append(peer)
    said = "; ".join(f"{t}_staged to ranks {peers}" for t, peers in sorted(by_transport.items()))
    logger.warning(
        "rank %d: %s is a %s; device buffers are copied through host memory (%s): cuda_ipc does not "
        "apply here (COLLECTIVES_DEBUG=INFO says why; see docs/gpu.md)", rank, name, device.description,
        said or "no peers",
    )
