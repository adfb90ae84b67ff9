"""Where the direct engine changes route on one host, by size: read by the engines and plans
that take the routes (``engines/``, ``plans/windowed.py``) and by the cost model that prices
them (``tuning/reads.py``), so that the model prices the route the library runs.

- All-gathers (bytes of one rank's contribution): through the small window's halves up to
  ``gather_window_bytes``, by single-copy reads of peers' memory beyond it and, where every
  rank has a core, from ``GATHER_READS_BYTES`` already; where every rank has a core, from
  ``ALL_GATHER_WRITES_BYTES`` below ``ALL_GATHER_STREAM_BYTES`` every rank writes its block into
  its peers' memory instead (``all_gather_writes``); in C from ``ALL_GATHER_STREAM_BYTES`` a rank
  copies its own block into its ``out`` by non-temporal stores, in Python from
  ``ALL_GATHER_COPY_FIRST_BYTES`` before its peers read it there.
- All-reduces and reduce-scatters too large for the halves (bytes of ``x``): by reads from
  ``reads_from``, else two shots through the scratch window; either way block by block in
  pieces of ``DIRECT_STEP_BYTES``.
- All-reduces up to ``ALL_REDUCE_HALVES_BYTES`` and reduce-scatters up to ``HALF_BYTES`` through
  the small window's halves (where ranks outnumber cores all-reduces up to
  ``ALL_REDUCE_HALVES_CROWDED_BYTES``, beyond it piece by piece up to
  ``ALL_REDUCE_PIECES_CROWDED_BYTES``, reduce-scatters up to
  ``REDUCE_SCATTER_HALVES_CROWDED_BYTES``); there
  all-reduces, where ranks outnumber cores, from ``TWO_SHOT_BYTES`` in two shots (``two_shot``),
  where every rank has a core from ``TWO_SHOT_CORES_BYTES``, else every rank folds the whole vector.
- All-to-alls, gathers and scatters within the window's limits: by reads from their sizes
  (``exchange_by_reads``), else through the window's halves or slots.
- Reduces beyond the small window's slots (``registry.DIRECT_REDUCE_BYTES``): by reads from
  ``reduce_reads_from``; below it, where ranks outnumber cores, through the slots a slot's
  worth at a time (``reduce_by_pieces``), else the automatic choice's schedule.

Every route by reads holds only where the kernel allows them (elsewhere the window, or beyond
its limit the automatic choice's schedule). Every input is the same on every rank, so every
rank takes the same route.
"""

from __future__ import annotations

GATHER_BYTES = 1 << 20
"""The largest all-gather contribution taken through the small window where every rank has a
core (from ``GATHER_READS_BYTES`` only where the kernel refuses single-copy reads; the window's
halves are sized for it). Measured: docs/performance.md, "Thresholds", GATHER_BYTES."""

GATHER_BYTES_OVERSUBSCRIBED = 128 << 10
"""The same where ranks outnumber cores: smaller contributions take the window there (against
single-copy reads, whose syscalls and page pinning grow with the ranks), larger ones the reads in
one C call, which beat the window's copy in and copies out from here. Measured:
docs/performance.md, "Thresholds", GATHER_BYTES_OVERSUBSCRIBED."""

GATHER_READS_BYTES = 16 << 10
"""Contributions from this size go by single-copy reads (one C call,
``exchange_reads.ExchangeByReads``) where reads are allowed and every rank has a core, although
the window could take them up to ``GATHER_BYTES``: one read per peer beat the window's copy in
and copy out from here. (Where ranks outnumber cores the window measured faster up to its
limit.) Measured: docs/performance.md, "Thresholds", GATHER_READS_BYTES."""

ALL_GATHER_COPY_FIRST_BYTES = 2 << 20
"""All-gather blocks from this size are copied into their owner's ``out`` before it posts them
(peers read them there); smaller ones are posted from ``x`` and copied while peers read them.
Only where the call runs in Python: in C ``ALL_GATHER_STREAM_BYTES`` takes them. Measured:
docs/performance.md, "Thresholds", ALL_GATHER_COPY_FIRST_BYTES."""

