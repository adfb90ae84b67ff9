"""The device primitives over host memory: how CI runs the device protocol without a GPU.

Each primitive keeps CUDA's semantics (``device_memory.py``), with host stand-ins:

- device memory: a /dev/shm segment (``shm.create_segment_file``); its IPC handle is the
  segment name, which a peer opens by mapping the file; ``unexport`` unlinks it once every
  peer has mapped it, as the shared windows do.
- a stream: a worker thread that runs the work queued on it in order, asynchronously to
  the caller. A missing ``wait`` in the protocol above therefore shows as wrong data here,
  as it would on a GPU.
- an event: two counters in a small segment of its own, ``issued`` (bumped by ``record``)
  and ``completed`` (set by the stream's thread when it reaches the record). ``wait``
  reads ``issued`` when it is called and makes the stream wait until ``completed`` gets
  there: CUDA's "the most recent record before the call".

Caller buffers are :class:`HostDeviceArray` (a numpy array marked as this device's
memory), ordered on the device's one stream.
"""

from __future__ import annotations

import collections
import mmap
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..buffers import check_dtype
from ..errors import InvalidArgumentError, TransportError
from ..ops import ReduceOp, finalize, reduce_pair
from .device_memory import HANDLE_BYTES, DeviceBuffer, Span
from .shm import create_segment_file, open_segment_file, unlink_segment_file

EVENT_WAIT_SECONDS = 600.0
"""How long a stream's thread waits for an event before it fails the stream (a GPU would
wait forever; here the peer is a process that may have died)."""


class HostStream:
    """Work run in order by a thread of its own (a CUDA stream's stand-in)."""

    def __init__(self, name: str) -> None:
        self._queue: collections.deque[Callable[[], None]] = collections.deque()
        self._cv = threading.Condition()
        self._error: BaseException | None = None
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], None]) -> None:
        with self._cv:
            self._raise_error()
            if self.closed:
                raise TransportError("host device: the stream is closed")
            self._queue.append(work)
            self._cv.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise TransportError(f"host device: work on the stream failed: {self._error!r}") from self._error

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self.closed:
                    self._cv.wait()
                if not self._queue:
                    return
                work = self._queue[0]
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - kept and raised to the caller
                with self._cv:
                    self._error = exc
                    self._queue.clear()
                    self._cv.notify_all()
                continue
            with self._cv:
                if self._queue:
                    self._queue.popleft()
                self._cv.notify_all()

    def synchronize(self) -> None:
        with self._cv:
            while self._queue and self._error is None:
                self._cv.wait(0.1)
            self._raise_error()

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._queue.clear()
            self._cv.notify_all()


class HostEvent:
    """Two u64 counters (issued, completed) in a segment peers can map."""

    def __init__(self, name: str, mm: mmap.mmap, owned: bool) -> None:
        self.name, self._mm, self.owned = name, mm, owned
        self._base = memoryview(mm)
        self.counters = self._base.cast("Q")

    def close(self) -> None:
        if self.owned:
            unlink_segment_file(self.name)
        try:
            self.counters.release()
            self._base.release()
            self._mm.close()
        except (BufferError, ValueError):
            pass  # work queued on a stream still holds the counters; the GC unmaps later


class HostDeviceArray:
    """A numpy array that the host device treats as its device memory (tests, the perf
    sweep on CPU). Read it with :meth:`get`, which waits for the device's stream."""

    def __init__(self, array: np.ndarray, device: HostDevice) -> None:
        if not array.flags.c_contiguous:
            raise InvalidArgumentError("HostDeviceArray: the array is not C-contiguous")
        self.array, self.device = array, device

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def size(self) -> int:
        return int(self.array.size)

    def get(self) -> np.ndarray:
        """A host copy, once the work queued on the device's stream has run."""
        self.device.synchronize(self.device.stream)
        copy: np.ndarray = self.array.copy()
        return copy


def _handle(name: str) -> bytes:
    return name.encode().ljust(HANDLE_BYTES, b"\0")


def _name(handle: bytes) -> str:
    return handle.rstrip(b"\0").decode()


