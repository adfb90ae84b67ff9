"""Shared-memory transport: processes on one host exchange bytes through rings in /dev/shm.

Each rank creates one *inbox* segment: a control area, then one single-producer
single-consumer byte ring per peer that sends to it. Every rank maps every peer's inbox,
writes into the ring reserved for it there, and rings that peer's *doorbell*, a futex word
the peer sleeps on when it has nothing to do. Once every peer has mapped it (a store
barrier), a rank unlinks its own segment: the mappings stay valid, and from then on
nothing is left in /dev/shm however the processes end (normal exit, exception, SIGKILL).
A rank that dies during setup is unlinked by the peers that notice it, or else by the
next job's sweep (:mod:`collectives.transports.shm_names`: names carry the owner's pid).

Layout of a segment (offsets in bytes; each word written by one side only, and the two
sides' words on separate cache lines)::

    control   0 magic "COLLSHM1" | 8 n_slots u32 | 16 capacity u64 | 24 owner pid u64
             64 doorbell u32 (peers increment; owner futex-waits)
            128 sleeping u32 (owner: set while in futex_wait)
            192 closed u32 (owner: set by close())
            256 slot table: n_slots x i32, the rank writing into each ring
    ring i    0 tail u64, 8 want_room u32, 12 resume u32, 16 cpu u32, 24 slot u64[5] (writer)
             | 64 head u64 (reader), 96 deal u64 (both) | 128 data[capacity]

The slot and the deal are the express lane's swap by halves (engines/_half_swap.h): the slot
(send and receive addresses, size, wire tag, halves done) says where the writer's buffers lie;
the deal, used only in the ring from the lower rank to the higher, is the one word both sides
write, by compare-and-swap only.

Head and tail count bytes since the start, so ``tail - head`` is the fill level and wraps
never confuse empty with full; a writer that finds the ring empty may restart at the next
lap's start, which the resume word tells the reader (shm_ring.py). The writer copies the bytes,
then publishes the tail; the
reader copies them out, then publishes the head. This relies on aligned 8-byte stores
being atomic and on stores not being reordered with stores (x86-64 TSO); CPUs with weaker
ordering (aarch64) would need a fence, which plain Python cannot issue. Doorbell
increments are not atomic and a store may pass a load, so in rare races a wake-up can be
missed: it then costs one sleep slice (at most MAX_SLEEP), never a hang.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time
from collections.abc import Iterable, Sequence

from ..config import Config
from ..errors import ConnectError, InvalidArgumentError, PeerLostError, RendezvousTimeoutError, UnsupportedError
from ..store import Store
from ._futex import futex_wait, futex_wake
from . import cma
from .base import Channel, Sink, Transport
from .shm_names import pid_namespace, proc_stat, segment_name, sweep
from .shm_ring import _RING_DATA, _RING_DEAL, _RING_SLOT, RESTART_BYTES, Ring
from .single_copy import SingleCopy

SHM_DIR = "/dev/shm"
MAGIC = b"COLLSHM1"
MAX_SLEEP = 0.05
STEP_MIN = 64 << 10
FEED_MIN = 64 << 10  # the fewest bytes a sink is handed at once (but a frame's last, or a small ring's)

_OFF_NSLOTS = 8
_OFF_CAPACITY = 16
_OFF_PID = 24
_OFF_DOORBELL = 64
_OFF_SLEEPING = 128
_OFF_CLOSED = 192
_OFF_SLOTS = 256


def _align(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


def _segment_layout(n_slots: int, capacity: int) -> tuple[int, int, int]:
    """(offset of the first ring, stride between rings, total bytes)."""
    first = _align(_OFF_SLOTS + 4 * n_slots, 4096)
    stride = _align(_RING_DATA + capacity, 4096)
    return first, stride, first + n_slots * stride


_proc_stat = proc_stat  # the names this module had for them
_pid_namespace = pid_namespace


def _process_gone(pid: int, start_time: bytes | None) -> str | None:
    """Why process ``pid`` (started at ``start_time``) is gone, or None if it still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "exited"
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return "exited" if os.path.isdir("/proc/self") else None
    if fields[0] in (b"Z", b"X"):
        return "exited (zombie)"
    if start_time is not None and len(fields) > 19 and fields[19] != start_time:
        return "exited (its pid was reused)"
    return None


