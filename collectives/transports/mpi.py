"""MPI transport: tagged messages over mpi4py, on a private duplicate of an MPI communicator.

MPI already has messages, tags and matching, so :class:`MpiChannel` overrides how a
:class:`~collectives.transports.base.Channel` starts sends and receives, probes and
progresses instead of supplying a byte stream: a send is one ``Isend``, a receive one
``Irecv`` straight into the caller's buffer (MPI moves the data once both sides posted),
progress is ``Test``. Nothing blocks inside MPI: ``wait_for_activity`` sleeps in growing
slices (``Backoff``; MPICH busy-polls in blocking calls; 8 ranks on 2 cores must not starve).

Where the MPI communicator comes from (the constructor signature is the one every
transport shares, so it cannot carry an mpi4py object on its own):

1. ``comm=`` (keyword), when the transport is built directly (``from_mpi``, tests);
2. the communicator of the :class:`~collectives.store.mpi_store.MPIStore` the ranks
   bootstrapped over (``store``, possibly behind PrefixStores): the store *is* the MPI
   bootstrap, so whoever connects ranks through it finds their MPI communicator there,
   with no global registry and no lifetime of its own;
3. ``MPI.COMM_WORLD``, if this process's rank and the world size are those of the job.

Setup is ``Idup`` of that communicator (collective over all its ranks, polled with the
transport timeout): our messages travel in their own MPI context, so they never match
the user's receives on the same communicator (even with ``ANY_TAG``), nor theirs ours.
Its error handler is set to ``ERRORS_RETURN`` so a truncated receive becomes a
:class:`MessageMismatchError` instead of aborting the job.

**Tags.** Ours are 64-bit; MPI's run from 0 to ``MPI.TAG_UB`` (2**29 - 1 with MPICH, at
least 32767 anywhere). A plain ``tag % (TAG_UB + 1)`` is not safe: the communicator
marks point-to-point tags with bit 62 and its own control messages with bit 61, so
``send(tag=5)`` and collective #5 would share an MPI tag, and a receive of one could
match the other when the two are in flight between the same pair in opposite orders
(the non-overtaking rule orders messages that match *the same* receive; it cannot keep
apart two streams that share a tag). So the map is exact instead (:class:`TagMap`):
tags below half the MPI range (collective sequence numbers) map to themselves, the seven
classes selected by the top three bits (point-to-point, control, ...) each get a slice
for their small values, and every other tag (an enormous user tag, a sequence number
past 2**28) is *overflow*: it travels on one reserved MPI tag with a 16-byte header
``(tag, nbytes)`` in front of the payload, and is matched here by its full tag. Per-tag
FIFO then follows from MPI's non-overtaking rule in both cases: messages with one of our
tags share one MPI tag (and source and context), so they match the receives posted for
that MPI tag in sending order; overflow messages are taken with ``Improbe`` on their MPI
tag, hence in sending order, and queued per full tag.

**Closing.** MPI has no notion of a peer closing, so ``close()`` sends each peer a notice
on a second reserved tag: how many messages it sent that peer, and how many of the
peer's it received. A channel that gets the notice keeps delivering what was sent before
it: it drains the peer's remaining messages (``Improbe`` on any tag) until the announced
count has arrived, then fails receives that nothing can satisfy with
:class:`PeerLostError`. A pending send fails too, unless the notice says the peer
received every message we sent (then it is about to complete; otherwise it gets
:data:`SEND_GRACE` seconds). A process that dies takes the whole MPI job down with it
(mpiexec aborts the others), so ``check_peers`` has nothing to poll.

The duplicated communicator is never freed: ``MPI_Comm_free`` is collective while
``close()`` is not, and a context id reused by a new communicator could match messages
in flight to the old one. So each transport keeps one MPI context until ``MPI_Finalize``.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from ..config import Config
from ..errors import (
    InvalidArgumentError,
    MessageMismatchError,
    PeerLostError,
    RendezvousTimeoutError,
    TransportError,
    UnsupportedError,
)
from ..store import PrefixStore, Store
from .base import Channel, Request, Transport
from .backoff import Backoff

logger = logging.getLogger("collectives")

OVERFLOW_HEADER = struct.Struct("<QQ")  # (our tag, payload bytes) in front of an overflow message
CLOSE_NOTICE = struct.Struct("<QQ")  # (messages we sent you, messages of yours we received)
SEND_GRACE = 1.0
"""Seconds a send still pending when its peer closed may take to complete before it fails
(only when the peer's notice says it did not receive everything we sent)."""
MIN_NAP = 20e-6
MAX_NAP = 1e-3
_TAG_LIMIT = 1 << 64

# Requests MPI may still touch after we gave up on them (a cancelled receive not yet
# completed, a send the peer never matched): they and their buffers must stay referenced
# until MPI completes them, or MPI would read or write freed memory.
_ZOMBIES: list[tuple[Any, Any]] = []
_ZOMBIES_LOCK = threading.Lock()


def import_mpi() -> Any:
    """The ``mpi4py.MPI`` module (importing it initializes MPI), or UnsupportedError."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise UnsupportedError(
            f"the MPI transport needs mpi4py and an MPI library (pip install mpi4py mpich): {exc}"
        ) from None
    return MPI


def _reap_zombies() -> None:
    with _ZOMBIES_LOCK:
        keep = []
        for request, buffer in _ZOMBIES:
            try:
                if not request.Test():
                    keep.append((request, buffer))
            except Exception:  # noqa: BLE001 - an abandoned request that ended in error is done too
                pass
        _ZOMBIES[:] = keep


def _abandon(request: Any, buffer: Any, *, cancel: bool) -> None:
    """Give up on ``request``: cancel it (receives), keep it and its buffer referenced."""
    if cancel:
        try:
            request.Cancel()
        except Exception:  # noqa: BLE001 - already complete or not cancellable
            pass
    with _ZOMBIES_LOCK:
        _ZOMBIES.append((request, buffer))


class TagMap:
    """An exact map from our 64-bit tags to MPI tags, with two reserved MPI tags.

    * ``tag < low_span`` (class 0: collective sequence numbers) maps to itself;
    * class ``c = tag >> 61`` in 1..7 with ``tag & (2**61 - 1) < high_span`` maps into
      slice ``c`` after the class-0 range;
    * anything else has no MPI tag of its own (``mpi_tag`` returns None): it is sent on
      ``overflow_tag`` with its full tag in a header.

    ``close_tag`` carries the close notices.
    """

    def __init__(self, tag_ub: int) -> None:
        if tag_ub < 32767:
            raise UnsupportedError(f"MPI.TAG_UB is {tag_ub}; the MPI standard promises at least 32767")
        top = tag_ub + 1
        self.close_tag = top - 1
        self.overflow_tag = top - 2
        space = top - 2
        self.low_span = space // 2
        self.high_span = (space - self.low_span) // 7

    def mpi_tag(self, tag: int) -> int | None:
        if tag < self.low_span:
            if tag < 0:
                raise InvalidArgumentError(f"tag: {tag} is negative")
            return tag
        if tag >= _TAG_LIMIT:
            raise InvalidArgumentError(f"tag: {tag:#x} does not fit in 64 bits")
        cls, low = tag >> 61, tag & ((1 << 61) - 1)
        if cls and low < self.high_span:
            return self.low_span + (cls - 1) * self.high_span + low
        return None


class _Op:
    """One send or receive: our Request, the MPI request carrying it, its buffer."""

    __slots__ = ("request", "mpi", "buffer")

    def __init__(self, request: Request, buffer: Any, mpi: Any = None) -> None:
        self.request = request
        self.buffer = buffer
        self.mpi = mpi


class MpiChannel(Channel):
    """Messages to and from one peer over the transport's MPI communicator."""

    def __init__(self, transport: MpiTransport, peer: int) -> None:
        super().__init__(peer)
        self._mpi = transport.MPI
        self._comm = transport.comm
        self._tags = transport.tags
        self._status = transport.MPI.Status()
        self._sends: list[_Op] = []
        self._recvs: list[_Op] = []  # receives posted to MPI (tags with an MPI tag)
        self._overflow_posted: dict[int, deque[_Op]] = {}  # overflow receives, by our tag
        self._overflow_unexpected: dict[int, deque[memoryview]] = {}
        self._probed: deque[tuple[int, bytearray, Any]] = deque()  # Improbe'd, receiving, in match order
        self._stash: dict[int, deque[memoryview]] = {}  # drained after the peer closed, by MPI tag
        self._late: dict[int, deque[_Op]] = {}  # receives waiting on the drain, by MPI tag
        self.sent = 0  # messages we sent the peer
        self.arrived = 0  # messages of the peer's that MPI matched here
        self._close_buffer = bytearray(CLOSE_NOTICE.size)
        self._close_request: Any = self._comm.Irecv(
            [self._close_buffer, self._mpi.BYTE], source=peer, tag=self._tags.close_tag
        )
        self._peer_sent: int | None = None  # from the peer's close notice
        self._peer_got_all = False
        self._peer_closed_at = 0.0
        self._closed = False

    # -- public ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._sends or self._recvs or self._probed or self._intake
                    or any(self._overflow_posted.values()) or any(self._late.values()))

    @property
    def peer_closed(self) -> bool:
        return self._peer_sent is not None

    def _start_send(self, request: Request, view: memoryview) -> None:
        if self.peer_closed:
            exc = PeerLostError(f"rank {self.peer} closed its MPI channel; cannot send to it", peer=self.peer)
            self._fail(exc)
            request.error = exc
            return
        mpitag = self._tags.mpi_tag(request.tag)
        if mpitag is None:
            buffer: Any = OVERFLOW_HEADER.pack(request.tag, len(view)) + bytes(view)
            mpitag = self._tags.overflow_tag
        else:
            buffer = view
        op = _Op(request, buffer, self._call(self._comm.Isend, [buffer, self._mpi.BYTE], self.peer, mpitag))
        self.sent += 1
        self._sends.append(op)

    def _start_recv(self, request: Request, view: memoryview) -> None:
        tag = request.tag
        op = _Op(request, view)
        mpitag = self._tags.mpi_tag(tag)
        if mpitag is None:
            if not self._take(self._overflow_unexpected, tag, op):
                self._overflow_posted.setdefault(tag, deque()).append(op)
        elif self.peer_closed:
            # Draining: no new MPI receive, or it could overtake a message already drained.
            if not self._take(self._stash, mpitag, op):
                self._late.setdefault(mpitag, deque()).append(op)
        else:
            op.mpi = self._call(self._comm.Irecv, [view, self._mpi.BYTE], self.peer, mpitag)
            self._recvs.append(op)
        if self._eof is not None and not request.done:
            self._fail(self._eof)

    def probe(self, tag: int) -> bool:
        """Whether a message tagged ``tag`` waits unmatched (Iprobe: past posted receives)."""
        self._take_intake()
        mpitag = self._tags.mpi_tag(tag)
        if mpitag is None:
            return bool(self._overflow_unexpected.get(tag)) and not self._overflow_posted.get(tag)
        if self.peer_closed:
            return bool(self._stash.get(mpitag)) and not self._late.get(mpitag)
        return bool(self._call(self._comm.Iprobe, self.peer, mpitag))

    def progress(self) -> bool:
        """Test what is outstanding; return whether anything completed."""
        if self.error is not None:
            return False
        try:
            if self._intake:
                self._take_intake()
            moved = self._progress()
        except TransportError as exc:
            self._fail(exc)
            raise
        return moved

    # -- internals ------------------------------------------------------------------------

    def _write_some(self, views: Sequence[memoryview]) -> int:
        raise NotImplementedError("MpiChannel sends messages, not a byte stream")

    def _read_some(self, into: memoryview) -> int:
        raise NotImplementedError("MpiChannel receives messages, not a byte stream")

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._mpi.Exception as exc:
            raise TransportError(f"MPI failed for rank {self.peer}: {exc}", peer=self.peer) from None

    def _test(self, request: Any, status: Any = None) -> bool:
        try:
            return bool(request.Test(status))
        except self._mpi.Exception as exc:
            if exc.Get_error_class() == self._mpi.ERR_TRUNCATE:
                raise MessageMismatchError(
                    f"a message from rank {self.peer} is larger than the receive posted for it "
                    "(ranks disagree on the size)",
                    peer=self.peer,
                ) from None
            raise TransportError(f"MPI failed for rank {self.peer}: {exc}", peer=self.peer) from None

    def _deliver(self, op: _Op, payload: memoryview) -> None:
        view = op.buffer
        if len(payload) != len(view):
            raise MessageMismatchError(
                f"message tag {op.request.tag:#x} from rank {self.peer} has {len(payload)} bytes but the "
                f"receive posted for it has {len(view)} (ranks disagree on the size)",
                peer=self.peer,
            )
        view[:] = payload
        op.request.done = True

    def _take(self, queues: dict[int, deque[memoryview]], key: int, op: _Op) -> bool:
        """Satisfy ``op`` from a queue of messages already here; whether there was one."""
        queue = queues.get(key)
        if not queue:
            return False
        payload = queue.popleft()
        if not queue:
            del queues[key]
        try:
            self._deliver(op, payload)
        except MessageMismatchError as exc:
            self._fail(exc)
            raise
        return True

    def _progress(self) -> bool:
        moved = False
        if self._sends:
            pending: list[_Op] = []
            for op in self._sends:
                if self._test(op.mpi):
                    op.request.done = True
                else:
                    pending.append(op)
            moved = len(pending) != len(self._sends)
            self._sends = pending
        if self._recvs:
            moved = self._progress_recvs() or moved
        moved = self._probe() or moved
        if self._peer_sent is None and self._test(self._close_request):
            self._on_close_notice()
            moved = True
            moved = self._probe() or moved
        if self._peer_sent is not None:
            self._after_peer_close()
        return moved

    def _progress_recvs(self) -> bool:
        status = self._status
        pending: list[_Op] = []
        for op in self._recvs:
            if not self._test(op.mpi, status):
                pending.append(op)
                continue
            self.arrived += 1
            got = status.Get_count(self._mpi.BYTE)
            if got != len(op.buffer):
                raise MessageMismatchError(
                    f"message tag {op.request.tag:#x} from rank {self.peer} has {got} bytes but the "
                    f"receive posted for it has {len(op.buffer)} (ranks disagree on the size)",
                    peer=self.peer,
                )
            op.request.done = True
        moved = len(pending) != len(self._recvs)
        self._recvs = pending
        return moved

    def _probe(self) -> bool:
        """Take overflow messages (and, once the peer closed, any message no receive
        matched) with Improbe, receive them into buffers of their own, and hand over
        those that completed, in the order MPI matched them."""
        moved = False
        status = self._status
        draining = self._peer_sent is not None and self.arrived < self._peer_sent
        while True:
            tag = self._mpi.ANY_TAG if draining else self._tags.overflow_tag
            try:
                message = self._comm.Improbe(self.peer, tag, status)
            except self._mpi.Exception as exc:
                raise TransportError(f"MPI failed for rank {self.peer}: {exc}", peer=self.peer) from None
            if message is None:
                break
            buffer = bytearray(status.Get_count(self._mpi.BYTE))
            self._probed.append((status.Get_tag(), buffer, self._call(message.Irecv, [buffer, self._mpi.BYTE])))
            self.arrived += 1
            moved = True
            draining = self._peer_sent is not None and self.arrived < self._peer_sent
        while self._probed:
            mpitag, buffer, request = self._probed[0]
            if not self._test(request):
                break
            self._probed.popleft()
            moved = True
            if mpitag == self._tags.overflow_tag:
                self._on_overflow(buffer)
            else:
                queue = self._late.get(mpitag)
                if queue:
                    op = queue.popleft()
                    if not queue:
                        del self._late[mpitag]
                    self._deliver(op, memoryview(buffer))
                else:
                    self._stash.setdefault(mpitag, deque()).append(memoryview(buffer))
        return moved

    def _on_overflow(self, buffer: bytearray) -> None:
        if len(buffer) < OVERFLOW_HEADER.size:
            raise TransportError(f"rank {self.peer} sent a malformed overflow message", peer=self.peer)
        tag, nbytes = OVERFLOW_HEADER.unpack_from(buffer)
        payload = memoryview(buffer)[OVERFLOW_HEADER.size :]
        if len(payload) != nbytes:
            raise TransportError(f"rank {self.peer} sent a malformed overflow message", peer=self.peer)
        queue = self._overflow_posted.get(tag)
        if queue:
            op = queue.popleft()
            if not queue:
                del self._overflow_posted[tag]
            self._deliver(op, payload)
        else:
            self._overflow_unexpected.setdefault(tag, deque()).append(payload)

    def _on_close_notice(self) -> None:
        peer_sent, peer_got = CLOSE_NOTICE.unpack(self._close_buffer)
        self._peer_sent = peer_sent
        self._peer_got_all = peer_got >= self.sent
        self._peer_closed_at = time.monotonic()

    def _after_peer_close(self) -> None:
        assert self._peer_sent is not None
        if self._sends and not self._peer_got_all and time.monotonic() - self._peer_closed_at > SEND_GRACE:
            raise PeerLostError(
                f"rank {self.peer} closed its MPI channel without receiving {len(self._sends)} pending "
                "message(s) from this rank",
                peer=self.peer,
            )
        if self.arrived < self._peer_sent or self._probed:
            return  # some of what the peer sent before closing is still on its way
        lost = PeerLostError(
            f"rank {self.peer} closed its MPI channel (it exited or closed its communicator)", peer=self.peer
        )
        if self._recvs or any(self._late.values()) or any(self._overflow_posted.values()):
            raise lost
        self._eof = lost

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._fail_intake(exc)
        for op in self._sends:
            op.request.error = exc
            _abandon(op.mpi, op.buffer, cancel=False)
        for op in self._recvs:
            op.request.error = exc
            _abandon(op.mpi, op.buffer, cancel=True)
        for queues in (self._overflow_posted, self._late):
            for queue in queues.values():
                for op in queue:
                    op.request.error = exc
        for _, buffer, request in self._probed:
            _abandon(request, buffer, cancel=False)
        self._sends, self._recvs = [], []
        self._overflow_posted.clear()
        self._late.clear()
        self._probed.clear()

    def _close_stream(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._peer_sent is None:
            _abandon(self._close_request, self._close_buffer, cancel=True)
            notice = CLOSE_NOTICE.pack(self.sent, self.arrived)
            try:
                request = self._comm.Isend([notice, self._mpi.BYTE], self.peer, self._tags.close_tag)
            except self._mpi.Exception as exc:
                logger.warning("MPI transport: telling rank %d that we close failed: %s", self.peer, exc)
            else:
                _abandon(request, notice, cancel=False)


class MpiTransport(Transport):
    """Channels to every other rank of an MPI communicator (see the module docstring).

    ``comm`` (keyword only): the mpi4py intracommunicator whose ranks are this job's
    ranks; by default the one of the MPIStore in ``store``, else ``MPI.COMM_WORLD``.
    Construction is collective over every rank of that communicator.
    """

    name = "mpi"

    def __init__(
        self,
        rank: int,
        size: int,
        peers: Sequence[int],
        store: Store,
        config: Config,
        timeout: float,
        *,
        comm: Any = None,
    ) -> None:
        MPI = import_mpi()  # noqa: N806
        self.MPI = MPI
        self.channels: dict[int, MpiChannel] = {}
        self._closed = False
        self._naps = Backoff(MIN_NAP, MAX_NAP)
        parent = comm if comm is not None else _comm_of_store(store)
        if parent is None:
            parent = _world_if_it_matches(MPI, rank, size)
        if parent == MPI.COMM_NULL or not isinstance(parent, MPI.Intracomm):
            raise InvalidArgumentError(f"comm: expected an mpi4py intracommunicator, got {parent!r}")
        if parent.Get_rank() != rank or parent.Get_size() != size:
            raise InvalidArgumentError(
                f"the MPI transport maps ranks one to one: this is rank {rank} of {size}, but rank "
                f"{parent.Get_rank()} of {parent.Get_size()} of the MPI communicator"
            )
        others = set(range(size)) - {rank}
        if set(peers) - {rank} != others:
            raise UnsupportedError(
                f"the MPI transport connects every rank of its MPI communicator; rank {rank} was asked "
                f"for ranks {sorted(set(peers))} only"
            )
        _reap_zombies()
        self.comm = _idup(MPI, parent, timeout)
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.comm.Set_name(f"collectives mpi transport (rank {rank}/{size})")
        self.tags = TagMap(self.comm.Get_attr(MPI.TAG_UB))
        if size > 1 and MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            logger.info(
                "MPI transport: the MPI library provides thread level %d, not MPI_THREAD_MULTIPLE; "
                "do not call MPI from another thread while an async collective runs",
                MPI.Query_thread(),
            )
        self.channels = {p: MpiChannel(self, p) for p in sorted(others)}

    def progress(self) -> bool:
        moved = super().progress()
        if moved:
            self._naps.reset()
        return moved

    def wait_for_activity(self, timeout: float, token: int | None = None) -> None:
        """Sleep a slice (growing while nothing happens): MPI has no descriptor to sleep
        on, and a blocking MPI wait would spin on a core another rank needs."""
        self._naps.sleep(timeout)

    def check_peers(self, peers: Iterable[int]) -> None:
        """Nothing to poll: MPI aborts the whole job when one of its processes dies."""
        return None

    def close(self) -> None:
        """Tell every peer we close and fail what is pending. Idempotent; not collective,
        so the MPI communicator is left allocated (see the module docstring)."""
        if self._closed:
            return
        self._closed = True
        for channel in self.channels.values():
            channel.close()
        _reap_zombies()


def _comm_of_store(store: Store | None) -> Any:
    """The MPI communicator of the MPIStore behind ``store`` (through PrefixStores), if any."""
    seen = 0
    while isinstance(store, PrefixStore) and seen < 64:
        store = store.store
        seen += 1
    return getattr(store, "mpi_comm", None)


def _world_if_it_matches(MPI: Any, rank: int, size: int) -> Any:  # noqa: N803
    world = MPI.COMM_WORLD
    if world.Get_size() == size and world.Get_rank() == rank:
        return world
    raise UnsupportedError(
        f"the MPI transport does not know which MPI communicator holds rank {rank} of {size} "
        f"(this process is rank {world.Get_rank()} of {world.Get_size()} in MPI.COMM_WORLD): "
        "create the communicator with collectives.from_mpi(mpi_comm, transport='mpi')"
    )


def _idup(MPI: Any, parent: Any, timeout: float) -> Any:  # noqa: N803
    """Duplicate ``parent`` without blocking inside MPI, bounded by ``timeout``."""
    if not hasattr(parent, "Idup"):  # older mpi4py: a blocking (unbounded) Dup
        return parent.Dup()
    comm, request = parent.Idup()
    deadline = time.monotonic() + timeout
    nap = MIN_NAP
    while not request.Test():
        if time.monotonic() >= deadline:
            _abandon(request, comm, cancel=False)
            raise RendezvousTimeoutError(
                f"MPI transport: not every rank of the MPI communicator ({parent.Get_size()} ranks) "
                f"created its transport within {timeout:g} s"
            )
        time.sleep(nap)
        nap = min(2 * nap, MAX_NAP)
    return comm


__all__ = ["MpiChannel", "MpiTransport", "TagMap", "import_mpi"]