ALL_GATHER_STREAM_BYTES = 16 << 20
"""All-gather blocks from this size, where the call runs in C, are posted from ``x`` and copied
into their owner's ``out`` with non-temporal stores (the copy neither reads the lines it
overwrites nor evicts the peer blocks the rank's reads bring in), and every peer reads them from
``x``; below it, from ``ALL_GATHER_WRITES_BYTES``, the writes take them. 8 MiB blocks (2 ranks,
the harness's 16 MiB of ``out``) went by these reads for a round (then faster than the writes);
on the machine of the thirty-fifth round the writes, whose second pass over each piece of ``x``
reads it from the cache, beat them by a fifth out of place in the harness's sweep. Measured:
docs/performance.md, "Twentieth round", "Thirty-third round, the 2-rank 16 MiB all_gather" and
"Thirty-fifth round, a staging ring for the 2-rank 16 MiB all_gather"."""

ALL_GATHER_WRITES_BYTES = 512 << 10
"""Where every rank has a core, all-gather blocks from this size below ``ALL_GATHER_STREAM_BYTES``
go by writes: each rank writes its block into every peer's ``out`` (``process_vm_writev``) and
copies it into its own, piece by piece (``ALL_GATHER_WRITE_PIECE_BYTES``), instead of reading
every peer's block: the same bytes, but the second pass over each piece of ``x`` reads it from
the cache. Smaller blocks measured even; where ranks outnumber the cores, mixed. Measured:
docs/performance.md, "Twenty-first round"."""

ALL_GATHER_WRITE_PIECE_BYTES = 512 << 10
"""The piece of an all-gather by writes (``ALL_GATHER_WRITES_BYTES``): written to every peer, then
copied into the rank's own ``out``, before the next. Measured: docs/performance.md,
"Twenty-first round"."""

READS_FROM_BYTES = 8 << 20
"""All-reduces and reduce-scatters of ordinary arrays from this size take ``all_reduce_by_reads``
and ``reduce_scatter_by_reads`` (where the kernel allows the reads). Below, the syscalls and page
pinning of the reads cost more than the copy they save. Buffers from ``comm.alloc`` keep the
window (reading shared mappings is slower than reading the heap). Measured: docs/performance.md,
"Thresholds", READS_FROM_BYTES."""

ALL_REDUCE_READS_FROM_BYTES = 1 << 20
"""Where every rank has a core, all-reduces take the reads from this size instead (one read of
each peer's half beat the window's copy in, two-shot reduce and copy out from here). Measured:
docs/performance.md, "Thresholds", ALL_REDUCE_READS_FROM_BYTES."""

ALL_TO_ALL_READS_BYTES = 128 << 10
"""All-to-alls (bytes of ``x``) from this size up to the small window's limit go by reads where
ranks do not outnumber the cores (the window's halves below it). Measured: docs/performance.md,
"Thresholds", ALL_TO_ALL_READS_BYTES."""
ALL_TO_ALL_READS_CROWDED = 256 << 10
"""Where ranks outnumber the cores, all-to-alls from this size go by reads, smaller ones within the
window's limit through its halves. Measured: docs/performance.md, "Thresholds",
ALL_TO_ALL_READS_CROWDED (up to the window's limit since in place swaps blocks: "Thirty-fourth
round, the in-place all-to-all")."""
GATHER_SLOTS_BYTES = 64 << 10
"""Gathers (bytes of the root's ``out``) up to this size go through the window's slots, larger
ones within the window's limit by reads where ranks do not outnumber the cores (the slots where
they do). Measured: docs/performance.md, "Thresholds", GATHER_SLOTS_BYTES."""
SCATTER_SLOTS_BYTES = 128 << 10
"""Scatters (bytes of the root's ``x``) up to this size go through the window's slots, larger
ones by reads. Measured: docs/performance.md, "Thresholds", SCATTER_SLOTS_BYTES."""
REDUCE_READS_BYTES = (4 << 20, 2 << 20)
"""Reduces (bytes of ``x``) from the first size where every rank has a core, from the second
where ranks outnumber the cores, go by reads (``direct.reduce_by_reads``: every rank folds a
block, the root reads the folded blocks) where the kernel allows them; smaller ones beyond the
slots run their schedule, whose pipelined copies beat the reads' syscalls and whole-block waits
there. Measured: docs/performance.md, "Eighteenth round: reduce by reads"."""
REDUCE_PIECES_CROWDED_RANKS = (3, 16 << 20)
"""Where ranks outnumber cores in a group of at most the first count of ranks, reduces go by reads
only from the second size instead (``REDUCE_READS_BYTES``' second), the smaller ones through the
slots piece by piece in C: with two peers a piece the root's fold keeps up, with seven it does
not (at 8 ranks the pieces were slower from 4 MiB). At 4 ranks the pieces ran up to 16 MiB since
the thirty-third round, until the reads folded in C (``FOLDS_IN_C_BYTES``) took 0.6-0.8 of their
time at 2-4 MiB; at 3 ranks the pieces stayed ahead at 2-8 MiB. Measured on 2 cores:
docs/performance.md, "Thirty-third round, crowded reduces from 2 MiB" and "Forty-fifth round, the
4-rank reduce of 4 MiB by reads"."""