def _need_have(need: int, have: int) -> str:
    """"need X MB in /dev/shm, have Y MB", with enough decimals that X and Y differ."""
    for digits in (1, 3):
        x, y = f"{need / (1 << 20):.{digits}f}", f"{have / (1 << 20):.{digits}f}"
        if x != y:
            break
    else:
        x, y = f"{need} bytes", f"{have} bytes"
        return f"need {x} in {SHM_DIR}, have {y}"
    return f"need {x} MB in {SHM_DIR}, have {y} MB"


def create_segment_file(nbytes: int, describe: str) -> tuple[str, mmap.mmap]:
    """Create and map a fresh 0600 file of ``nbytes`` in /dev/shm under an unguessable name.
    Space is reserved up front, so a full /dev/shm raises ConnectError naming required and
    available bytes here instead of SIGBUS later. ``describe`` says what it is for."""
    if not os.path.isdir(SHM_DIR):
        raise UnsupportedError(f"shm: {SHM_DIR} does not exist here; use COLLECTIVES_TRANSPORT=tcp")

    def no_space(available: int) -> ConnectError:
        return ConnectError(
            f"shm: {_need_have(nbytes, available)} ({describe}); give it more room "
            "(docker run --shm-size=1g or --ipc=host; a larger tmpfs), free space there, lower "
            "COLLECTIVES_SHM_RING_BYTES, or use COLLECTIVES_TRANSPORT=tcp"
        )

    st = os.statvfs(SHM_DIR)
    if nbytes > st.f_bavail * st.f_frsize:
        raise no_space(st.f_bavail * st.f_frsize)
    name = segment_name()
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, nbytes)  # reserve now: ENOSPC here, never SIGBUS later
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise no_space(os.statvfs(SHM_DIR).f_bavail * st.f_frsize) from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            os.ftruncate(fd, nbytes)
        mm = mmap.mmap(fd, nbytes)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return name, mm


def open_segment_file(name: str, owner: int, describe: str) -> mmap.mmap:
    """Map the segment ``name`` that rank ``owner`` created (it must belong to our user)."""
    if "/" in name or not name.startswith("collectives-"):
        raise ConnectError(f"shm: rank {owner} published a bad segment name {name!r}", peer=owner)
    try:
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConnectError(f"shm: cannot open the {describe} of rank {owner} ({name}): {exc}", peer=owner) from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise ConnectError(f"shm: the {describe} of rank {owner} ({name}) belongs to another user", peer=owner)
        return mmap.mmap(fd, st.st_size)
    finally:
        os.close(fd)


def unlink_segment_file(name: str) -> None:
    try:
        os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        pass


