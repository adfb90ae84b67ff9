"""Single-copy exchanges on one host: all-to-all, all-gather, gather and scatter by reads and
writes of peers' memory (process_vm_readv/writev, ``direct.PeerMemory``).

Through shared memory such a call copies each byte twice (into a window or a message cell,
then out), and a schedule of messages adds a round per peer. Here each byte crosses once.
Every rank publishes where its ``x`` and ``out`` lie (``ADDR``, ``RESULT``, the byte count it
expects beside them in ``LEN``, then ``POSTED``); then
- all-to-all: rank r reads block r of every peer's ``x`` into block q of its ``out``;
- all-gather: every rank reads every peer's ``x`` into block q of its ``out`` while it copies
  its own (one read per peer, nothing staged in a window); in C from
  ``direct_routes.ALL_GATHER_STREAM_BYTES`` with non-temporal stores, in Python from
  ``direct_routes.ALL_GATHER_COPY_FIRST_BYTES`` first, peers reading it from its ``out`` (as
  MPICH's ring does); where every rank has a core, sizes in
  ``direct_routes.all_gather_writes`` go the other way: every rank writes its block into block
  r of every peer's ``out`` and reads none;
- gather: the root reads the head of every peer's block, and each peer writes the rest of
  its block into the root's ``out``;
- scatter: each rank reads the head of its block out of the root's ``x``, and the root writes
  the rest into each rank's ``out``.
The root's part of each block (``SHARE``, posted by the root with its addresses) keeps every
core copying: where the ranks do not outnumber the cores, ``ROOT_SHARE`` of it when the root
also copies its own block, more when it does not (in place), so that the root's copies and
its peers' end together (one side reading or writing everything left the other core idle).
Where ranks outnumber the cores, a gather's root reads 1/p of each block and a scatter's root
writes none, so that no rank waits on a root that the scheduler has put aside.
A rank posts ``READ`` when its copies are done and returns once every rank it exchanged with has
posted ``READ`` too, so that the caller may overwrite ``x`` at once and find ``out`` complete.
Peers are taken starting after my own rank, so that no rank is read by all at once.

In place, an all-to-all posts ``SWAPS`` in its ``SHARE`` word. Two ranks in place swap their pair
of blocks (my block q, q's block r) and only one of them copies each byte (``swap_part``): a
piece of q's block is read into a buffer the plan keeps (its ``inbox``: a new buffer on every
call took its page faults on every call), a piece of mine written into q's, then the piece read
copied into mine; so a rank copies 1.5 blocks per peer at 4 ranks where reading every block into
the inbox and copying it back after every peer's ``READ`` copied 2 (docs/performance.md,
"Thirty-fourth round, the in-place all-to-all"). From a peer not in place it reads into the inbox
and copies the block into ``x`` once that peer has posted ``READ``; its own block stays where it
is. Overlaps other than exactly in place read from a copy of ``x``.

Where it is built, a call runs in C (``_reads_c.ReadsPlan``: the same flags, shares and copies)
as far as it can without sleeping; this plan finishes what it could not (docs/performance.md,
"Fifteenth round"). Likewise, where ranks outnumber cores, the reduces and reduce-scatters by reads
(``direct.reduce_by_reads``, ``direct.reduce_scatter_by_reads``) through ``fold_plan``
(``_reads_c.FoldPlan``; docs/performance.md, "Thirty-fourth round").
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np

from ..algorithms import direct_routes
from ..buffers import address_of, copy_array
from ..ops import ReduceOp
from ..transports.progress import LATE_PEER_YIELD_SECONDS, compiled_yield_seconds
from . import small_native
from .direct import ADDR, CPU, LEN, POSTED, READ, RED, RESULT, SHARE, FoldPlan, PeerMemory, Window, count_mismatch

try:
    from . import _reads_c  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time: the calls run in Python
    _reads_c = None

ALL_TO_ALL, GATHER, SCATTER, ALL_GATHER = "all_to_all", "gather", "scatter", "all_gather"
KINDS = (ALL_TO_ALL, GATHER, SCATTER, ALL_GATHER)
"""The kinds in the order of ``_reads_c``'s KIND_ numbers."""
ROOTED = (GATHER, SCATTER)
WHOLE_X = (GATHER, ALL_GATHER)
"""The kinds whose ``x`` is one whole block (``_reads_c``'s ``whole_x``)."""