FOLDS_IN_C_BYTES = 8 << 20
"""Where ranks outnumber cores, reduces and reduce-scatters by reads (bytes of ``x``) below this
size run in C (``exchange_reads.fold_plan``: the Python plan's steps, its waits yielding up to
``exchange_reads.FOLD_YIELD_SECONDS`` before the Python plan's sleeping waits take over); larger
ones in Python. At 8 ranks on 2 cores the C plan took 0.67-0.93 of the Python plan's time at 2 and
4 MiB in 11 of 12 pairs each, 0.81-1.37 at 8 MiB, 1.02-1.40 at 16 MiB; the reduce-scatters by reads
(from ``READS_FROM_BYTES``) 0.79-1.01 at 8-16 MiB where the same code at 4 MiB took 0.95-0.99: not
taken. So the crowded reduces of 2-4 MiB at 4-8 ranks run in C, nothing else. Measured:
docs/performance.md, "Thirty-fourth round, crowded reduces by reads in C" (8 ranks) and
"Forty-fifth round, the 4-rank reduce of 4 MiB by reads" (4 ranks)."""

HALF_BYTES = 512 << 10
"""Bytes of each half of the small window (``engines/small.py``), the largest contribution a small
reduction or broadcast takes: up to here one flag per call beats the chunked direct algorithms.
Measured: docs/performance.md, "Thresholds", HALF_BYTES."""

BROADCAST_BYTES = 2 << 20
"""The largest broadcast taken through the small window's halves at once (``engines/small.py``;
the halves are as large): one copy in by the root and one out by each rank, all in cache, beat
the single-copy reads of ``direct.broadcast`` up to here (all-reduce and reduce-scatter keep
HALF_BYTES). Measured: docs/performance.md, "Thresholds", BROADCAST_BYTES."""

ALL_REDUCE_HALVES_BYTES = 1 << 20
"""All-reduces (bytes of ``x``) up to this size go through the small window's halves (the
other small reductions and broadcasts up to ``HALF_BYTES``): at 1 MiB the halves' copy in and
one or two shots beat the reads in Python at 2 ranks and the scratch window at 4 on 2 cores.
Measured:
docs/performance.md, "Twentieth round"."""

ALL_REDUCE_HALVES_CROWDED_BYTES = 2 << 20
"""Where ranks outnumber cores, all-reduces (bytes of ``x``) beyond ``ALL_REDUCE_HALVES_BYTES`` up
to this size (at most the halves' size, ``small._half_bytes``, and below the reads' size) go
through the small window's halves too, in two shots (``TwoShotAllReducePlan``: one flag per shot,
the halves alternating), instead of two shots through the scratch window, whose calls wait for
every peer to be done with the last. Where every rank has a core the halves measured no better
than the reads beyond ``ALL_REDUCE_HALVES_BYTES`` ("Twenty-first round"). Measured:
docs/performance.md, "Twenty-eighth round, eight ranks at 2 MiB"."""

