"""Direct (one-copy) all-reduce over shared windows: the two-shot scheme GPU libraries
use over NVLink, here over /dev/shm.

Small vectors take ``engines/small.py`` instead (one flag per call through a small
double-buffered window). Larger ones take the two-shot scheme below.

On one host, copies rather than messages are the cost. Every rank exposes its input in
its window; rank r reduces block r straight out of every peer's window (reduce-scatter
by loads), then copies every other block straight out of its owner's window (all-gather
by loads). Nothing is framed, queued or sent: ranks only publish progress flags.

Per rank and per call: copy in (p-1)/p·n (skipped when the input already lives in a
window, from ``comm.alloc``), reduce n/p from p sources, copy the reduced block to the
output, copy in (p-1)/p·n of the others' blocks.

The vector is processed in chunks (each rank's part of a chunk is cache-sized), so that
one rank copies chunk c+1 in while another still reduces chunk c. Flags, all monotonic
and written only by their owner (slot numbers below):

    IN   chunk s of my input is in my window (peers may read it)
    RED  chunk s of my block is reduced in my window (peers may copy it)
    GOT  I copied chunk s of every block (peers may overwrite their windows; a rank whose
         input lives in a registered window waits for everyone's last GOT before it
         returns, since its caller may overwrite that buffer at once)
    SEG  which window holds my input this call (0: the scratch window)
    OFF  byte offset of my input in that window
    SMALL  the number of my last small call (engines/small.py) whose input is in
           the small window

The single-copy algorithms (the broadcast here, ``all_reduce_by_reads``, and the exchanges of
``exchange_reads``, all-gather among them) read peers' memory with the kernel's help instead
(``PeerMemory``: process_vm_readv), through flags of their own:

    ADDR    the address of my contribution this call, in my address space
    POSTED  the number of my last call whose ADDR is set (peers may read from it)
    READ    the number of my last call whose reads are done (I may return once all are)
    PROBE, VERDICT  the one-time check that the kernel lets us read each other at all
    RESULT  the address of my output this call (``all_reduce_by_reads``)
    PUSHED  the number of my last broadcast as root whose writes into peers are done
    SHARE   the bytes of every block a gather's or scatter's root copies itself this call
            (``exchange_reads``; the other ranks copy the rest of theirs)
    REDUCED the number of my last two-shot small all-reduce whose block ``me`` of my half
            holds the reduced block (``small.TwoShotAllReducePlan``; peers may copy it)

Every call also says how many bytes this rank brings, where its peers read them with the
flag they already wait on (``LEN`` beside SEG/OFF or ADDR; in the small window one word
per half, ``HALF_LEN``, and one per broadcast slot, ``SLOT_LEN``, written before the
serial is posted and not rewritten before every peer is done with that half or slot). A
rank that finds a peer's count differing from its own raises ``MessageMismatchError``
instead of reading past or short of what the peer wrote: ranks that disagree on a count
never return truncated, padded or mixed data.

Large all-reduces of ordinary arrays take ``all_reduce_by_reads``: the two-shot scheme with
both shots done by such reads, so that nothing is staged through a window at all (and
large reduce-scatters its first shot, ``reduce_scatter_by_reads``; large reduces that shot,
then the root reads every reduced block, ``reduce_by_reads``). Those two take a C plan
(``FoldPlan``) where the plans have one: it runs the call up to the first late peer, and they go on
from where it stopped.

Block r is reduced once, by rank r (its own contribution first, then the others in rank
order), so every rank gets the same bits and the result does not depend on timing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from ..buffers import address_of, copy_array
from ..errors import MessageMismatchError
from ..ops import ReduceOp, reduce_into, reduce_pair
from ..algorithms.schedule import partition

IN, RED, GOT, SEG, OFF, SMALL, ADDR, POSTED, READ, PROBE, VERDICT, RESULT, PUSHED, BROADCAST, LEN = range(15)
HALF_LEN = 15  # and 16: the bytes in half 0 and half 1 of the small window (engines/small.py)
SLOT_LEN = 17  # to 17 + small.SLOT_LENS - 1 (48): the bytes of pipelined broadcast or reduce b at 17 + b % SLOT_LENS
CPU = 49  # 1 + the CPU this rank ran on at its last small post (engines/_small_c.c), 0 where unknown
EXITED = 50  # 2s while this rank waits out barrier s beyond its spin (it may sleep), 2s + 1 once it left (small.py)
SHARE = 51  # the bytes of every block that a gather's or scatter's root copies itself this call (exchange_reads.py)
REDUCED = 52  # the number of my last two-shot small all-reduce whose block is reduced in my half (small.py)

BARRIER_LEN = (1 << 64) - 1
"""What a barrier writes where a small call writes its byte count (it brings no data)."""


def count_mismatch(peer: int, theirs: int, mine: int) -> MessageMismatchError:
    """The error for a peer that brings ``theirs`` bytes to a call where this rank brings
    ``mine``: the ranks passed different counts (or dtypes of another size), or one of
    them is in a barrier (``BARRIER_LEN``)."""
    def said(nbytes: int) -> str:
        return "is in a barrier" if nbytes == BARRIER_LEN else f"passed {nbytes} bytes"

    return MessageMismatchError(
        f"rank {peer} {said(theirs)} where this rank {said(mine)}: the ranks disagree on the call", peer=peer)


class Window(Protocol):
    """What the direct algorithms need of a shared window (see transports/shm_window.py)."""

    rank: int
    ranks: list[int]
    id: int
    nbytes: int
    oversubscribed: bool  # the same on every rank

    def data(self, rank: int) -> np.ndarray: ...
    def slices(self, lo: int, hi: int, dtype: np.dtype) -> list[np.ndarray]: ...
    def flag(self, rank: int, slot: int) -> int: ...
    def flags(self, rank: int) -> Sequence[int]: ...  # live: flags(rank)[slot] == flag(rank, slot)
    def post(self, slot: int, value: int, wake: bool = True) -> None: ...
    def wait(
        self, rank: int, slot: int, value: int, deadline: float, on_timeout: Callable[[list[int]], BaseException]
    ) -> None: ...


class PeerMemory(Protocol):
    """Reading and writing another rank's memory directly (see transports/cma.py)."""

    def read(self, rank: int, address: int, into: np.ndarray) -> None: ...
    def write(self, rank: int, address: int, data: np.ndarray) -> None: ...
    def probe(self, rank: int, address: int, expected: bytes) -> bool: ...


