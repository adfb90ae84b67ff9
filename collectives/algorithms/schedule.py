"""Schedules: what an algorithm does, as data, with no I/O.

An algorithm is a generator of *steps* for one rank. A step is a tuple of :class:`Send`
and :class:`Recv` operations that are issued together and then awaited; receives marked
``reduce`` land in scratch memory and are folded into their destination once the step
completes. Offsets and counts are in elements of the buffers the caller hands the
executor: buffer ``WORK`` (read and written) and ``INPUT`` (read only).

Because schedules are plain data, the same generator is run by the executor over real
transports, checked by the simulator in tests, and costed by the tuner.

Messages between two ranks within one collective are matched in order (one tag per
collective), so a schedule must issue, between every pair, sends and receives in the
same order on both sides — which every schedule here does by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

WORK = 0
INPUT = 1

PENDING_COPY_BYTES = 2 << 20
"""From this size (bytes of ``x``) an out-of-place all-reduce, reduce-scatter or non-root reduce
hands its input to the executor as the work buffer's source instead of copying it in whole
first: sends and folds read the input where no step wrote yet (``out = x op received``). Below
it one copy and in-place folds cost less than folds from a third buffer. Read by the plans that
run schedules and by the cost model's local copies (``tuning/copies.py``)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``count`` elements at ``offset`` of buffer ``buf`` to ``peer``."""

    peer: int
    offset: int
    count: int
    buf: int = WORK


@dataclass(frozen=True, slots=True)
class Recv:
    """Receive ``count`` elements from ``peer`` into ``offset`` of buffer ``buf``;
    with ``reduce``, fold them into what is there instead of overwriting it (``there op
    received``, or ``received op there`` with ``first``: two partners that combine each
    other's data put the same operand first, so they get the same bits even where the
    operator is not exactly commutative, as max of -0.0 and 0.0 is not)."""

    peer: int
    offset: int
    count: int
    reduce: bool = False
    buf: int = WORK
    first: bool = False


Op = Send | Recv
Step = tuple[Op, ...]
Schedule = Iterator[Step]


def partition(count: int, parts: int) -> list[tuple[int, int]]:
    """Split ``count`` elements into ``parts`` contiguous blocks ``(offset, length)``;
    the first ``count % parts`` blocks get one element more (MPICH's convention)."""
    base, extra = divmod(count, parts)
    blocks = []
    offset = 0
    for i in range(parts):
        length = base + (1 if i < extra else 0)
        blocks.append((offset, length))
        offset += length
    return blocks


def span(blocks: list[tuple[int, int]], first: int, last: int) -> tuple[int, int]:
    """The contiguous element range ``(offset, length)`` covering blocks ``first..last-1``."""
    if first >= last:
        return (blocks[first][0] if first < len(blocks) else 0, 0)
    start = blocks[first][0]
    end = blocks[last - 1][0] + blocks[last - 1][1]
    return (start, end - start)


def wrapped_spans(blocks: list[tuple[int, int]], first: int, n: int) -> list[tuple[int, int]]:
    """Element ranges of the ``n`` blocks ``first, first+1, ...`` taken modulo the number of
    blocks: one range, or two when the run wraps past the last block. Empty ranges are kept
    (they become empty messages: see ``segments``)."""
    total = len(blocks)
    first %= total
    pieces = [(first, min(total, first + n))]
    if first + n > total:
        pieces.append((0, first + n - total))
    return [span(blocks, a, b) for a, b in pieces]


def segments(offset: int, count: int, segment: int) -> list[tuple[int, int]]:
    """Split one range into pieces of at most ``segment`` elements; an empty range is one
    empty piece. So the messages between two ranks do not depend on which blocks happen
    to be empty: a rank that passed another count sends an empty message where its peer
    expects data (or data where it expects none), and the receiver raises
    MessageMismatchError, where skipping it would shift every later message of the call
    onto the wrong receive (silently wrong sums: a ring all-reduce of 3 elements against
    4 on 4 ranks)."""
    if count == 0:
        return [(offset, 0)]
    return [(o, min(segment, offset + count - o)) for o in range(offset, offset + count, segment)]


def exchange(
    send_peer: int | None,
    send_range: tuple[int, int] | None,
    recv_peer: int | None,
    recv_range: tuple[int, int] | None,
    segment: int,
    *,
    reduce: bool = False,
    first: bool = False,
    send_buf: int = WORK,
) -> Schedule:
    """Steps that send one range and receive another at the same time (the ring/butterfly
    step), split into segments so that memory stays bounded and transfer of segment i+1
    overlaps the reduction of segment i. An empty range is one empty message."""
    sends = segments(*send_range, segment) if send_peer is not None and send_range else []
    recvs = segments(*recv_range, segment) if recv_peer is not None and recv_range else []
    for i in range(max(len(sends), len(recvs))):
        step: list[Op] = []
        if i < len(recvs):
            step.append(Recv(recv_peer, *recvs[i], reduce=reduce, first=first))  # type: ignore[arg-type]
        if i < len(sends):
            step.append(Send(send_peer, *sends[i], buf=send_buf))  # type: ignore[arg-type]
        yield tuple(step)


def lowest_bit(x: int) -> int:
    return x & -x


def ceil_pow2(x: int) -> int:
    """Smallest power of two >= x (1 for x <= 1)."""
    return 1 << max(0, (x - 1).bit_length())


def floor_pow2(x: int) -> int:
    """Largest power of two <= x (x >= 1)."""
    return 1 << (x.bit_length() - 1)