class _Segment:
    """One rank's mapped inbox: control words as ctypes views, ring offsets by writer rank."""

    def __init__(self, mm: mmap.mmap, name: str, owner: int) -> None:
        if mm[:8] != MAGIC:
            raise ConnectError(f"shm: segment {name} of rank {owner} is not a collectives inbox", peer=owner)
        self.mm = mm
        self.name = name
        self.owner = owner
        self.doorbell = ctypes.c_uint32.from_buffer(mm, _OFF_DOORBELL)
        self.sleeping = ctypes.c_uint32.from_buffer(mm, _OFF_SLEEPING)
        self.closed = ctypes.c_uint32.from_buffer(mm, _OFF_CLOSED)
        self.doorbell_address = ctypes.addressof(self.doorbell)
        self.pid = int.from_bytes(mm[_OFF_PID : _OFF_PID + 8], "little")
        self.capacity = int.from_bytes(mm[_OFF_CAPACITY : _OFF_CAPACITY + 8], "little")
        n_slots = int.from_bytes(mm[_OFF_NSLOTS : _OFF_NSLOTS + 4], "little")
        first, stride, total = _segment_layout(n_slots, self.capacity)
        if total > len(mm):
            raise ConnectError(f"shm: segment {name} of rank {owner} is truncated", peer=owner)
        writers = memoryview(mm)[_OFF_SLOTS : _OFF_SLOTS + 4 * n_slots].cast("i").tolist()
        self.ring_offsets = {w: first + i * stride for i, w in enumerate(writers)}

    @classmethod
    def create(cls, rank: int, writers: Sequence[int], capacity: int) -> _Segment:
        """Create, size and map a fresh inbox with one ring per rank in ``writers``."""
        _, _, total = _segment_layout(len(writers), capacity)
        what = f"the inbox of rank {rank} ({len(writers)} ring(s) of {capacity} bytes)"
        name, mm = create_segment_file(total, what)
        mm[_OFF_NSLOTS : _OFF_NSLOTS + 4] = len(writers).to_bytes(4, "little")
        mm[_OFF_CAPACITY : _OFF_CAPACITY + 8] = capacity.to_bytes(8, "little")
        mm[_OFF_PID : _OFF_PID + 8] = os.getpid().to_bytes(8, "little")
        table = b"".join(w.to_bytes(4, "little", signed=True) for w in writers)
        mm[_OFF_SLOTS : _OFF_SLOTS + len(table)] = table
        mm[:8] = MAGIC
        return cls(mm, name, rank)

    @classmethod
    def open(cls, name: str, owner: int) -> _Segment:
        """Map the inbox ``name`` that rank ``owner`` created (it must belong to our user)."""
        mm = open_segment_file(name, owner, "inbox")
        return cls(mm, name, owner)

    def unlink(self) -> None:
        unlink_segment_file(self.name)

    def ring_doorbell(self) -> None:
        """Tell the owner something changed; wake it only if it sleeps."""
        self.doorbell.value += 1  # c_uint32 wraps
        if self.sleeping.value:
            futex_wake(self.doorbell_address)

    def release(self) -> None:
        """Unmap if no view into the mapping is alive; else the GC unmaps it later. The
        control words stay valid until then, so a thread still waiting on them (an
        abort() from another thread) sees a closed transport, not freed memory."""
        try:
            self.mm.close()
        except BufferError:
            pass


def _ring(segment: _Segment, writer: int) -> Ring:
    """The ring that rank ``writer`` writes into in ``segment``."""
    offset = segment.ring_offsets.get(writer)
    if offset is None:
        raise ConnectError(
            f"shm: the inbox of rank {segment.owner} has no ring for rank {writer} "
            "(the ranks disagree on who talks over shm)",
            peer=segment.owner,
        )
    return Ring(segment.mm, offset, segment.capacity)


