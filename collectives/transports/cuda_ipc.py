"""``cuda_ipc``: every rank's device scratch memory and events, mapped by every peer.

For ranks on one host whose GPUs can reach each other's memory (peer access, or one GPU
shared by several ranks). Each rank allocates a scratch buffer on its device and three
interprocess events (``in``, ``red``, ``done``: what the device engine records as its
steps are queued); the handles go through the communicator's store, every peer opens them
once and keeps the mappings until :meth:`close`. The scratch grows (collectively: every
rank asks for the same size at the same call) to the largest call seen, a power of two.

Progress flags (which call each rank has queued its steps for) live in a host window of
the shared windows (``transports/shm_window.py``), handed in by the engine: the device
orders the work, the host flags say which record of an event a peer may wait on.

Written against ``device_memory.Device``: the same code runs on CUDA (``device_cuda``) and,
in CI, on host memory (``device_host``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import TransportError
from .device_memory import HANDLE_BYTES, Device, Span

logger = logging.getLogger("collectives")

GROWN, OPENED, IN, RED, DONE = range(5)
"""Flag slots of the device flags window: GROWN and OPENED (this transport's agreements
when the scratch is replaced), IN, RED, DONE (the engine's steps, see engines/device_direct.py)."""

EVENTS = ("in", "red", "done")
MIN_SCRATCH = 1 << 20


class Flags(Protocol):
    """The host flags the engine hands in (an ``ShmWindow``)."""

    def post(self, slot: int, value: int, wake: bool = True) -> None: ...
    def wait(
        self, rank: int, slot: int, value: int, deadline: float, on_timeout: Callable[[list[int]], BaseException]
    ) -> None: ...


class CudaIpc:
    """The device memory and events of one communicator's ranks, mapped everywhere."""

    name = "cuda_ipc"

    def __init__(self, device: Device, rank: int, size: int, store: Any) -> None:
        self.device, self.rank, self.size, self.store = device, rank, size, store
        self.others = [q for q in range(size) if q != rank]
        self.events: dict[str, Any] = {}  # mine
        self.peer_events: dict[int, dict[str, Any]] = {}
        self.capacity = 0
        self.generation = 0
        self._scratch: Span | None = None
        self._peer_scratch: dict[int, Span] = {}
        self._flags: Flags | None = None
        self.closed = False

    # -- setup ----------------------------------------------------------------------------------

    def connect(self, flags: Flags, deadline: float, on_timeout: Callable[[list[int]], BaseException]) -> None:
        """Create my events, publish their handles and open every peer's (once)."""
        self._flags = flags
        self.events = {kind: self.device.event() for kind in EVENTS}
        self.store.set(f"cuda_ipc/events/{self.rank}", b"".join(self.device.export_event(self.events[k]) for k in EVENTS))
        for q in self.others:
            raw = self.store.get(f"cuda_ipc/events/{q}", self._left(deadline))
            self.peer_events[q] = {
                kind: self.device.open_event(raw[i * HANDLE_BYTES : (i + 1) * HANDLE_BYTES], q)
                for i, kind in enumerate(EVENTS)
            }

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.001, deadline - time.monotonic())

    def _agree(self, slot: int, value: int, deadline: float, on_timeout: Callable[[list[int]], BaseException]) -> None:
        assert self._flags is not None
        self._flags.post(slot, value)
        for q in self.others:
            self._flags.wait(q, slot, value, deadline, on_timeout)

    def ensure(self, nbytes: int, stream: Any, deadline: float, on_timeout: Callable[[list[int]], BaseException]) -> None:
        """Scratch of at least ``nbytes`` on every rank (collective when it grows): every
        rank finishes its queued work, drops the old mappings, allocates anew, publishes the
        handle, opens the peers' and, once all have, releases what served to open its own."""
        if self._scratch is not None and nbytes <= self.capacity:
            return
        capacity = max(MIN_SCRATCH, 1 << (nbytes - 1).bit_length())
        self.generation += 1
        g = self.generation
        if self._scratch is not None:
            self.device.synchronize(stream)  # my reads of the peers' old scratch are done
            self._agree(GROWN, g, deadline, on_timeout)  # ... and theirs of mine
            self._release_scratch()
        self._scratch = self.device.allocate(capacity)
        self.capacity = capacity
        handle = self.device.export(self._scratch)
        self.store.set(f"cuda_ipc/scratch/{g}/{self.rank}", capacity.to_bytes(8, "little") + handle)
        for q in self.others:
            raw = self.store.get(f"cuda_ipc/scratch/{g}/{q}", self._left(deadline))
            theirs = int.from_bytes(raw[:8], "little")
            if theirs != capacity:
                raise TransportError(f"cuda_ipc: rank {q} grew its scratch to {theirs} bytes, rank {self.rank} to "
                                     f"{capacity} (the ranks' calls differ)", peer=q)
            self._peer_scratch[q] = self.device.open(raw[8:], capacity, q)
        self._agree(OPENED, g, deadline, on_timeout)
        self.device.unexport(self._scratch)
        logger.debug("cuda_ipc: rank %d scratch is %d bytes (generation %d)", self.rank, capacity, g)

    # -- use --------------------------------------------------------------------------------------

    def scratch(self, rank: int) -> Span:
        """Rank ``rank``'s scratch (mine, or a peer's as mapped here)."""
        if rank == self.rank:
            assert self._scratch is not None
            return self._scratch
        return self._peer_scratch[rank]

    def event(self, rank: int, kind: str) -> Any:
        """Rank ``rank``'s event ``kind`` ("in", "red", "done"): mine, or a peer's as opened."""
        return self.events[kind] if rank == self.rank else self.peer_events[rank][kind]

    # -- teardown -------------------------------------------------------------------------------

    def _release_scratch(self) -> None:
        for span in self._peer_scratch.values():
            self.device.close(span)
        self._peer_scratch.clear()
        if self._scratch is not None:
            self.device.free(self._scratch)
            self._scratch = None
        self.capacity = 0

    def close(self) -> None:
        """Unmap the peers' memory and events, free mine. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self._release_scratch()
            for events in self.peer_events.values():
                for event in events.values():
                    self.device.destroy_event(event)
            for event in self.events.values():
                self.device.destroy_event(event)
        finally:
            self.peer_events.clear()
            self.events.clear()
            self.device.shutdown()
