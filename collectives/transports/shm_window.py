"""Shared windows: every rank's buffer mapped into every peer on the host, for direct
load/store (the one-copy algorithms of ``engines/direct.py``).

A window is one /dev/shm segment per rank: a 4 KiB flag area, then the data. Creating
one is collective over the transport's group: each rank creates its segment, the caller
exchanges the names (``names()`` / ``attach()``), every rank maps the others', and the
owner unlinks its own once all have mapped it, so nothing outlives the job.

Flags are monotonically increasing u64 counters, one per cache line, written only by
their owner: a peer waits until ``flag >= value``. Waiting spins briefly, yields, then
sleeps on the shm transport's futex doorbell, which ``post`` rings after every flag
change. Ordering relies on x86-64 TSO, as the rings do (see shm.py).
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable

import numpy as np

from ..errors import ConnectError, PeerLostError, TransportError
from .progress import YIELD_SECONDS, oversubscribed, spin_for
from .shm import ShmTransport, create_segment_file, open_segment_file, unlink_segment_file

FLAG_AREA = 4096
FLAG_STRIDE = 64  # bytes: one flag per cache line
NAME_BYTES = 64
OVERSUBSCRIBED_SLOT = FLAG_AREA // FLAG_STRIDE - 1
"""The last flag: 1 + whether this rank sees the host oversubscribed, set before the
window's name is shared, so that every rank reads every other's view on attach."""


class ShmWindow:
    """One shared buffer per rank of the group ``ranks`` (this rank included)."""

    def __init__(self, transport: ShmTransport, rank: int, ranks: list[int], nbytes: int, window_id: int) -> None:
        self.transport = transport
        self.rank = rank
        self.ranks = ranks
        self.nbytes = nbytes
        self.id = window_id
        self._name, mm = create_segment_file(FLAG_AREA + max(nbytes, 1), f"a {nbytes}-byte shared window")
        self._maps: dict[int, mmap.mmap] = {rank: mm}
        self._flags: dict[int, memoryview] = {}
        self._data: dict[int, np.ndarray] = {}
        self._slices: dict[tuple[int, int, np.dtype], list[np.ndarray]] = {}
        self._view(rank)
        self.closed = False
        self.in_c = False  # whether small calls over it may run in C (set by its user: engines/small_native.py)
        # Every rank of a window is on this host. Ranks may see different CPU sets (pinned
        # by a launcher), and algorithms choose by this, so attach() settles on one answer.
        self._flags[rank][OVERSUBSCRIBED_SLOT] = 1 + int(oversubscribed(len(ranks)))
        self._settle_oversubscribed()

    def _view(self, rank: int) -> None:
        mm = self._maps[rank]
        # A memoryview, not a numpy array: reading and comparing one of its words takes
        # about a third of numpy's time for a uint64 scalar (65 against 171 ns), and the
        # small collectives read several per call.
        self._flags[rank] = memoryview(mm)[:FLAG_AREA].cast("Q")[:: FLAG_STRIDE // 8]
        self._data[rank] = np.frombuffer(mm, dtype=np.uint8, count=self.nbytes, offset=FLAG_AREA)

    # -- collective setup (the caller moves the names) ------------------------------------

    def name(self) -> bytes:
        """This rank's segment name, padded to NAME_BYTES for a fixed-size exchange."""
        return self._name.encode().ljust(NAME_BYTES, b"\0")

    def attach(self, names: dict[int, bytes]) -> None:
        """Map the peers' segments (``names`` from every rank); then unlink mine once the
        caller has made sure all peers attached (``unlink_own``)."""
        for peer, raw in names.items():
            if peer == self.rank:
                continue
            name = raw.rstrip(b"\0").decode()
            mm = open_segment_file(name, peer, "shared window")
            if len(mm) < FLAG_AREA + self.nbytes:
                raise ConnectError(f"shm: the window of rank {peer} is smaller than agreed", peer=peer)
            self._maps[peer] = mm
            self._view(peer)
        self._settle_oversubscribed()

    def _settle_oversubscribed(self) -> None:
        """Oversubscribed if any rank attached so far says so (all of them once attached:
        the same answer on every rank)."""
        self.oversubscribed = any(flags[OVERSUBSCRIBED_SLOT] == 2 for flags in self._flags.values())
        self.spin_seconds = spin_for(self.oversubscribed)

    def unlink_own(self) -> None:
        unlink_segment_file(self._name)

    # -- use --------------------------------------------------------------------------------

    def data(self, rank: int) -> np.ndarray:
        """Rank ``rank``'s data area as bytes (this rank's own when ``rank == self.rank``)."""
        return self._data[rank]

    def slices(self, lo: int, hi: int, dtype: np.dtype) -> list[np.ndarray]:
        """Bytes ``lo:hi`` of every rank's data (in ``ranks`` order) as ``dtype`` arrays;
        cached, since small collectives ask for the same few slices on every call."""
        key = (lo, hi, dtype)
        views = self._slices.get(key)
        if views is None:
            if len(self._slices) >= 256:
                self._slices.clear()
            views = [self._data[r][lo:hi].view(dtype) for r in self.ranks]
            self._slices[key] = views
        return views

    def flag(self, rank: int, slot: int) -> int:
        return self._flags[rank][slot]

    def flags(self, rank: int) -> memoryview:
        """Rank ``rank``'s flags, read live (``flags(q)[slot]``), for loops that look often."""
        return self._flags[rank]

    def flag_area(self, rank: int) -> np.ndarray:
        """Rank ``rank``'s flag area as u64 words (flag ``slot`` at word ``slot * FLAG_STRIDE // 8``),
        for code that reads and writes the flags by address (engines/_small_c.c)."""
        return np.frombuffer(self._maps[rank], dtype=np.uint64, count=FLAG_AREA // 8)

    def post(self, slot: int, value: int, wake: bool = True) -> None:
        """Set my flag ``slot`` to ``value`` and (unless ``wake`` is false) wake peers."""
        self._flags[self.rank][slot] = value
        if wake:
            self.transport.ring_peers()

    def wait(self, rank: int, slot: int, value: int, deadline: float, on_timeout: Callable[[list[int]], BaseException]) -> None:
        """Block until rank's flag ``slot`` reaches ``value``: spin, yield, then sleep on the
        doorbell, checking that the peer is alive and the deadline between sleeps."""
        flags = self._flags[rank]
        if flags[slot] >= value:
            return
        start = time.monotonic()
        transport = self.transport
        spin = self.spin_seconds
        while True:
            now = time.monotonic()
            idle = now - start
            if idle < spin:
                pass
            elif idle < spin + YIELD_SECONDS:
                os.sched_yield()
            else:
                if now >= deadline:
                    raise on_timeout([rank])
                if self.closed or transport.closed:
                    raise TransportError(f"the shared window to rank {rank} was closed (communicator aborted)", peer=rank)
                try:
                    transport.check_peers([rank], reads=False)  # (its stream may hold what nobody reads)
                except PeerLostError:
                    if flags[slot] >= value:  # it posted, then left: what we waited for is here
                        return
                    raise
                token = transport.activity_token()
                if flags[slot] >= value:
                    return
                transport.wait_for_activity(min(deadline - now, 0.05), token)
            if flags[slot] >= value:
                return

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.unlink_own()
        self._flags.clear()
        self._data.clear()
        self._slices.clear()
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:
                pass  # a user still holds an array on it; the GC unmaps later
        self._maps.clear()