TWO_SHOT_BYTES = 64 << 10
"""Where ranks outnumber cores, all-reduces through the small window's halves from this size
take two shots (``engines/small.py``'s ``TwoShotAllReducePlan``: each rank folds one block of
every half, then copies the others' reduced blocks) instead of every rank folding the whole
vector: a quarter of the folding and half the reads of other cores' halves at 4 ranks, for one
more flag per call. Measured: docs/performance.md, "Thresholds", TWO_SHOT_BYTES."""

TWO_SHOT_CORES_BYTES = HALF_BYTES + 1
"""Where every rank has a core, all-reduces through the small window's halves beyond
``HALF_BYTES`` (the sizes only the all-reduce takes through them, up to
``ALL_REDUCE_HALVES_BYTES``) take two shots too: there the halved fold and reads of the peer's
half beat every rank folding the whole vector; at ``HALF_BYTES`` they measured even. Measured:
docs/performance.md, "Twenty-first round"."""

ALL_REDUCE_PIECES_CROWDED_BYTES = 8 << 20
"""Where ranks outnumber cores, all-reduces (bytes of ``x``) beyond ``ALL_REDUCE_HALVES_CROWDED_BYTES``
up to this size (and below the reads' size) go through the small window's halves too, piece by
piece (``all_reduce_pieces``; ``plans/windowed.py``'s ``PiecewiseAllReduce``): each piece one call
of the halves' two-shot plan, the halves alternating, so a rank copies piece k + 1 into one half
while its peers still read piece k out of the other, instead of two shots through the scratch
window in numpy. Measured: docs/performance.md, "Thirtieth round, crowded all-reduces of 2-8
MiB"."""

REDUCE_SCATTER_HALVES_CROWDED_BYTES = 2 << 20
"""Where ranks outnumber cores, reduce-scatters (bytes of ``x``) beyond ``HALF_BYTES`` up to this
size (at most the halves' size, ``small._half_bytes``) go through the small window's halves too
(``small.ReduceScatterPlan``: one flag per call, the halves alternating) instead of two shots'
first through the scratch window, whose calls wait for every peer to be done with the last.
Measured: docs/performance.md, "Thresholds", REDUCE_SCATTER_HALVES_CROWDED_BYTES."""

BROADCAST_HALVES_CROWDED_BYTES = 8 << 20
"""Where ranks outnumber cores, broadcasts too large for the small window's halves up to this
size go through them piece by piece (``small.PiecewiseBroadcastPlan``) instead of by single-copy
reads: a copy into shared memory by the root and one out by every other rank beat every
reader's ``process_vm_readv`` there. Measured: docs/performance.md, "Thresholds",
BROADCAST_HALVES_CROWDED_BYTES."""


DIRECT_STEP_BYTES = 1 << 20
"""Bytes of each rank's block handled per step of the direct all-reduce through the window, and
the piece in which the all-reduces and reduce-scatters by reads read their peers' blocks (one
read of each peer per piece; an all-reduce's read of a reduced piece waits for its owner's flag).
Measured: docs/performance.md, "Thresholds", DIRECT_STEP_BYTES."""