def locate(x: np.ndarray, windows: Sequence[Window]) -> tuple[int, int]:
    """(window id, byte offset) of ``x`` inside one of this rank's registered windows, or
    (0, 0) when it lives elsewhere (it is then copied into the scratch window)."""
    start = address_of(x)
    for window in windows[1:]:
        base = window.data(window.rank)
        lo = address_of(base)
        if lo <= start and start + x.nbytes <= lo + base.nbytes:
            return window.id, start - lo
    return 0, 0


class _Call:
    """What one direct call shares between its steps: where every rank's input lives."""

    def __init__(
        self,
        scratch: Window,
        windows: Sequence[Window],
        x: np.ndarray,
        serial: int,
        deadline: float,
        on_timeout: Callable[[list[int]], BaseException],
    ) -> None:
        self.scratch, self.windows, self.x = scratch, windows, x
        self.deadline, self.on_timeout = deadline, on_timeout
        self.me, self.ranks = scratch.rank, scratch.ranks
        self.others = [q for q in self.ranks if q != self.me]
        seg, off = locate(x, windows)
        self.in_window = seg != 0
        # Everyone has finished the previous call: its windows may be overwritten now.
        for q in self.others:
            self.wait(q, GOT, serial)
        scratch.post(SEG, seg, wake=False)
        scratch.post(OFF, off, wake=False)
        scratch.post(LEN, x.nbytes, wake=False)
        self.mine = x if self.in_window else scratch.data(self.me)[: x.nbytes].view(x.dtype)
        self._peers: dict[int, np.ndarray] = {}
        self.last = serial  # the final serial of the current walk (see steps)

    def wait(self, q: int, slot: int, value: int) -> None:
        self.scratch.wait(q, slot, value, self.deadline, self.on_timeout)

    def peer(self, q: int) -> np.ndarray:
        """Rank q's input this call (read its SEG/OFF only after waiting on one of its flags)."""
        array = self._peers.get(q)
        if array is None:
            if self.scratch.flag(q, LEN) != self.x.nbytes:
                raise count_mismatch(q, self.scratch.flag(q, LEN), self.x.nbytes)
            window = self.windows[self.scratch.flag(q, SEG)]
            start = self.scratch.flag(q, OFF)
            array = window.data(q)[start : start + self.x.nbytes].view(self.x.dtype)
            self._peers[q] = array
        return array

    def copy_in(self, pieces: Sequence[tuple[int, int]]) -> None:
        """Copy the parts of my input that peers will read into my window (nothing when
        the input lives in a registered window already)."""
        if not self.in_window:
            for q in self.others:
                lo, n = pieces[q]
                if n:
                    copy_array(self.mine[lo : lo + n], self.x[lo : lo + n])

    def reduce_block(self, op: ReduceOp, lo: int, n: int, s: int, dst: np.ndarray) -> None:
        """``dst = my x[lo:lo+n] op peers' x[lo:lo+n] ...``: my own contribution first, then
        the others in rank order, each once its chunk ``s`` is in (a fixed order per block,
        so a rerun gives the same bits). ``dst`` may be my input itself."""
        pending = list(self.others)
        own = self.x[lo : lo + n]
        if address_of(dst) != address_of(own):
            first = pending.pop(0)
            self.wait(first, IN, s)
            reduce_pair(op, self.x[lo : lo + n], self.peer(first)[lo : lo + n], out=dst)
        for q in pending:
            self.wait(q, IN, s)
            reduce_into(op, dst, self.peer(q)[lo : lo + n])

    def steps(self, chunk: int, serial: int) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
        """Walk the vector in steps of ``chunk`` elements per block: for each, copy my
        input's piece in, publish IN, and yield (step number c, serial s, every block's
        piece). ``self.last`` is the final serial once the walk is done."""
        blocks = partition(self.x.size, len(self.ranks))
        count = max((length + chunk - 1) // chunk for _, length in blocks)
        self.last = serial + count
        for c in range(count):
            pieces = _pieces(blocks, c, chunk)
            self.copy_in(pieces)
            self.scratch.post(IN, serial + c + 1)
            yield c, serial + c + 1, pieces

    def finish(self, last: int) -> int:
        if self.in_window:
            # Peers read my buffer itself: the caller may write into it as soon as we
            # return, so return only once every peer has copied what it needs from it.
            for q in self.others:
                self.wait(q, GOT, last)
        return last


def _pieces(blocks: Sequence[tuple[int, int]], step: int, chunk: int) -> list[tuple[int, int]]:
    """The part of every block that step ``step`` handles (empty once a block is done)."""
    return [(o + step * chunk, max(0, min(chunk, n - step * chunk))) for o, n in blocks]


def all_reduce(
    scratch: Window,
    windows: Sequence[Window],
    x: np.ndarray,
    op: ReduceOp,
    chunk: int,
    serial: int,
    deadline: float,
    on_timeout: Callable[[list[int]], BaseException],
    out: np.ndarray | None = None,
) -> int:
    """Reduce ``x`` across the ranks sharing ``scratch``, in place, or into ``out`` where given
    (``x`` then untouched: the peers read my copy of it in the scratch window, so the result goes
    straight into ``out``, with no copy of ``x`` into it first); return the new serial.

    ``windows[i]`` is the window with id i (0: ``scratch``, others registered buffers);
    ``serial`` is the last chunk number every rank finished (the same on all ranks);
    ``chunk`` is how many elements of each block one step handles. ``out`` needs ``x`` outside
    the registered windows (where peers read ``x`` itself, my block is folded into it).
    """
    call = _Call(scratch, windows, x, serial, deadline, on_timeout)
    me, others, mine, in_window, wait, peer = call.me, call.others, call.mine, call.in_window, call.wait, call.peer
    if out is not None and in_window:
        raise ValueError("all_reduce into out needs x outside the registered windows")
    dst = x if out is None else out
    for _, s, pieces in call.steps(chunk, serial):
        lo, n = pieces[me]
        if n:  # only I reduce block `me`
            call.reduce_block(op, lo, n, s, mine[lo : lo + n])
        scratch.post(RED, s)
        for q in others:
            qlo, qn = pieces[q]
            if qn:
                wait(q, RED, s)
                copy_array(dst[qlo : qlo + qn], peer(q)[qlo : qlo + qn])
        if n and not in_window:
            copy_array(dst[lo : lo + n], mine[lo : lo + n])
        scratch.post(GOT, s)
    return call.finish(call.last)


def reduce_scatter(
    scratch: Window,
    windows: Sequence[Window],
    x: np.ndarray,
    out: np.ndarray,
    op: ReduceOp,
    chunk: int,
    serial: int,
    deadline: float,
    on_timeout: Callable[[list[int]], BaseException],
) -> int:
    """Rank r reduces block r of every rank's ``x`` straight out of their windows into
    ``out`` (the first half of the two-shot all-reduce: no all-gather, no extra copy of the
    result). ``out`` may be a view of ``x``'s own block. Returns the new serial."""
    call = _Call(scratch, windows, x, serial, deadline, on_timeout)
    for c, s, pieces in call.steps(chunk, serial):
        lo, n = pieces[call.me]
        if n:
            call.reduce_block(op, lo, n, s, out[c * chunk : c * chunk + n])
        scratch.post(GOT, s)  # done reading the peers' chunk s
    return call.finish(call.last)


def probe_peer_memory(
    window: Window,
    memory: PeerMemory,
    probe: np.ndarray,
    serial: int,
    deadline: float,
    on_timeout: Callable[[list[int]], BaseException],
) -> tuple[bool, int]:
    """Collectively find out whether every rank can read every other's memory: each
    publishes the address and value of ``probe`` (8 bytes it keeps alive), reads every
    peer's, and the ranks agree on the verdict. Returns (all could, the new serial); every
    rank gets the same answer."""
    s = serial + 1
    me = window.rank
    window.post(ADDR, address_of(probe), wake=False)
    window.post(PROBE, int(probe.view(np.uint64)[0]), wake=False)
    window.post(POSTED, s)
    ok = True
    for q in window.ranks:
        if q != me:
            window.wait(q, POSTED, s, deadline, on_timeout)
            expected = window.flag(q, PROBE).to_bytes(8, sys.byteorder)
            ok = memory.probe(q, window.flag(q, ADDR), expected) and ok
    window.post(READ, s)
    return agree(window, ok, s, deadline, on_timeout)


def agree(
    window: Window, yes: bool, serial: int, deadline: float, on_timeout: Callable[[list[int]], BaseException]
) -> tuple[bool, int]:
    """Whether every rank said ``yes`` (one flag each way); returns (answer, new serial).

    A rank reads each peer's VERDICT after it is posted, but the peer may be done with
    this agreement and post its next one meanwhile (two in a row: the probe, then a
    call's choice). So a rank first waits until every peer has posted READ for the
    previous step (every step here ends by posting it), which it does after reading every
    VERDICT of it.
    """
    s = serial + 1
    others = [q for q in window.ranks if q != window.rank]
    for q in others:
        window.wait(q, READ, serial, deadline, on_timeout)
    window.post(VERDICT, 2 * s + int(yes))
    for q in others:
        window.wait(q, VERDICT, 2 * s, deadline, on_timeout)
        yes = yes and window.flag(q, VERDICT) == 2 * s + 1
    window.post(READ, s)
    return yes, s


def broadcast(
    window: Window,
    memory: PeerMemory,
    x: np.ndarray,
    root: int,
    serial: int,
    deadline: float,
    on_timeout: Callable[[list[int]], BaseException],
    root_writes: bool = True,
) -> int:
    """Single-copy broadcast of ``x`` (bytes). With ``root_writes``, the root's core
    helps: ``x`` is split in p parts, the root writes part i straight into the i-th
    rank's ``x`` while every other rank reads the remaining parts straight out of the
    root's, so each rank copies (p-1)/p of the bytes. Without (ranks outnumber cores,
    and a root waiting for a descheduled peer would stall the rest), every other rank
    reads all of it.

    The root returns once all have read; the others once the root has written their part.
    Every rank posts ADDR, POSTED and READ on every call, root or not, so that the
    counters agree whoever the next call's root is.
    """
    s = serial + 1
    me = window.rank
    ranks = window.ranks
    parts = partition(x.nbytes, len(ranks)) if root_writes else [(0, x.nbytes)]
    window.post(ADDR, address_of(x), wake=False)
    window.post(LEN, x.nbytes, wake=False)
    window.post(POSTED, s)
    i = ranks.index(me)
    if me == root:
        if root_writes:
            for q in ranks[i + 1 :] + ranks[:i]:
                lo, n = parts[ranks.index(q)]
                window.wait(q, POSTED, s, deadline, on_timeout)
                if window.flag(q, LEN) != x.nbytes:  # never write past (or short of) a peer's x
                    raise count_mismatch(q, window.flag(q, LEN), x.nbytes)
                if n:
                    memory.write(q, window.flag(q, ADDR) + lo, x[lo : lo + n])
        window.post(PUSHED, s)
        window.post(READ, s)
        for q in ranks:
            if q != me:
                window.wait(q, READ, s, deadline, on_timeout)
        return s
    window.wait(root, POSTED, s, deadline, on_timeout)
    if window.flag(root, LEN) != x.nbytes:
        raise count_mismatch(root, window.flag(root, LEN), x.nbytes)
    source = window.flag(root, ADDR)
    for j, (lo, n) in enumerate(parts):
        if n and (j != i or not root_writes):
            memory.read(root, source + lo, x[lo : lo + n])
    window.wait(root, PUSHED, s, deadline, on_timeout)
    window.post(READ, s)
    return s


class Reads(NamedTuple):
    """What the algorithms by reads share: the window whose flags they post, the peers'
    memory, a cache-sized scratch piece (its size sets the step), and the deadline."""

    window: Window
    memory: PeerMemory
    piece: np.ndarray
    deadline: float
    on_timeout: Callable[[list[int]], BaseException]

    def step(self, x: np.ndarray) -> int:
        """Elements of ``x`` per step: as many as the piece holds."""
        return max(1, self.piece.nbytes // x.itemsize)

    def wait(self, q: int, slot: int, value: int) -> None:
        self.window.wait(q, slot, value, self.deadline, self.on_timeout)

    def walk(self, x: np.ndarray, serial: int) -> tuple[list[tuple[int, int]], int, int]:
        """(every rank's block of ``x``, elements per step, the call's last serial: one step
        per piece of the longest block) of a call that reads piece by piece."""
        chunk = self.step(x)
        blocks = partition(x.size, len(self.window.ranks))
        return blocks, chunk, serial + max(1, max((length + chunk - 1) // chunk for _, length in blocks))

    def post_addresses(self, x: np.ndarray, out: np.ndarray, first: int, last: int) -> tuple[list[int], dict[int, int], dict[int, int]]:
        """Publish where my ``x`` and ``out`` lie and how large ``x`` is (POSTED =
        ``last``), wait for every peer's (any POSTED from ``first`` on is this call's: a
        peer that passed another count may post another ``last``); return (the other
        ranks, their inputs' addresses, their outputs')."""
        window = self.window
        window.post(ADDR, address_of(x), wake=False)
        window.post(RESULT, address_of(out), wake=False)
        window.post(LEN, x.nbytes, wake=False)
        window.post(POSTED, last)
        return self.posted(x, first)

    def posted(self, x: np.ndarray, first: int) -> tuple[list[int], dict[int, int], dict[int, int]]:
        """Wait for every peer's addresses (POSTED from ``first`` on; mine posted already: by
        ``post_addresses`` or a C plan that handed the call back); return as ``post_addresses``."""
        window = self.window
        others = [q for q in window.ranks if q != window.rank]
        inputs, outputs = {}, {}
        for q in others:
            self.wait(q, POSTED, first)
            if window.flag(q, LEN) != x.nbytes:
                raise count_mismatch(q, window.flag(q, LEN), x.nbytes)
            inputs[q], outputs[q] = window.flag(q, ADDR), window.flag(q, RESULT)
        return others, inputs, outputs

    def reduce(self, op: ReduceOp, inputs: dict[int, int], x: np.ndarray, lo: int, n: int, dst: np.ndarray) -> None:
        """``dst = x[lo:lo+n] op (every peer's x[lo:lo+n], in rank order)``, each peer's
        part read into the piece in turn. ``dst`` may be ``x[lo:lo+n]`` itself."""
        own = x[lo : lo + n]
        contribution = self.piece[: n * x.itemsize].view(x.dtype)
        for i, q in enumerate(inputs):
            self.memory.read(q, inputs[q] + lo * x.itemsize, contribution)
            if i == 0:
                reduce_pair(op, own, contribution, out=dst)
            else:
                reduce_into(op, dst, contribution)

    def finish(self, others: Sequence[int], last: int) -> int:
        """Post that my reads are done and return once every peer's are: the callers may
        then overwrite the buffers the peers read."""
        self.window.post(READ, last)
        for q in others:
            self.wait(q, READ, last)
        return last


def all_reduce_by_reads(reads: Reads, x: np.ndarray, out: np.ndarray, op: ReduceOp, serial: int,
                        native: FoldPlan | None = None) -> int:
    """Two-shot all-reduce of ``x`` into ``out`` (``out`` may be ``x``) by reads of peers'
    memory: rank r reads block r of every peer's ``x`` and reduces it into its own ``out``
    (own contribution first, then the others in rank order), then reads every other block,
    reduced, out of its owner's ``out``. Per rank: 2·(p-1)/p·n bytes read across, n/p
    reduced, no copy in or out of a window: a ``reduce_by_reads`` whose every rank is the root.

    One piece of each block per step, so that reads of reduced pieces start before whole
    blocks are done. Returns the new serial; returns only once every peer has finished
    reading ``x`` and ``out``, so the caller may overwrite them at once.

    In place, a rank writes a peer's block of its ``x`` only after that peer has posted
    RED for the step, which it does after reading it. ``native``: its C plan (``fold_plan``'s
    all-reduce), which runs the call up to the first late peer; this goes on from where it stopped.
    """
    ranks = reads.window.ranks
    blocks, chunk, last = reads.walk(x, serial)
    lo, n = blocks[ranks.index(reads.window.rank)]
    mine = out[lo : lo + n]
    state = 0 if native is None else native(x, mine, out, reads.piece, serial)
    if state > 0:
        return int(state)
    others, inputs, outputs, step, phase = _resumed(reads, x, mine, serial + 1, last, state)
    for s, pieces in _folded_pieces(reads, op, x, inputs, blocks, chunk, serial, last, mine, step, phase > 0):
        for q in others[phase - 1 if phase and s == serial + 1 + step else 0 :]:
            qlo, qn = pieces[ranks.index(q)]
            if qn:
                reads.wait(q, RED, s)
                reads.memory.read(q, outputs[q] + (s - serial - 1) * chunk * x.itemsize, out[qlo : qlo + qn])
    return reads.finish(others, last)


FoldPlan = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", np.ndarray, int], int]
"""A C plan of a reduce or reduce-scatter by reads (``_reads_c.FoldPlan``, made by
``exchange_reads.fold_plan``): called ``(x, mine, result or None, piece, serial)``, it runs the
call as these functions do up to the first late peer and returns the call's last serial, 0
where it did nothing, or ``-1 - k`` where it stopped (``_resumed``)."""


def _resumed(reads: Reads, x: np.ndarray, mine: np.ndarray, first: int, last: int, state: int
             ) -> tuple[list[int], dict[int, int], dict[int, int], int, int]:
    """Where a call by reads that folds goes on after its C plan returned ``state`` (0: nothing
    done): my addresses posted (here where the C plan did nothing), every peer's, and the (step,
    phase) to go on from: phase 0 the step's fold, 1 + i the root's reads from the i-th of the
    others on (the step folded and its RED posted); the step past the last: READ posted."""
    if state == 0:
        others, inputs, outputs = reads.post_addresses(x, mine, first, last)
        return others, inputs, outputs, 0, 0
    others, inputs, outputs = reads.posted(x, first)
    step, phase = divmod(max(0, -state - 2), len(reads.window.ranks))
    return others, inputs, outputs, step, phase


def reduce_scatter_by_reads(reads: Reads, x: np.ndarray, out: np.ndarray, op: ReduceOp, serial: int,
                            native: FoldPlan | None = None) -> int:
    """Rank r reads block r of every peer's ``x`` and reduces it into ``out`` (the first
    shot of ``all_reduce_by_reads``): (p-1)/p·n bytes read across per rank, nothing copied
    into a window. ``out`` may be ``x``'s own block. Returns once every peer has finished
    reading ``x``. ``native``: its C plan, which runs the call up to the first late peer."""
    window = reads.window
    lo, n = partition(x.size, len(window.ranks))[window.ranks.index(window.rank)]
    chunk = reads.step(x)
    last = serial + 1
    state = 0 if native is None else native(x, out, None, reads.piece, serial)
    if state > 0:
        return int(state)
    others, inputs, _, step, _ = _resumed(reads, x, out, serial + 1, last, state)
    for start in range(step * chunk, n, chunk):
        m = min(chunk, n - start)
        reads.reduce(op, inputs, x, lo + start, m, out[start : start + m])
    return reads.finish(others, last)


def reduce_by_reads(reads: Reads, x: np.ndarray, kept: np.ndarray, op: ReduceOp, root: int, serial: int,
                    out: np.ndarray | None = None, native: FoldPlan | None = None) -> int:
    """Reduce of ``x`` into the root's ``x`` (or, given ``out`` apart from ``x`` there, into the root's
    ``out``, its ``x`` only read: no copy of ``x`` into ``out`` first) by reads of peers' memory, in two shots: rank r
    reads block r of every peer's ``x`` and folds it (own contribution first, then the others
    in rank order) into ``kept`` (the root: into block r of its ``x``); then the root reads
    every folded block out of its owner's ``kept`` into its ``x``. Every rank folds a share,
    where a root that read whole vectors would fold them all: per rank (p-1)/p·n bytes read
    across and n/p folded, the root (p-1)/p·n more. Other ranks' ``x`` are only read.

    One piece of each block per step (as ``all_reduce_by_reads``), so that the root reads
    folded pieces while their owners fold the next. ``kept``: at least the largest block's
    elements, the plan's, kept between calls. Returns the new serial once every peer is done
    reading my ``x`` and ``kept`` (the root writes a piece of block q of its ``x`` only after
    rank q posted RED for it, which it does after reading it). ``native``: its C plan, which
    runs the call up to the first late peer; this goes on from where it stopped."""
    ranks = reads.window.ranks
    blocks, chunk, last = reads.walk(x, serial)
    lo, n = blocks[ranks.index(reads.window.rank)]
    at_root = reads.window.rank == root
    result = x if out is None or not at_root else out
    mine = result[lo : lo + n] if at_root else kept[:n]
    state = 0 if native is None else native(x, mine, result if at_root else None, reads.piece, serial)
    if state > 0:
        return int(state)
    others, inputs, outputs, step, phase = _resumed(reads, x, mine, serial + 1, last, state)
    for s, pieces in _folded_pieces(reads, op, x, inputs, blocks, chunk, serial, last, mine, step, phase > 0):
        if at_root:
            for q in others[phase - 1 if phase and s == serial + 1 + step else 0 :]:
                qlo, qn = pieces[ranks.index(q)]
                if qn:
                    reads.wait(q, RED, s)
                    reads.memory.read(q, outputs[q] + (s - serial - 1) * chunk * x.itemsize, result[qlo : qlo + qn])
    return reads.finish(others, last)


def _folded_pieces(reads: Reads, op: ReduceOp, x: np.ndarray, inputs: dict[int, int], blocks: Sequence[tuple[int, int]],
                   chunk: int, serial: int, last: int, mine: np.ndarray, first: int = 0, folded: bool = False
                   ) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """The first shot of the calls by reads that fold, step by step from step ``first`` (its fold
    and RED already done where ``folded``): fold piece c of my block of every rank's ``x`` into
    ``mine[c·chunk:]`` (my block's destination), post RED, and yield (the step's serial, every
    block's piece)."""
    me = reads.window.ranks.index(reads.window.rank)
    for c in range(first, last - serial):
        s = serial + c + 1
        pieces = _pieces(blocks, c, chunk)
        if not (folded and c == first):
            lo, n = pieces[me]
            if n:
                reads.reduce(op, inputs, x, lo, n, mine[c * chunk : c * chunk + n])
            reads.window.post(RED, s)
        yield s, pieces