ROOT_SHARE = (0.2, 0.5)
"""At 2 ranks, the share of every peer's block that a gather's or scatter's root copies itself
(reads or writes) when it also copies its own block, and when it does not (in place); at p
ranks, 2/p of these. The peer copies the rest at the same time. Measured (0, 0.1, 0.2, 0.3,
0.5 out of place; 0.3 to 0.6 in place): docs/performance.md, fourteenth round."""
PAGE_BYTES = 4096
CROWDED_ALL_GATHER_YIELD_SECONDS = LATE_PEER_YIELD_SECONDS
"""Where ranks outnumber cores, how long an all-gather's C plan yields to a late peer before it
hands the call back to the Python plan's sleeping waits (``YIELD_SECONDS`` for the other kinds;
``progress.compiled_yield_seconds``)."""

SWAPS = 1
"""An all-to-all's ``SHARE`` word (0 otherwise): this rank is exactly in place, so that a peer in
place too swaps blocks with it (``swap_part``)."""
MAX_SWAP_RANKS = 64
"""The most ranks whose in-place all-to-all runs in C (its ``staged`` bits); more run in Python."""

FOLD_READ_BYTES = 1 << 20
"""The bytes of one read of a peer's part in a fold plan's step (each folded before the next is
read): the Python plan's whole piece (``direct_routes.DIRECT_STEP_BYTES``)."""


EVERY_RANK = -2
"""The C fold plan's root of an all-reduce: every rank reads every peer's folded pieces."""

FOLD_YIELD_SECONDS = 2e-3
"""Where ranks outnumber cores (where ``fold_plan`` makes the plans of reduces and reduce-scatters;
an all-reduce's, where every rank has a core, waits as long), how long a fold plan's wait yields
to a late peer before handing the call back to the Python plan's sleeping waits. With
``YIELD_SECONDS`` (0.2 ms) most calls went back before the first step (a peer not yet posted) and
ran as slowly as in Python; with ``LATE_PEER_YIELD_SECONDS`` (20 ms) the yielding ranks took the
folding ranks' turns in some runs (2 MiB at 1.1-2.4 times the Python plan's time in 6 of 12
pairs); 2 ms kept the C plan's gain without that (docs/performance.md, "Thirty-fourth round")."""


