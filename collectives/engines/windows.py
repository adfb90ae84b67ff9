"""The shared windows of one communicator, made collectively on first use.

Every rank of the communicator is on this host and reached over shared memory, so each
can map every other's buffers: the scratch window (direct all-reduces, grown as needed),
the small window (small collectives and the flags of single-copy reads), and the windows
of ``alloc``. Opening one is collective: each rank creates its segment, the names go round
over the channels (a ring all-gather), each maps the others', and owners unlink their own
once everyone has mapped it (a barrier), so nothing outlives the job.

The serial counters of the window engine live here too: every kind of window call counts
its calls with its own (the same numbers on every rank), since the flags they publish are
shared between all plans of that kind.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import numpy as np

from ..algorithms import barrier as barrier_schedule
from ..algorithms import ring as ring_schedules
from ..algorithms.direct_routes import DIRECT_STEP_BYTES as DIRECT_STEP_BYTES  # the engine's piece, patched here by tests
from ..algorithms.schedule import partition
from ..tags import CONTROL_TAG_BIT
from ..transports import cma
from ..transports.shm import ShmTransport
from ..transports.shm_window import NAME_BYTES, ShmWindow
from . import direct, small
from .call import Call
from .executor import Executor

logger = logging.getLogger("collectives")

class SharedWindows:
    """The windows, peer-memory reads and serial counters of one communicator's window engine.

    Attributes:
        small_serial: calls through the small window's halves (``small._Plan`` kinds).
        broadcast_serial: the one-way calls through the slots (``engines.slots``).
        memory_serial: single-copy reads and agreements (``direct``'s reads flags).
        window_serial: direct all-reduces and reduce-scatters through the scratch window.
    """

    def __init__(
        self, transport: ShmTransport, rank: int, size: int, executor: Executor, *, cross_memory: bool,
        label: str, in_c: bool = True,
    ) -> None:
        self.transport = transport
        self.rank = rank
        self.size = size
        self.executor = executor
        self.cross_memory = cross_memory
        self.in_c = in_c  # the small window's calls may run in C (not COLLECTIVES_PURE_PYTHON)
        self.label = label
        self.registered: list[Any] = [None]  # id 0: the scratch window (None until first use); then alloc's
        self.small_window: Any = None
        self.small_serial = 0
        self.broadcast_serial = 0
        self.memory_serial = 0
        self.window_serial = 0
        self._memory: direct.PeerMemory | None = None
        self._memory_probed = False
        self._read_piece: np.ndarray | None = None

    def open(self, nbytes: int, window_id: int, call: Call) -> ShmWindow:
        """Collectively create a window of ``nbytes`` per rank (see the module docstring)."""
        window = ShmWindow(self.transport, self.rank, list(range(self.size)), nbytes, window_id)
        try:
            names = np.zeros(NAME_BYTES * self.size, dtype=np.uint8)
            names[self.rank * NAME_BYTES : (self.rank + 1) * NAME_BYTES] = np.frombuffer(window.name(), np.uint8)
            tag = CONTROL_TAG_BIT | call.seq
            steps = ring_schedules.all_gather(self.rank, self.size, partition(names.size, self.size), names.size)
            self.executor.run(steps, [names], op=None, tag=tag, deadline=call.deadline, on_timeout=call.timed_out)
            window.attach({r: names[r * NAME_BYTES : (r + 1) * NAME_BYTES].tobytes() for r in range(self.size)})
            empty = np.empty(0, dtype=np.uint8)
            self.executor.run(barrier_schedule.barrier(self.rank, self.size), [empty], op=None, tag=tag,
                              deadline=call.deadline, on_timeout=call.timed_out)
        except BaseException:
            window.close()
            raise
        window.unlink_own()
        return window

    def small(self, call: Call) -> Any:
        """The small window: small collectives and the flags of single-copy reads."""
        if self.small_window is None:
            self.small_window = self.open(small.window_bytes(), -1, call)
            self.small_window.in_c = self.in_c
        return self.small_window

    def scratch(self, nbytes: int, call: Call) -> Any:
        """The scratch window, grown (collectively: every rank asks for the same size) to
        hold ``nbytes``."""
        current = self.registered[0]
        if current is not None and current.nbytes >= nbytes:
            return current
        capacity = 1 << max(20, (max(nbytes, 1) - 1).bit_length())
        window = self.open(capacity, 0, call)
        if current is not None:
            current.close()
        self.registered[0] = window
        self.window_serial = 0
        return window

    def alloc(self, nbytes: int, call: Call) -> np.ndarray:
        """A new registered window of ``nbytes`` per rank; returns this rank's bytes."""
        window = self.open(nbytes, len(self.registered), call)
        self.registered.append(window)
        data: np.ndarray = window.data(self.rank)[:nbytes]
        return data

    def alloc_array(self, shape: int | tuple[int, ...], dtype: np.dtype, call: Call) -> np.ndarray:
        """A zeroed array of ``shape`` and ``dtype`` in a new registered window."""
        shape_t = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
        count = int(np.prod(shape_t, dtype=np.int64))
        array = self.alloc(count * dtype.itemsize, call).view(dtype).reshape(shape_t)
        array[...] = 0
        return array

    def peer_memory(self, call: Call) -> direct.PeerMemory | None:
        """Reads of peers' memory (process_vm_readv) if the kernel allows them between all
        of us, else None; probed collectively on first use, so every rank agrees."""
        if self._memory_probed:
            return self._memory
        window = self.small(call)
        memory = None
        if self.cross_memory and cma.AVAILABLE:
            cma.allow_peers()
            candidate = cma.PeerMemory(self.transport.peer_pids())
            probe = np.frombuffer(secrets.token_bytes(8), dtype=np.uint8).copy()
            ok, self.memory_serial = direct.probe_peer_memory(
                window, candidate, probe, self.memory_serial, call.deadline, call.timed_out
            )
            memory = candidate if ok else None
            logger.info(
                "%s: single-copy reads of peers' memory %s", self.label,
                "work (process_vm_readv)" if ok else "are refused by the kernel; copying through shared memory",
            )
        self._memory_probed, self._memory = True, memory
        return memory

    @property
    def memory(self) -> direct.PeerMemory | None:
        """The peers' memory once probed and allowed (None before the probe, or refused)."""
        return self._memory

    def reads(self, call: Call) -> direct.Reads | None:
        """What the algorithms by reads need for this call, or None where reads are refused."""
        memory = self.peer_memory(call)
        if memory is None:
            return None
        if self._read_piece is None:
            self._read_piece = np.empty(DIRECT_STEP_BYTES, dtype=np.uint8)
        return direct.Reads(self.small_window, memory, self._read_piece, call.deadline, call.timed_out)

    def is_registered(self, array: np.ndarray) -> bool:
        """Whether ``array`` lives in one of the windows of ``alloc``."""
        return len(self.registered) > 1 and direct.locate(array, self.registered)[0] != 0

    def close(self) -> None:
        for window in self.registered:
            if window is not None:
                window.close()
        self.registered = [None]
        if self.small_window is not None:
            self.small_window.close()