class HostDevice:
    """:class:`~collectives.transports.device_memory.Device` over host memory."""

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.name = "host"
        self.stream = HostStream(f"collectives-host-stream-{index}")
        self._segments: dict[int, tuple[str, mmap.mmap, bool]] = {}  # id(memory) -> (name, map, owned)

    # -- caller buffers ----------------------------------------------------------------------

    def array(self, values: Any, dtype: Any = None) -> HostDeviceArray:
        """A new device array holding ``values`` (written after earlier queued work, like a
        blocking host-to-device copy)."""
        self.synchronize(self.stream)
        return HostDeviceArray(np.array(values, dtype=dtype, copy=True, order="C"), self)

    def empty(self, count: int, dtype: Any) -> HostDeviceArray:
        return HostDeviceArray(np.empty(count, dtype=dtype), self)

    def new_like(self, obj: Any, count: int) -> HostDeviceArray:
        return self.empty(count, obj.dtype)

    def buffer(self, obj: Any, name: str) -> DeviceBuffer | None:
        if not isinstance(obj, HostDeviceArray):
            return None
        if obj.device is not self:
            raise InvalidArgumentError(f"{name}: a host-device array of another device")
        dtype = np.dtype(obj.dtype)
        check_dtype(dtype, name)
        flat = obj.array.reshape(-1).view(np.uint8)
        return DeviceBuffer(Span(flat, 0, flat.nbytes), dtype, obj.size, self.stream, "host-device array")

    # -- memory ---------------------------------------------------------------------------------

    def allocate(self, nbytes: int) -> Span:
        name, mm = create_segment_file(max(nbytes, 1), f"{nbytes} bytes of host-device memory")
        memory = np.frombuffer(mm, dtype=np.uint8, count=nbytes)
        self._segments[id(memory)] = (name, mm, True)
        return Span(memory, 0, nbytes)

    def export(self, span: Span) -> bytes:
        return _handle(self._segments[id(span.memory)][0])

    def unexport(self, span: Span) -> None:
        unlink_segment_file(self._segments[id(span.memory)][0])

    def open(self, handle: bytes, nbytes: int, owner: int) -> Span:
        mm = open_segment_file(_name(handle), owner, "host-device memory")
        if len(mm) < nbytes:
            mm.close()
            raise TransportError(f"host device: the memory of rank {owner} is smaller than agreed", peer=owner)
        memory = np.frombuffer(mm, dtype=np.uint8, count=nbytes)
        self._segments[id(memory)] = (_name(handle), mm, False)
        return Span(memory, 0, nbytes)

    def free(self, span: Span) -> None:
        self.close(span)

    def close(self, span: Span) -> None:
        name, mm, owned = self._segments.pop(id(span.memory))
        if owned:
            unlink_segment_file(name)
        try:
            mm.close()
        except BufferError:
            pass  # a view is still alive (a span held by a caller); the GC unmaps later

    # -- events ---------------------------------------------------------------------------------

    def event(self) -> HostEvent:
        name, mm = create_segment_file(16, "a host-device event")
        return HostEvent(name, mm, owned=True)

    def export_event(self, event: HostEvent) -> bytes:
        return _handle(event.name)

    def open_event(self, handle: bytes, owner: int) -> HostEvent:
        return HostEvent(_name(handle), open_segment_file(_name(handle), owner, "host-device event"), owned=False)

    def destroy_event(self, event: HostEvent) -> None:
        event.close()

    def record(self, event: HostEvent, stream: HostStream) -> None:
        counters = event.counters
        target = counters[0] + 1
        counters[0] = target

        def reached() -> None:
            counters[1] = target

        stream.submit(reached)

    def wait(self, stream: HostStream, event: HostEvent) -> None:
        counters = event.counters
        target = counters[0]  # the most recent record made before this call
        if target == 0:
            return

        def waited() -> None:
            start = time.monotonic()
            while counters[1] < target:
                idle = time.monotonic() - start
                if stream.closed:
                    raise TransportError("host device: the stream was closed while it waited for an event")
                if idle > EVENT_WAIT_SECONDS:
                    raise TransportError(f"host device: an event was not reached in {EVENT_WAIT_SECONDS:.0f} s")
                time.sleep(0 if idle < 0.001 else 0.0002)

        stream.submit(waited)

    # -- work -----------------------------------------------------------------------------------

    @staticmethod
    def _view(span: Span, dtype: np.dtype) -> np.ndarray:
        view: np.ndarray = span.memory[span.offset : span.offset + span.nbytes].view(dtype)
        return view

    def copy(self, dst: Span, src: Span, stream: HostStream) -> None:
        if dst.nbytes != src.nbytes:
            raise ValueError(f"copy: {src.nbytes} bytes into {dst.nbytes}")
        if dst.nbytes:
            stream.submit(lambda: np.copyto(self._view(dst, np.dtype(np.uint8)), self._view(src, np.dtype(np.uint8))))

    def reduce(self, op: ReduceOp, dtype: np.dtype, dst: Span, a: Span, b: Span, stream: HostStream) -> None:
        if dst.nbytes:
            stream.submit(lambda: reduce_pair(op, self._view(a, dtype), self._view(b, dtype), self._view(dst, dtype)))

    def average(self, dtype: np.dtype, span: Span, world_size: int, stream: HostStream) -> None:
        if span.nbytes:
            stream.submit(lambda: finalize(ReduceOp.AVG, self._view(span, dtype), world_size))

    def synchronize(self, stream: HostStream) -> None:
        stream.synchronize()

    def shutdown(self) -> None:
        """Stop the stream and unlink whatever memory is still allocated or mapped."""
        self.stream.close()
        for key in list(self._segments):
            name, mm, owned = self._segments.pop(key)
            if owned:
                unlink_segment_file(name)
            try:
                mm.close()
            except BufferError:
                pass
