"""The express lane of point-to-point: a blocking send or receive of a message of up to 1 MiB
between two ranks on one host moves in one C call (engines/_express_c.c), without the engine's Work,
intake and progress loop; so does a ``sendrecv``, both ways, large messages by single copy
(``SWAP_BYTES``; docs/transports.md says how).

It is only a shortcut: where it cannot take a call as it is (the message over
``EXPRESS_BYTES``, no room in the ring, the peer late past its spin and yield, a frame of
another tag or size next, anything queued, held or half read on the channel (but the header
of this very message, read ahead and held back by the engine), the lock held by another
thread, a buffer that is not a plain contiguous one, an argument the engine would refuse), it
moves nothing and says so, and the caller runs the call through the engine
(engines/point_to_point.py), which makes the checks and raises the errors. Messages of one
tag between a pair still match in posting order: the lane takes a frame only when the engine
has nothing of that tag before it. Where the C part is not built, or ``Config.pure_python``,
:class:`NoLane` sends every call through the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from ..buffers import BUILT_IN_DTYPES
from ..config import Config
from ..tags import MAX_USER_TAG, P2P_TAG_BIT
from ..transports.progress import YIELD_SECONDS, oversubscribed
from ..transports.frames import Request
from ..transports.shm import ShmChannel
from .point_to_point import PointToPoint

try:
    from ._express_c import Express  # type: ignore[import-not-found]
except ImportError:  # no compiler at install time
    Express = None

EXPRESS_BYTES = 1 << 20
"""Largest message the lane moves: one frame, written at once into a ring (the most one write of
the engine moves, a quarter of the default ring); larger ones stream through the engine, whose
writer and reader copy at once (docs/performance.md, "Thresholds")."""

SWAP_BYTES = 512 << 10
"""Smallest message a ``sendrecv`` through the lane moves by single copy, both ways in one call
(the peer copies my message out of my memory while I copy its one out of its memory), where
the channels have learnt that cross-memory copies work: the engine's first message this large
on a channel goes by single copy to ask (``SingleCopy.ask_bytes``). Below it, and in place up to
``EXPRESS_BYTES`` (``SWAP_BYTES_IN_PLACE_CROWDED`` where ranks outnumber cores), two copies
through the ring (docs/performance.md, "Seventeenth round")."""
SWAP_BYTES_APART = 128 << 10
"""SWAP_BYTES where the message and the receive's buffer are parts of different arrays: their
swap gains from here; a block of one array sent while another block of it is received (an
exchange of an all-gather's blocks) loses below SWAP_BYTES where its sender has just written it
(docs/performance.md, "Eighteenth round, point to point at 256 KiB")."""
SWAP_BYTES_CROWDED = 64 << 10
"""SWAP_BYTES where this host runs more ranks than it has cores: a receiver through the ring
waits for its sender to be scheduled and copy in, a swap's reader copies by itself."""
SWAP_BYTES_IN_PLACE_CROWDED = 64 << 10
"""Where ranks outnumber cores, the smallest ``sendrecv`` in place that goes by single copy (the
message copied aside first, then swapped): through the ring, ranks that find their peer's frame
there run ahead of it, and every few calls one waits out its peer's turn on a shared core
(docs/performance.md, "Twenty-second round, four ranks on two cores"); elsewhere only those
beyond ``EXPRESS_BYTES`` that the swap by halves does not take (``HALF_BYTES``) do, the ring's
two copies costing less than a copy aside and a read where each rank has a core."""
HALF_BYTES = 256 << 10
"""The smallest ``sendrecv`` with one peer that the two ranks swap
by halves, each moving half of the message both ways by single copy (engines/_half_swap.h),
where both are in the lane at once (otherwise it goes as before): in place with no copy aside,
without an upper bound (out of place: from ``HALF_BYTES_OUT_OF_PLACE``, below which, from
``PUSH_BYTES``, each rank pushes its whole message; without an upper bound
for blocks of one array, up to ``EXPRESS_BYTES`` for separate arrays, beyond which their
whole read by the single-copy swap costs less; docs/performance.md, "Twenty-second round, point
to point" and "Twenty-third round, point to point"). Below it, in place, a buffer just written
by its rank goes faster through the ring; where ranks outnumber cores, in place, the copy aside
and the swap from ``SWAP_BYTES_IN_PLACE_CROWDED``."""
HALF_BYTES_OUT_OF_PLACE = 1 << 20
"""HALF_BYTES out of place, whether the message and the receive's buffer are separate arrays or
blocks of one (hypercube_perf's exchange); below it, from ``PUSH_BYTES``, each rank writes its
whole message into the peer's receive instead (the push). Beyond ``HALF_BYTES``: a message
just written by its rank (hypercube_perf out of place) is read from its own cache by the push
where the halves read half of the peer's out of the peer's cache, 512 KiB blocks 40.6 against
61.2 µs; one not rewritten is within 10 % either way up to 512 KiB, and from 1 MiB the halves
are level or ahead (docs/performance.md, "Forty-ninth round"; from 128 KiB before it). A mixed
pair there (the in-place rank offers the halves) binds by either: engines/_half_swap.h."""

HALF_BYTES_OUT_OF_PLACE_CROWDED = HALF_BYTES
"""HALF_BYTES_OUT_OF_PLACE where ranks outnumber cores: below it each rank pushes its whole
message (``PUSH_BYTES``). There the single-copy swap's waits hand a late peer's call to the
engine, where the halves and the push, once bound, each copy by themselves; pushing the
4-rank hypercube's 64 and 128 KiB blocks beat both the swap and the halves
(docs/performance.md, "Twenty-fifth round, the 4-rank hypercube")."""

PUSH_BYTES = 32 << 10
"""The smallest out-of-place ``sendrecv`` with one peer (below
``HALF_BYTES_OUT_OF_PLACE``) that the two ranks swap by writing each its whole message into the
other's receive buffer (``process_vm_writev``; bound as the halves are, engines/_half_swap.h):
one copy a rank, of a message in its own cache, where the ring makes two and the halves read
half of the peer's message out of the peer's cache (docs/performance.md, "Twenty-fourth round,
point to point"; from 32 KiB, the 2-rank 64 KiB hypercube's blocks: "Thirty-seventh round")."""
PUSH_BYTES_CROWDED = 64 << 10
"""PUSH_BYTES where ranks outnumber cores (the 4-rank hypercube's blocks of 16-32 KiB go through
the ring, as before the thirty-seventh round: not measured there)."""

SHIFT_YIELD_SECONDS_CROWDED = 2e-3
"""Where ranks outnumber cores, how long the single-copy swap of a ``sendrecv`` with two peers (a
shift: to one rank, from another) yields for them before it hands the call to the engine
(elsewhere, and for a swap with one peer, ``YIELD_SECONDS``; beyond it, about the peer's copy):
a peer there is late by its turn on a shared core, and a call handed back costs the engine's
Python path and a sleep on the doorbell (docs/performance.md, "Thirty-third round, the 4-rank
sendrecv's swap")."""


class Lane(Protocol):
    """What the communicator calls: each returns the call's number in the communicator's count
    of point-to-point calls where the lane made it, else False."""

    sends: int
    recvs: int
    swaps: int
    halves: int
    pushes: int
    taken_whole: int
    unoffered: int
    declined: int
    expired: int

    def send(self, x: Any, dst: Any, tag: Any) -> int | bool: ...
    def recv(self, x: Any, src: Any, tag: Any) -> int | bool: ...
    def sendrecv(self, x: Any, dst: Any, out: Any, src: Any, tag: Any) -> bool | tuple[Request | None, bool]:
        """Both at once: True where both moved; ``(send request or None, received)`` where part
        did (an unfinished send is on its channel, awaiting the peer's answer to its RTS; a
        receive not done is not posted); False where nothing did."""
    def close(self) -> None:
        """Drop the lanes (before the transports unmap their rings); later calls go to the engine."""


class NoLane:
    """Every call through the engine (no shm peers, no C part, or pure Python asked)."""

    sends = recvs = swaps = halves = pushes = taken_whole = unoffered = declined = expired = 0

    def send(self, x: Any, dst: Any, tag: Any) -> int | bool:
        return False

    def recv(self, x: Any, src: Any, tag: Any) -> int | bool:
        return False

    def sendrecv(self, x: Any, dst: Any, out: Any, src: Any, tag: Any) -> bool | tuple[Request | None, bool]:
        return False

    def close(self) -> None:
        pass


def lane(p2p: PointToPoint, size: int, numbers: Iterator[int], config: Config) -> Lane:
    """The express lane of ``p2p``'s shm channels (``numbers``: the communicator's count of
    point-to-point calls, which the lane advances for each call it takes)."""
    channels = {peer: c for peer, c in p2p.channels.items() if isinstance(c, ShmChannel)}
    if Express is None or config.pure_python or not channels:
        return NoLane()
    crowded = oversubscribed(len(channels) + 1)
    swap_bytes = SWAP_BYTES_CROWDED if crowded else SWAP_BYTES
    apart_bytes = min(SWAP_BYTES_APART, swap_bytes)
    max_bytes = min(EXPRESS_BYTES, config.max_frame_bytes)
    aside_bytes = max(SWAP_BYTES_IN_PLACE_CROWDED, swap_bytes) if crowded else max_bytes + 1
    half_out_bytes = HALF_BYTES_OUT_OF_PLACE_CROWDED if crowded else HALF_BYTES_OUT_OF_PLACE
    half_bytes, push_bytes = HALF_BYTES, PUSH_BYTES_CROWDED if crowded else PUSH_BYTES
    shift_yield = SHIFT_YIELD_SECONDS_CROWDED if crowded else YIELD_SECONDS
    lanes, keep = {}, []
    for peer, channel in channels.items():
        words, kept = channel.lane()
        lanes[peer] = (channel, words)
        keep.append(kept)
        if channel.single_copy is not None:
            channel.single_copy.ask_bytes = min(apart_bytes, push_bytes) if push_bytes > 0 else apart_bytes  # (teaches the lane)
    spin = p2p.progress.spin_seconds
    lane_: Lane = Express(size, lanes, tuple(keep), p2p.lock, p2p.held, numbers, np.ndarray, BUILT_IN_DTYPES,
                          max_bytes, P2P_TAG_BIT, MAX_USER_TAG,
                          int(spin * 1e9), int(YIELD_SECONDS * 1e9), swap_bytes,
                          int(YIELD_SECONDS * 1e9), apart_bytes, aside_bytes, half_bytes,
                          half_out_bytes, push_bytes, int(shift_yield * 1e9))
    return lane_
