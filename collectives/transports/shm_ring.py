"""One single-producer single-consumer byte ring of an shm inbox (transports/shm.py): its
words and bytes, and how a stream of messages restarts at the ring's start.

Layout (offsets from the ring's start; the writer's words on the first cache line, the
reader's on the second)::

    0 tail u64, 8 want_room u32, 12 resume u32, 16 cpu u32, 24 slot u64[5] (writer)
    | 64 head u64 (reader), 96 deal u64 (both) | 128 data[capacity]

Head and tail count bytes since the start. A writer that finds the ring empty, its tail at
least ``RESTART_BYTES`` into a lap and the bytes it writes now fitting before that point,
restarts: it moves the tail on to the next lap's start (skipping the rest of the lap), stores
that lap (mod 2**32) in the resume word, writes, and publishes the tail, which publishes the
resume word with it. A reader whose ring is not empty, whose head is not at a lap's start and
whose resume word names the lap after its head's moves its head there first. That is exact
without a round trip: a restart happens only at the reader's head (the ring empty) and moves
the tail past it, so none can follow before the reader has passed it, and an earlier
restart's lap is one the reader has reached. So a stream of messages keeps to the ring's
first ``RESTART_BYTES`` (and a message) instead of passing over all of it, whose lines go
cold in a pause; not at every message, since lines the reader has just read are slower to
write again (docs/performance.md, "Thirty-ninth round"). The express lane's ``claim()`` and
``settle()`` (engines/_lane_ring.h) do the same.
"""

from __future__ import annotations

import ctypes
import mmap

RESTART_BYTES = 512 << 10  # how far into a lap an empty ring's tail must be for a restart (engines/_lane_ring.h)

_RING_TAIL = 0
_RING_WANT_ROOM = 8
_RING_RESUME = 12  # the lap where the writer last restarted (mod 2**32; 0: none yet); engines/_lane_ring.h
_RING_CPU = 16  # the CPU the writer last wrote from + 1, 0: unknown (set by the express lane only)
_RING_SLOT = 24  # the express lane's swap by halves: the writer's slot, 5 u64 ...
_RING_DEAL = 96  # ... and the deal both sides compare-and-swap (the lower rank's ring only)
_RING_HEAD = 64
_RING_DATA = 128

_MADV_POPULATE_WRITE = 23  # Linux 5.14+: map every page of a range now, writable


def _populate(mm: mmap.mmap, offset: int, length: int) -> None:
    """Map the pages of ``mm[offset:offset + length]`` into this process now: else the first
    pass of messages through a ring takes a page fault per page on each side, which small
    messages feel (docs/performance.md, "Thresholds", ``_populate``)."""
    start = offset // mmap.PAGESIZE * mmap.PAGESIZE
    try:
        mm.madvise(_MADV_POPULATE_WRITE, start, offset + length - start)
    except (OSError, ValueError, AttributeError):  # an older kernel: reading a byte maps a page of tmpfs
        bytes(memoryview(mm)[offset : offset + length : mmap.PAGESIZE])


class Ring:
    """Views of one SPSC ring inside a segment: the ring's words at ``offset`` of ``mm``, then its bytes."""

    __slots__ = ("tail", "head", "want_room", "resume", "cpu", "data", "capacity")

    def __init__(self, mm: mmap.mmap, offset: int, capacity: int) -> None:
        self.capacity = capacity
        self.tail = ctypes.c_uint64.from_buffer(mm, offset + _RING_TAIL)
        self.want_room = ctypes.c_uint32.from_buffer(mm, offset + _RING_WANT_ROOM)
        self.resume = ctypes.c_uint32.from_buffer(mm, offset + _RING_RESUME)
        self.cpu = ctypes.c_uint32.from_buffer(mm, offset + _RING_CPU)
        self.head = ctypes.c_uint64.from_buffer(mm, offset + _RING_HEAD)
        self.data = memoryview(mm)[offset + _RING_DATA : offset + _RING_DATA + self.capacity]
        _populate(mm, offset, _RING_DATA + self.capacity)

    def restart(self, tail: int) -> int:
        """The writer's restart where the ring is empty at ``tail``: the next lap's start, that lap
        stored in the resume word, which the caller's store of the new tail publishes (the module
        docstring)."""
        tail += self.capacity - tail % self.capacity
        self.resume.value = (tail // self.capacity) & 0xFFFFFFFF
        return tail

    def settle(self) -> tuple[int, int]:
        """(head, bytes to read from it), the head moved past the rest of a lap that a restart
        skipped (and published, freeing that room): the module docstring."""
        head = self.head.value
        tail = self.tail.value  # (before the resume word: the tail publishes it)
        if tail != head:
            cap = self.capacity
            at = head % cap
            if at and self.resume.value == (head // cap + 1) & 0xFFFFFFFF:
                head += cap - at
                self.head.value = head
        return head, tail - head