def reads_pieces(nbytes: int, size: int) -> int:
    """The pieces of at most ``DIRECT_STEP_BYTES`` in which an all-reduce or reduce-scatter by
    reads of ``nbytes`` (bytes of ``x``) at ``size`` ranks reads each peer's part of a block."""
    block = -(-nbytes // size)
    return max(1, -(-block // DIRECT_STEP_BYTES))


def gather_window_bytes(oversubscribed: bool) -> int:
    """The largest all-gather contribution the small window takes, where ranks outnumber cores
    (``oversubscribed``) or not."""
    return GATHER_BYTES_OVERSUBSCRIBED if oversubscribed else GATHER_BYTES


def all_gather_by_reads(block: int, oversubscribed: bool) -> bool:
    """Whether an all-gather contribution of ``block`` bytes goes by single-copy reads where
    they are allowed: beyond the window's limit, and where every rank has a core from
    ``GATHER_READS_BYTES``."""
    return block > gather_window_bytes(oversubscribed) or (not oversubscribed and block >= GATHER_READS_BYTES)


def all_gather_copies_first(block: int) -> bool:
    """Whether an all-gather by reads copies its own ``block`` bytes into ``out`` before its
    peers read them (there), rather than while they read them from ``x``."""
    return block >= ALL_GATHER_COPY_FIRST_BYTES


def all_gather_writes(block: int, oversubscribed: bool) -> bool:
    """Whether an all-gather by single-copy copies of ``block`` bytes a rank writes its block into
    its peers' ``out`` (rather than reading theirs): where every rank has a core
    (``oversubscribed``, the same on every rank), from ``ALL_GATHER_WRITES_BYTES`` below
    ``ALL_GATHER_STREAM_BYTES``. The same on every rank, in C and in Python alike."""
    return not oversubscribed and ALL_GATHER_WRITES_BYTES <= block < ALL_GATHER_STREAM_BYTES


def all_gather_streams(block: int) -> bool:
    """Whether an all-gather by reads in C copies its own ``block`` bytes with non-temporal stores."""
    return block >= ALL_GATHER_STREAM_BYTES


def two_shot(nbytes: int, oversubscribed: bool) -> bool:
    """Whether an all-reduce of ``nbytes`` (bytes of ``x``, at most ``ALL_REDUCE_HALVES_BYTES``)
    through the small window's halves takes two shots: where ranks outnumber cores
    (``oversubscribed``, the same on every rank) from ``TWO_SHOT_BYTES``, else from
    ``TWO_SHOT_CORES_BYTES``."""
    return nbytes >= (TWO_SHOT_BYTES if oversubscribed else TWO_SHOT_CORES_BYTES)


def all_reduce_by_halves(nbytes: int, oversubscribed: bool) -> bool:
    """Whether an all-reduce of ``nbytes`` (bytes of ``x``) goes through the small window's halves
    (in one shot, or two where ``two_shot`` says), whatever the reads' size: up to
    ``ALL_REDUCE_HALVES_BYTES``, beyond it where ``all_reduce_halves_crowded`` says."""
    return nbytes <= ALL_REDUCE_HALVES_BYTES or all_reduce_halves_crowded(nbytes, oversubscribed)


def all_reduce_halves_crowded(nbytes: int, oversubscribed: bool) -> bool:
    """Whether an all-reduce of ``nbytes`` (bytes of ``x``) beyond ``ALL_REDUCE_HALVES_BYTES`` goes
    through the small window's halves after all: where ranks outnumber cores (``oversubscribed``,
    the same on every rank), up to ``ALL_REDUCE_HALVES_CROWDED_BYTES`` in one call, beyond it up to
    ``ALL_REDUCE_PIECES_CROWDED_BYTES`` piece by piece (``all_reduce_pieces``), below the reads' size
    (``reads_from``) either way."""
    limit = max(ALL_REDUCE_HALVES_CROWDED_BYTES, ALL_REDUCE_PIECES_CROWDED_BYTES)
    return oversubscribed and nbytes <= limit and nbytes < reads_from(False, True)


def all_reduce_pieces(nbytes: int, oversubscribed: bool) -> int:
    """How many calls through the small window's halves an all-reduce of ``nbytes`` (bytes of
    ``x``) that goes through them (``all_reduce_by_halves``) takes: one up to
    ``ALL_REDUCE_HALVES_CROWDED_BYTES`` (or where every rank has a core), beyond it one per piece of
    at most that size (the engine splits the elements as evenly)."""
    if not (oversubscribed and nbytes > max(ALL_REDUCE_HALVES_BYTES, ALL_REDUCE_HALVES_CROWDED_BYTES)):
        return 1
    return -(-nbytes // ALL_REDUCE_HALVES_CROWDED_BYTES)


def broadcast_by_reads(nbytes: int, oversubscribed: bool) -> bool:
    """Whether a broadcast of ``nbytes`` goes by single-copy reads where they are allowed: too
    large for the halves at once and not through them piece by piece (``broadcast_by_halves``)."""
    return nbytes > BROADCAST_BYTES and not broadcast_by_halves(nbytes, oversubscribed)


def reduce_scatter_by_halves(nbytes: int, oversubscribed: bool) -> bool:
    """Whether a reduce-scatter of ``nbytes`` (bytes of ``x``) beyond ``HALF_BYTES`` goes through
    the small window's halves after all: where ranks outnumber cores (``oversubscribed``, the same
    on every rank), up to ``REDUCE_SCATTER_HALVES_CROWDED_BYTES`` and below the reads' size
    (``reads_from``)."""
    return oversubscribed and nbytes <= REDUCE_SCATTER_HALVES_CROWDED_BYTES and nbytes < reads_from(True, True)


def broadcast_by_halves(nbytes: int, oversubscribed: bool) -> bool:
    """Whether a broadcast of ``nbytes`` too large for the halves at once goes through them piece
    by piece: where ranks outnumber cores (``oversubscribed``, the same on every rank), up to
    ``BROADCAST_HALVES_CROWDED_BYTES``."""
    return oversubscribed and nbytes <= BROADCAST_HALVES_CROWDED_BYTES


def exchange_by_reads(collective: str, nbytes: int, oversubscribed: bool) -> bool:
    """Whether an all-to-all, gather or scatter of ``nbytes`` (an all-to-all's ``x``, a gather's
    or scatter's on the root) that the small window could take goes by single-copy reads where
    they are allowed (beyond the window's limit, ``registry.DIRECT_LIMITS``, every one does)."""
    if collective == "gather":
        return nbytes > GATHER_SLOTS_BYTES and not oversubscribed
    if collective == "scatter":
        return nbytes > SCATTER_SLOTS_BYTES
    return nbytes >= (ALL_TO_ALL_READS_CROWDED if oversubscribed else ALL_TO_ALL_READS_BYTES)


def reduce_reads_from(oversubscribed: bool, size: int) -> int:
    """The smallest reduce taken by reads, in bytes of ``x``, at ``size`` ranks where they outnumber
    cores (``oversubscribed``, the same on every rank) or not (``REDUCE_PIECES_CROWDED_RANKS``)."""
    few, start = REDUCE_PIECES_CROWDED_RANKS
    if oversubscribed and size <= few:
        return start
    return REDUCE_READS_BYTES[oversubscribed]


def folds_in_c(nbytes: int, oversubscribed: bool) -> bool:
    """Whether a reduce or reduce-scatter by reads of ``nbytes`` (bytes of ``x``) runs in C where the
    extension is built: where ranks outnumber cores, below ``FOLDS_IN_C_BYTES``."""
    return oversubscribed and nbytes < FOLDS_IN_C_BYTES


def all_reduce_folds_in_c(nbytes: int, oversubscribed: bool) -> bool:
    """Whether an all-reduce by reads of ``nbytes`` (bytes of ``x``) runs in C where the extension is
    built (``exchange_reads.fold_plan``'s all-reduce): where every rank has a core, at every size the
    reads take. Measured: docs/performance.md, "Thirty-sixth round, the 2-rank all-reduce by reads in
    C"."""
    return not oversubscribed and nbytes > 0


def reduce_by_pieces(nbytes: int, oversubscribed: bool, size: int) -> bool:
    """Whether a reduce of ``nbytes`` (bytes of ``x``) too large for one slot goes through the
    slots a slot's worth at a time (``windowed.PiecewiseReduce``: the other ranks copy each piece
    in and go on, the root folds), not the schedule: where ranks outnumber cores, below the reads'
    size. There the schedule's steps wait on ranks that share a core at every hop. A reduce of
    nothing has no piece: it takes the schedule, which returns at once. Measured:
    docs/performance.md, "Twenty-third round"."""
    return oversubscribed and 0 < nbytes < reduce_reads_from(True, size)


def reads_from(scatter: bool, oversubscribed: bool) -> int:
    """The smallest all-reduce (``scatter``: reduce-scatter) taken by reads, in bytes of ``x``,
    where ranks outnumber cores (``oversubscribed``, the same on every rank) or not."""
    if scatter or oversubscribed:
        return READS_FROM_BYTES
    return min(ALL_REDUCE_READS_FROM_BYTES, READS_FROM_BYTES)
