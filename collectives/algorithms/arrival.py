"""Which receives the executor posts ahead, and which reducing receives it folds as they arrive.

The executor (``engines/executor.py``) posts the receives of step k+1 while step k is in flight
where that is safe (``can_post_early``: no receive of k+1 landing in place overlaps a range of
step k). A reducing receive of at least ``STREAM_FOLD_BYTES`` is folded piece by piece as its
bytes arrive, instead of landing in scratch and being folded at its step's end, where its range
overlaps no other operation of its step nor, when it is posted ahead, of the step in flight
(``folds_on_arrival``): no send reads the range meanwhile, and folds into one range keep the
schedule's order, so the bits do not depend on timing. The rule is a pure function of the
steps, so what a schedule folds on arrival can be counted without running it (``arrivals``; the
cost model prices such a receive over shared memory as one pass over the ring's bytes:
``tuning/events.py``, docs/simulation.md, *The sixty-eighth round*).

Ranges are ``(key, start, end)``: ``key`` tells the buffers apart (the executor's buffer
identity, the model's buffer index).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator

from .schedule import Recv, Step

STREAM_FOLD_BYTES = 64 << 10
"""From this size a reducing receive may fold as it arrives; below it the fold's cost per piece
outweighs the copy it saves."""

Ranges = list[tuple[Hashable, int, int]]
Key = Callable[[int], Hashable]


def ranges(step: Step, key: Key) -> Ranges:
    """The ranges every operation of ``step`` reads or writes in place."""
    return [(key(o.buf), o.offset, o.offset + o.count) for o in step if o.count]


def overlaps(o: Recv, key: Key, busy: Ranges) -> bool:
    """Whether ``o``'s range overlaps one of ``busy``."""
    k, end = key(o.buf), o.offset + o.count
    return any(b == k and start < end and o.offset < stop for b, start, stop in busy)


def can_post_early(nxt: Step, busy: Ranges, key: Key) -> bool:
    """Whether the receives of ``nxt`` may be posted while a step whose ranges are ``busy`` is in
    flight: those landing in scratch always may; those landing in place only where no range of
    the step in flight overlaps them (a send still reading it, or a receive or fold writing it)."""
    return not any(isinstance(o, Recv) and not o.reduce and o.count and overlaps(o, key, busy) for o in nxt)


def folds_on_arrival(step: Step, busy: Ranges | None, key: Key, itemsize: int) -> set[int]:
    """The positions in ``step`` of the reducing receives that fold as they arrive, the step
    posted while one whose ranges are ``busy`` is in flight (None: after it ended)."""
    least = -(-STREAM_FOLD_BYTES // itemsize)
    chosen = set()
    for i, o in enumerate(step):
        if not (isinstance(o, Recv) and o.reduce and o.count >= least):
            continue
        others = ranges(step[:i] + step[i + 1 :], key)
        if not overlaps(o, key, others) and (busy is None or not overlaps(o, key, busy)):
            chosen.add(i)
    return chosen


def arrivals(steps: Iterable[Step], itemsize: int, key: Key = int) -> Iterator[tuple[Step, set[int]]]:
    """Each step of one rank's schedule with ``folds_on_arrival`` of it, as the executor posts it
    (ahead of the step before's end where ``can_post_early``; an empty step, which it skips, with none)."""
    before: Ranges | None = None  # the ranges of the step before
    for step in steps:
        if not step:
            yield step, set()
            continue
        busy = before if before is not None and can_post_early(step, before, key) else None
        yield step, folds_on_arrival(step, busy, key, itemsize)
        before = ranges(step, key)