def swap_part(me: int, q: int, ranks: int, block: int) -> tuple[int, int]:
    """(offset, bytes) of the pair of blocks (my block q, q's block me, of ``block`` bytes) that window
    rank ``me`` swaps with window rank ``q`` of ``ranks`` in an all-to-all where both are in place:
    q nearer than half the ranks ahead of me, all of it; exactly half, the first half (cut at 64
    bytes) where I come first, the rest where not; farther, none (q swaps it). So every pair is
    swapped once, and every rank swaps (ranks - 1) / 2 blocks' worth (``_reads_c.c``'s swap_part)."""
    d = (q - me) % ranks
    half = (block // 2) & ~63
    if 2 * d < ranks:
        return 0, block
    if 2 * d == ranks:
        return (0, half) if me < q else (half, block - half)
    return 0, 0


def fold_plan(window: Window, memory: PeerMemory, dtype: np.dtype, count: int, op: ReduceOp, root: int | None,
              chunk: int, *, every: bool = False) -> FoldPlan | None:
    """The C plan of a reduce (to window rank ``root``) or, ``root`` None, a reduce-scatter by reads
    of ``count`` elements of ``dtype`` in steps of ``chunk`` elements (``direct.Reads.step``), for
    ``direct.reduce_by_reads`` / ``direct.reduce_scatter_by_reads``; ``every``: an all-reduce
    (``direct.all_reduce_by_reads``: a reduce whose every rank is the root, ``root`` ignored). None
    where those run in Python: the extension not built, a window whose ``in_c`` is false, peers not
    reached by process id, a dtype and operator C does not fold (``small_native.fold_code``), fewer
    than two ranks, or a size ``direct_routes.folds_in_c`` (an all-reduce:
    ``direct_routes.all_reduce_folds_in_c``) leaves to Python."""
    op_code = small_native.fold_code(dtype, op)
    pids: Any = getattr(memory, "pids", None)
    in_c = direct_routes.all_reduce_folds_in_c if every else direct_routes.folds_in_c
    if (_reads_c is None or not getattr(window, "in_c", False) or pids is None or op_code == small_native.NO_FOLD
            or len(window.ranks) < 2 or count < 1 or not in_c(count * dtype.itemsize, window.oversubscribed)):
        return None
    shm: Any = window  # a shared-memory window (ShmWindow) where ``in_c`` is true
    ranks = shm.ranks
    flags = [shm.flag_area(q) for q in ranks]
    bells = shm.transport.doorbells()
    sub = max(dtype.itemsize, FOLD_READ_BYTES - FOLD_READ_BYTES % dtype.itemsize)
    plan: FoldPlan = _reads_c.FoldPlan(
        me=ranks.index(shm.rank), root=EVERY_RANK if every else -1 if root is None else ranks.index(root),
        flags=[address_of(f) for f in flags], doorbells=[ctypes.addressof(d) for d, _ in bells],
        sleepers=[ctypes.addressof(w) for _, w in bells], pids=[pids.get(q, 0) for q in ranks],
        slots=(POSTED, READ, ADDR, RESULT, LEN, RED), count=count, itemsize=dtype.itemsize,
        dtype=small_native.dtype_code(dtype), op=op_code, chunk=chunk, sub=sub,
        spin_ns=int(shm.spin_seconds * 1e9), yield_ns=int(FOLD_YIELD_SECONDS * 1e9),
        cpu_slot=CPU, keep=(flags, bells))
    return plan


class ExchangeByReads:
    """Exchanges of one kind and shape by copies between peers' memory, counting with the
    windows' ``memory_serial``. ``count``: the elements of a rank's ``x`` (all-to-all, all-gather,
    gather) or of the root's ``x`` (scatter); ``root``: the gather's or scatter's root."""

    def __init__(self, kind: str, window: Window, memory: PeerMemory, itemsize: int, count: int,
                 root: int = 0) -> None:
        self.kind, self.window, self.memory, self.root = kind, window, memory, root
        ranks = window.ranks
        p = len(ranks)
        self.me = ranks.index(window.rank)
        self.index = {q: i for i, q in enumerate(ranks)}
        self.expected = count * itemsize  # the bytes of every rank's x, or of the root's (scatter)
        self.k = count if kind in WHOLE_X else count // p  # elements per block
        self.itemsize = itemsize
        self.block = self.k * itemsize  # bytes per block
        self.spread = not window.oversubscribed  # whether the root's share keeps every core copying
        others = ranks[self.me + 1 :] + ranks[: self.me]
        self.partners = others if kind not in ROOTED or window.rank == root else [root]
        in_c = self._in_c()
        self.stream = in_c and kind == ALL_GATHER and direct_routes.all_gather_streams(self.block)
        self.writes = kind == ALL_GATHER and direct_routes.all_gather_writes(self.block, window.oversubscribed)
        """Whether every rank writes its block into its peers' ``out`` (in C and in Python alike)."""
        self.copy_first = (kind == ALL_GATHER and direct_routes.all_gather_copies_first(self.block)
                           and not self.stream and not self.writes)
        self.inbox: np.ndarray | None = None  # where an all-to-all in place reads peers' blocks, kept
        self.staged: set[int] | None = set()
        """In place, the peers whose block the last call read into the inbox where it ended in Python;
        None where it ended in C (the C plan's ``staged`` bits: ``staged_peers``)."""
        self.native = self._native() if in_c else None

    def __call__(self, x: np.ndarray | None, out: np.ndarray | None, serial: int, deadline: float,
                 on_timeout: Callable[[list[int]], BaseException]) -> int:
        """Run the call on flat ``x`` and ``out`` (None where a rank has none; ``out`` may
        overlap ``x``: see the module docstring). Returns the new serial."""
        native = self.native
        if native is not None:  # the whole call in C, or as far as it got
            state = native(x, out, self.inbox, serial)
            if state > 0:
                self.staged = None
                return int(state)
            if state < 0:
                src, into, _, _, share = self._roles(x, out)
                self.staged = self._staged_bits(int(native.staged))
                return self._finish(-state - 1, src, into, out, serial + 1, share, deadline, on_timeout)
        window = self.window
        src, into, mine, dst, share = self._roles(x, out)
        if self.copy_first and mine is not None and dst is not None:  # peers read my block in my out
            copy_array(dst, mine)
            src, mine, dst = dst, None, None
        s = serial + 1
        self.staged = set()
        window.post(SHARE, SWAPS if into is not out else share, wake=False)
        window.post(ADDR, 0 if src is None else address_of(src), wake=False)
        window.post(RESULT, 0 if out is None else address_of(out), wake=False)
        window.post(LEN, self.expected, wake=False)
        window.post(POSTED, s)
        if mine is not None and dst is not None:  # my own block (in place: already there)
            copy_array(dst, mine)
        return self._finish(0, src, into, out, s, share, deadline, on_timeout)

    def _roles(self, x: np.ndarray | None, out: np.ndarray | None) -> tuple[
            np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None, int]:
        """What peers copy from (``x``, or a copy of it where ``out`` overlaps it otherwise than
        exactly in place), where my reads land (``out``, or in place my ``inbox``), my own block
        and where it goes (both None where I need not copy it), and my share as a root."""
        k, me = self.k, self.me
        src, into = x, out
        if x is not None and out is not None and not self._apart(x, out):
            if self._in_place(x, out):
                into = self._inbox(x)
            else:
                src = x.copy()
        mine = None if src is None else (src if self.kind in WHOLE_X else src[me * k : (me + 1) * k])
        dst = None if out is None else (out if self.kind == SCATTER else out[me * k : (me + 1) * k])
        copies_own = mine is not None and dst is not None and address_of(dst) != address_of(mine)
        share = self._share(copies_own) if self.window.rank == self.root else 0
        return (src, into, mine, dst, share) if copies_own else (src, into, None, None, share)

    def _finish(self, start: int, src: np.ndarray | None, into: np.ndarray | None, out: np.ndarray | None, s: int,
                share: int, deadline: float, on_timeout: Callable[[list[int]], BaseException]) -> int:
        """Call ``s`` from the point where ``partners[:start]`` are done (``start`` beyond them:
        READ posted too): my copies with the rest, READ, every partner's READ, then (in place)
        what I read into my ``out``."""
        window, partners = self.window, self.partners
        staged = self.staged
        assert staged is not None
        if start <= len(partners):
            try:
                for q in partners[start:]:
                    window.wait(q, POSTED, s, deadline, on_timeout)
                    if window.flag(q, LEN) != self.expected:
                        raise count_mismatch(q, window.flag(q, LEN), self.expected)
                    if into is not out and window.flag(q, SHARE) == SWAPS:
                        assert out is not None and into is not None
                        self._swap(q, out, into)
                        continue
                    if into is not out:
                        staged.add(q)
                    self._copy(q, src, into, share)
            finally:
                window.post(READ, s)  # (also after a mismatch: no rank waits on me for nothing)
        for q in partners:
            window.wait(q, READ, s, deadline, on_timeout)
        if into is not out:  # every peer has read my x: the blocks I read go in
            assert into is not None and out is not None
            k = self.k
            for q in partners:
                if q not in staged:
                    continue
                i = self.index[q]
                copy_array(out[i * k : (i + 1) * k], into[i * k : (i + 1) * k])
        return s

    def staged_peers(self) -> set[int]:
        """The peers whose block the last call read into the inbox to copy in after their READ (in
        place, from peers not in place), wherever the call ended."""
        if self.staged is not None:
            return set(self.staged)
        native: Any = self.native  # staged is None only after a call that ended in C
        return self._staged_bits(int(native.staged))

    def _staged_bits(self, bits: int) -> set[int]:
        """The peers the C plan's ``staged`` bits name (bit i: the peer of window index i)."""
        return {q for q in self.partners if bits >> self.index[q] & 1}

    def _swap(self, q: int, out: np.ndarray, inbox: np.ndarray) -> None:
        """My part of the swap with rank q, both of us in place (``swap_part``): that part of q's
        block me into my ``inbox``, of my block q into q's, then the inbox's into mine."""
        at, n = swap_part(self.me, self.index[q], len(self.window.ranks), self.block)
        if not n:
            return
        i, block = self.index[q], self.block
        mine = out.reshape(-1).view(np.uint8)[i * block + at : i * block + at + n]
        temp = inbox.reshape(-1).view(np.uint8)[i * block + at : i * block + at + n]
        window = self.window
        self.memory.read(q, window.flag(q, ADDR) + self.me * block + at, temp)
        self.memory.write(q, window.flag(q, RESULT) + self.me * block + at, mine)
        copy_array(mine, temp)

    def _share(self, copies_own: bool) -> int:
        """The bytes of every peer's block that I, the root, copy myself this call (see the
        module docstring), a whole number of pages (none in an all-to-all or all-gather)."""
        p = len(self.window.ranks)
        if self.kind not in ROOTED:
            return 0
        if not self.spread:
            return self.block // p if self.kind == GATHER else 0
        share = int(self.block * ROOT_SHARE[not copies_own] * 2 / p)
        return min(self.block, share - share % PAGE_BYTES)

    def _in_c(self) -> bool:
        """Whether calls run in C (``_native``): not where it is not built, nor on a window whose
        ``in_c`` is false (turned off, or not a shared-memory window), nor where peers' memory is
        not reached by process id."""
        return (_reads_c is not None and getattr(self.window, "in_c", False)
                and getattr(self.memory, "pids", None) is not None and self.block > 0)

    def _native(self) -> Any:
        """The C plan of this exchange (``_reads_c.ReadsPlan``), where ``_in_c``."""
        window: Any = self.window  # a shared-memory window (ShmWindow) where ``in_c`` is true
        pids: Any = getattr(self.memory, "pids")
        ranks = window.ranks
        flags = [window.flag_area(q) for q in ranks]
        bells = window.transport.doorbells()
        return _reads_c.ReadsPlan(
            kind=KINDS.index(self.kind), me=self.me, root=self.index[self.root],
            flags=[address_of(f) for f in flags], doorbells=[ctypes.addressof(d) for d, _ in bells],
            sleepers=[ctypes.addressof(w) for _, w in bells], pids=[pids.get(q, 0) for q in ranks],
            partners=[self.index[q] for q in self.partners], slots=(POSTED, READ, ADDR, RESULT, LEN, SHARE),
            expected=self.expected, block=self.block, share_own=self._share(True), share_in_place=self._share(False),
            spin_ns=int(window.spin_seconds * 1e9), yield_ns=int(self._yield_seconds() * 1e9),
            cpu_slot=CPU, copy_first=self.copy_first, stream=self.stream,
            write_piece=direct_routes.ALL_GATHER_WRITE_PIECE_BYTES if self.writes else 0, keep=(flags, bells))

    def _yield_seconds(self) -> float:
        """How long the C plan yields to a late peer before handing the call back: only where
        ranks outnumber cores, longer for an all-gather (``CROWDED_ALL_GATHER_YIELD_SECONDS``)."""
        return compiled_yield_seconds(self.window.oversubscribed, waits_for_late_peers=self.kind == ALL_GATHER)

    def _in_place(self, x: np.ndarray, out: np.ndarray) -> bool:
        """Whether this is an all-to-all exactly in place (``out`` is ``x``'s memory)."""
        return self.kind == ALL_TO_ALL and address_of(x) == address_of(out) and x.nbytes == out.nbytes

    def _inbox(self, x: np.ndarray) -> np.ndarray:
        """The buffer an all-to-all in place reads peers' blocks into, kept for the next calls."""
        inbox = self.inbox
        if inbox is None or inbox.dtype != x.dtype:
            inbox = self.inbox = np.empty(x.shape, x.dtype)
        return inbox

    def _apart(self, x: np.ndarray, out: np.ndarray) -> bool:
        """Whether my ``x`` and ``out`` may be used as they are while peers copy: apart, or
        (all-gather, gather, scatter) the one block each shares, which only I copy, onto itself."""
        if not np.shares_memory(x, out):
            return True
        k, me = self.k, self.me
        if self.kind in WHOLE_X:
            return address_of(x) == address_of(out[me * k : (me + 1) * k]) and x.size == k
        return self.kind == SCATTER and address_of(out) == address_of(x[me * k : (me + 1) * k]) and out.size == k

    def _copy(self, q: int, x: np.ndarray | None, out: np.ndarray | None, share: int) -> None:
        """My part of the exchange with rank q, which has posted where its buffers lie (and, as
        a root, its ``SHARE``; ``share``: mine, as a root)."""
        window, block = self.window, self.block
        i, theirs = self.index[q], window.flag(q, ADDR)
        xb = None if x is None else x.reshape(-1).view(np.uint8)
        ob = None if out is None else out.reshape(-1).view(np.uint8)
        if self.kind == ALL_TO_ALL:
            assert ob is not None
            self.memory.read(q, theirs + self.me * block, ob[i * block : (i + 1) * block])
        elif self.kind == ALL_GATHER and self.writes:  # my block into block me of q's out
            assert xb is not None
            self.memory.write(q, window.flag(q, RESULT) + self.me * block, xb)
        elif self.kind == ALL_GATHER:
            assert ob is not None
            self.memory.read(q, theirs, ob[i * block : (i + 1) * block])
        elif self.kind == GATHER and q != self.root:  # I am the root: the head of q's block
            assert ob is not None
            if share:
                self.memory.read(q, theirs, ob[i * block : i * block + share])
        elif self.kind == GATHER:  # q is the root: the rest of my block into its out
            assert xb is not None
            head = window.flag(q, SHARE)
            if head < block:
                self.memory.write(q, window.flag(q, RESULT) + self.me * block + head, xb[head:])
        elif q == self.root:  # scatter: the head of my block out of the root's x
            assert ob is not None
            head = block - window.flag(q, SHARE)
            if head > 0:
                self.memory.read(q, theirs + self.me * block, ob[:head])
        elif share:  # scatter, I am the root: the tail of q's block into its out
            assert xb is not None
            head = block - share
            self.memory.write(q, window.flag(q, RESULT) + head, xb[i * block + head : (i + 1) * block])