class ShmChannel(Channel):
    """The byte stream to one peer: I write into my ring in its inbox and read my inbox's
    ring from it. Head and tail are read from the ring itself each time (only one side writes
    each), so that code moving whole frames outside this class (``lane``) stays in step."""

    def __init__(self, rank: int, peer: int, mine: _Segment, theirs: _Segment, max_frame_bytes: int,
                 single_copy: bool = False) -> None:
        super().__init__(peer, max_frame_bytes=max_frame_bytes)
        self.rank = rank
        self.peer_pid = theirs.pid
        # single_copy: cross-memory copies allowed and the peer's pid meaningful here
        self.single_copy = SingleCopy(peer, theirs.pid, offer=single_copy, read=single_copy,
                                      gone=lambda: bool(theirs.closed.value))
        self._peer_seg = theirs
        self._out: Ring | None = _ring(theirs, rank)
        self._in: Ring | None = _ring(mine, peer)
        self._mine_closed = mine.closed
        # Move at most a quarter ring per call and publish it, so that the peer copies
        # one piece out while we copy the next one in (a pipeline, not turns).
        self._step = max(STEP_MIN, self._out.capacity // 4)

    def _lost(self, why: str) -> PeerLostError:
        return PeerLostError(f"rank {self.peer} (pid {self.peer_pid}) {why}", peer=self.peer)

    def _write_some(self, views: Sequence[memoryview]) -> int:
        out = self._out
        if out is None:
            raise self._lost("is unreachable: the shm channel was closed")
        if self._peer_seg.closed.value:
            raise self._lost("closed its shm transport; it reads no more")
        cap = out.capacity
        tail = out.tail.value
        head = out.head.value
        room = cap - (tail - head)
        if tail == head and (at := tail % cap) >= RESTART_BYTES:
            if 0 < min(sum(len(view) for view in views), self._step) <= at:  # fits before ``at``: a restart
                tail, room = out.restart(tail), at
        if room == 0:
            # Ask the reader to ring us when it frees room, then look once more (it may
            # have read before it saw the flag).
            out.want_room.value = 1
            room = cap - (tail - out.head.value)
            if room == 0:
                return 0
        data = out.data
        budget = min(room, self._step)
        written = 0
        for view in views:
            n = min(len(view), budget - written)
            pos = (tail + written) % cap
            first = min(n, cap - pos)
            data[pos : pos + first] = view[:first]
            if first < n:
                data[: n - first] = view[first:n]
            written += n
            if n < len(view):
                break
        if not written:
            return 0
        out.tail.value = tail + written
        if written == room:
            out.want_room.value = 1
        elif out.want_room.value:
            out.want_room.value = 0
        self._peer_seg.ring_doorbell()
        return written

    def _read_some(self, into: memoryview) -> int:
        ring = self._in
        if ring is None:
            raise self._lost("is unreachable: the shm channel was closed")
        head = ring.head.value
        avail = ring.tail.value - head
        if avail == 0:
            if len(into) and self._peer_seg.closed.value and ring.tail.value == head and self._needs_peer():
                raise self._lost("closed its shm transport; nothing is left to read")
            return 0
        cap = ring.capacity
        pos = head % cap
        if pos and ring.resume.value == (head // cap + 1) & 0xFFFFFFFF:  # a restart skipped the rest of the lap
            head += cap - pos  # (as Ring.settle, inline: this is every small message's read on the engine's path)
            avail -= cap - pos
            pos = 0
            ring.head.value = head
        n = min(avail, len(into), self._step)
        first = min(n, cap - pos)
        into[:first] = ring.data[pos : pos + first]
        if first < n:
            into[first:n] = ring.data[: n - first]
        ring.head.value = head + n
        if ring.want_room.value:
            self._peer_seg.ring_doorbell()
        return n

    def _feed_some(self, sink: Sink, want: int) -> int:
        """Hand ``sink`` up to ``want`` bytes straight from the ring, where they lie (no copy out of
        it first), and free their room only after it took them."""
        ring = self._in
        if ring is None:
            raise self._lost("is unreachable: the shm channel was closed")
        head, avail = ring.settle()
        cap = ring.capacity
        if avail < min(want, FEED_MIN, cap) and not self._peer_seg.closed.value:
            return 0  # more is on its way: wait for a piece worth a call
        if avail == 0:
            if self._needs_peer():
                raise self._lost("closed its shm transport; nothing is left to read")
            return 0
        n = min(avail, want, self._step)
        pos = head % cap
        first = min(n, cap - pos)
        sink.feed(ring.data[pos : pos + first])
        if first < n:
            sink.feed(ring.data[: n - first])
        ring.head.value = head + n
        if ring.want_room.value:
            self._peer_seg.ring_doorbell()
        return n

    def _needs_peer(self) -> bool:
        """Whether a request (or a half-read frame) still waits on the peer. A peer that
        closed after its last message is an error only once something needs it, so that
        progress on an idle channel does not fail waits on other peers."""
        return self.busy or self.mid_frame

    def _nothing_left(self) -> bool:
        """Whether the peer's ring to me is empty (read after seeing it closed or dead)."""
        return self._in is None or self._in.tail.value == self._in.head.value

    def lane(self) -> tuple[tuple[int, ...], tuple[object, ...]]:
        """The addresses of this channel's words, for code that moves whole frames itself
        (engines/_express_c.c): my ring in the peer's inbox (tail, want_room, head, cpu, data),
        the peer's ring in mine (the same five), the capacity, the peer's doorbell, sleeping and
        closed words, and my own closed word; my slot, the peer's, the deal of the swap by halves
        and whether I am the lower rank; then the objects that keep them mapped."""
        out, into, peer = self._out, self._in, self._peer_seg
        if out is None or into is None:
            raise self._lost("is unreachable: the shm channel was closed")
        words: list[int] = []
        keep: list[object] = [out, into, peer.doorbell, peer.sleeping, peer.closed, self._mine_closed]
        for ring in (out, into):
            data = (ctypes.c_char * ring.capacity).from_buffer(ring.data)
            keep.append(data)
            words += [ctypes.addressof(ring.tail), ctypes.addressof(ring.want_room), ctypes.addressof(ring.head),
                      ctypes.addressof(ring.cpu), ctypes.addressof(data)]
        words += [out.capacity, ctypes.addressof(peer.doorbell), ctypes.addressof(peer.sleeping),
                  ctypes.addressof(peer.closed), ctypes.addressof(self._mine_closed)]
        low = self.rank < self.peer
        words += [ctypes.addressof(out.tail) + _RING_SLOT, ctypes.addressof(into.tail) + _RING_SLOT,
                  ctypes.addressof((out if low else into).tail) + _RING_DEAL, int(low)]
        return tuple(words), tuple(keep)

    def _close_stream(self) -> None:
        # Only drop our references: a thread still inside _read_some/_write_some (an
        # abort() from another thread) keeps valid views; the GC unmaps afterwards.
        self._out = self._in = None


class ShmTransport(Transport):
    """Channels to ``peers`` through shared-memory rings; every rank must be on this host."""

    name = "shm"
    offers_windows = True

    def __init__(
        self,
        rank: int,
        size: int,
        peers: Sequence[int],
        store: Store,
        config: Config,
        timeout: float,
    ) -> None:
        peers = sorted(set(peers))
        if rank in peers or not 0 <= rank < size or any(not 0 <= p < size for p in peers):
            raise InvalidArgumentError(f"shm: rank {rank} and peers {peers} must be distinct ranks below {size}")
        capacity = config.shm_ring_bytes
        if capacity < 1:
            raise InvalidArgumentError(f"shm: COLLECTIVES_SHM_RING_BYTES must be positive, not {capacity}")
        self.rank = rank
        self.channels: dict[int, ShmChannel] = {}
        self._closed = False
        self._peer_segs: dict[int, _Segment] = {}
        self._watch: dict[int, tuple[int, bytes | None]] = {}  # peer -> (pid, start time)
        sweep()  # segments that processes killed during an earlier setup could not unlink
        try:
            self._mine = _Segment.create(rank, peers, capacity)
        except (ConnectError, UnsupportedError) as exc:  # tell the peers now, not at their timeout
            store.set(f"shm/{rank}/name", b"!" + str(exc).encode())
            raise
        try:
            self._rendezvous(peers, store, timeout)
            single_copy = config.cross_memory and cma.AVAILABLE  # and, per peer, a pid of our namespace
            self.channels = {
                p: ShmChannel(rank, p, self._mine, self._peer_segs[p], config.max_frame_bytes,
                              single_copy and p in self._watch)
                for p in peers
            }
        except BaseException:
            self._mine.unlink()
            self.close()
            raise
        self._mine.unlink()

    def _rendezvous(self, peers: Sequence[int], store: Store, timeout: float) -> None:
        """Publish my inbox, map the peers' inboxes, and wait until all have mapped mine."""
        deadline = time.monotonic() + timeout
        rank = self.rank
        store.set(f"shm/{rank}/pid", f"{os.getpid()} {_pid_namespace()}".encode())
        store.set(f"shm/{rank}/name", self._mine.name.encode())
        for p in peers:
            name = store.get(f"shm/{p}/name", max(0.0, deadline - time.monotonic())).decode()
            if name.startswith("!"):
                raise ConnectError(f"shm: rank {p} could not set up shared memory: {name[1:]}", peer=p)
            published = store.get(f"shm/{p}/pid", max(0.0, deadline - time.monotonic())).decode()
            pid_text, _, namespace = published.partition(" ")
            if not pid_text.isdigit():
                raise ConnectError(f"shm: rank {p} published {published[:80]!r} as its pid", peer=p)
            segment = _Segment.open(name, p)
            self._peer_segs[p] = segment
            if segment.pid != int(pid_text):
                raise ConnectError(f"shm: the inbox of rank {p} names pid {segment.pid}, not {pid_text}", peer=p)
            if namespace == _pid_namespace():  # else its pid means nothing here: rely on its closed flag
                stat = _proc_stat(segment.pid)
                self._watch[p] = (segment.pid, stat[19] if stat is not None and len(stat) > 19 else None)
        store.set(f"shm/{rank}/mapped", b"1")
        waiting = list(peers)
        pause = 1e-4
        while waiting:
            waiting = [p for p in waiting if not store.check([f"shm/{p}/mapped"])]
            for p in waiting:
                why = _process_gone(*self._watch[p]) if p in self._watch else None
                if why is not None:
                    self._peer_segs[p].unlink()  # it cannot unlink its own any more
                    raise ConnectError(f"shm: rank {p} (pid {self._peer_segs[p].pid}) {why} during setup", peer=p)
            if waiting:
                if time.monotonic() >= deadline:
                    raise RendezvousTimeoutError(
                        f"shm: rank(s) {', '.join(map(str, waiting))} did not map rank {rank}'s inbox "
                        f"within {timeout:g} s"
                    )
                time.sleep(pause)
                pause = min(pause * 2, 0.01)

    @property
    def closed(self) -> bool:
        return self._closed

    def peer_pids(self) -> dict[int, int]:
        """Each peer's process id as it published it (meaningful only in our pid namespace)."""
        return {p: segment.pid for p, segment in self._peer_segs.items()}

    def ring_peers(self) -> None:
        """Wake every peer that sleeps on its doorbell (after a shared-window flag changed)."""
        if not self._closed:
            for segment in self._peer_segs.values():
                segment.ring_doorbell()

    def doorbells(self) -> list[tuple[ctypes.c_uint32, ctypes.c_uint32]]:
        """The (doorbell, sleeping) words ``ring_peers`` rings, one pair per peer, for code
        that rings them itself (engines/_small_c.c); holding them keeps their mapping alive."""
        return [(segment.doorbell, segment.sleeping) for segment in self._peer_segs.values()]

    def activity_token(self) -> int | None:
        return None if self._closed else self._mine.doorbell.value

    def wait_for_activity(self, timeout: float, token: int | None = None) -> None:
        """Sleep on my doorbell until a peer rings it (or ``timeout``, at most 50 ms)."""
        if self._closed:
            return
        mine = self._mine
        if token is None:
            token = mine.doorbell.value
        mine.sleeping.value = 1
        try:
            if mine.doorbell.value == token:
                futex_wait(mine.doorbell_address, token, min(timeout, MAX_SLEEP))
        finally:
            mine.sleeping.value = 0

    def check_peers(self, peers: Iterable[int], *, reads: bool = True) -> None:
        """Raise PeerLostError for a peer whose process died, or that closed its transport.

        ``reads``: whether the caller waits to read the peers' streams. Stream reads notice a
        closed peer themselves, and a peer that left its last messages in the ring is lost to
        them only once they are read, so for them only a peer that left nothing to read is
        lost (and its channel fails). The shared-window waits (``reads=False``) read no
        stream: a peer that left is lost to them whatever it left unread (a message nobody
        received yet), and its channel is left to the stream.

        A peer once found lost stays lost: every later check raises again. A window wait
        that finds the value it waited for posted by a peer that then died returns that
        value and goes on (shm_window.py); its next wait on that peer must fail at once,
        not skip the peer's failed channel and sleep out the whole timeout."""
        if self._closed:
            return
        for p in peers:
            channel = self.channels.get(p)
            if channel is None:
                continue
            if isinstance(channel.error, PeerLostError):
                raise PeerLostError(str(channel.error), peer=p)
            pid, start_time = self._watch.get(p, (self._peer_segs[p].pid, None))
            why = _process_gone(pid, start_time) if p in self._watch else None
            if why is None and self._peer_segs[p].closed.value:  # alive, but it left (failed or aborted)
                why = "closed its shm transport"
            if why is not None and (not reads or channel._nothing_left()):
                exc = PeerLostError(
                    f"rank {p} (pid {pid}) {why} while rank {self.rank} was waiting for it", peer=p
                )
                if reads and channel.error is None:  # (failed otherwise before: that error stays the channel's)
                    channel._fail(exc)
                raise exc

    def close(self) -> None:
        """Mark my inbox closed, wake the peers so they notice, and unmap everything."""
        if self._closed:
            return
        self._closed = True
        self._mine.closed.value = 1
        for segment in self._peer_segs.values():
            segment.ring_doorbell()
        for channel in self.channels.values():
            channel.close()
        for segment in self._peer_segs.values():
            segment.release()
        self._mine.release()
