"""The transport interface: tagged, ordered, full-duplex messages to one peer.

A :class:`Transport` owns one :class:`Channel` per peer it serves (gloo's Context owning
Pairs). A channel turns ``isend``/``irecv`` of tagged messages into frames on a byte
stream that the concrete transport provides with two non-blocking calls,
``_write_some`` and ``_read_some``. Everything else lives here, once:

* framing: a 16-byte header ``(tag: u64, nbytes: u32, flags: u32)`` then the payload;
  messages larger than ``max_frame_bytes`` are split, the last frame flagged END, so that
  every length prefix read from a peer is bounded before anything is allocated;
* matching: a receive takes the next message with its tag, whether it arrived before the
  receive was posted (kept as an *unexpected* frame) or after (read straight into the
  receiver's buffer, no intermediate copy);
* size checks: a message that does not fill its receive exactly raises
  :class:`MessageMismatchError` instead of returning truncated or mixed data.

Progress is explicit (MPI style): nothing moves unless someone calls ``progress()``. The
waiting loop in :mod:`collectives.transports.progress` does, and sleeps through
``Transport.wait_for_activity`` when nothing moves. Transports know nothing of
collectives; algorithms know only this interface.

One thread drives a channel at a time. Another thread may still *post* to it:
``post_send``/``post_recv`` queue the request on an intake that the driving thread takes,
in posting order, at its next ``progress()`` (point-to-point calls are posted from the
caller's thread while a collective may be driving the channels). ``probe`` tells whether a
message of a tag has begun arriving with no receive posted for it (receives from any
source).
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..errors import MessageMismatchError, PeerLostError, TransportError
from ..steps import STEP_BYTES
from .frames import CONTROL, FLAG_END, HEADER, HEADER_SIZE, NO_VIEW, PLAIN, SINGLE_COPY, RecvOp, Request, SendOp, Sink
from .single_copy import CONTROL_FLAGS, FLAG_RTS, RTS, Remote, SingleCopy, SingleCopyChannel

if TYPE_CHECKING:  # annotations only
    from ..config import Config
    from ..store.base import Store

__all__ = ["FLAG_END", "HEADER", "HEADER_SIZE", "Channel", "Request", "Sink", "Transport", "as_bytes_view"]

FEED_BYTES = 256 << 10
"""The bounce buffer through which a channel hands a sink the bytes it reads (``_feed_some``),
where the transport cannot lend its own: small enough to stay in the cache for the sink."""


def as_bytes_view(buf: object) -> memoryview:
    """A flat unsigned-byte view of ``buf`` (any C-contiguous buffer), without copying."""
    if isinstance(buf, np.ndarray):
        try:
            # ``.data`` is ``memoryview(buf)``; numpy's stubs type ndarray as a buffer only on 3.12+
            return buf.data.cast("B")  # a quarter of the cost of the view below
        except (ValueError, TypeError):
            # numpy cannot export every dtype through the buffer protocol (bfloat16 cannot)
            return buf.reshape(-1).view(np.uint8).data
    view = buf if isinstance(buf, memoryview) else memoryview(buf)  # type: ignore[arg-type]
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class Channel(SingleCopyChannel, abc.ABC):
    """Messages to and from one peer. Not thread-safe: one thread drives a channel."""

    def __init__(self, peer: int, *, max_frame_bytes: int = 64 << 20) -> None:
        self.peer = peer
        self.max_frame_bytes = max_frame_bytes
        self.error: BaseException | None = None
        self._sendq: deque[SendOp] = deque()
        self._posted: dict[int, deque[RecvOp]] = {}
        self._unexpected: dict[int, deque[tuple[bytearray | Remote, bool]]] = {}
        # requests posted from other threads, taken in order by the driving thread
        self._intake: deque[tuple[Request, memoryview, bool]] = deque()  # (.., .., single copy)
        # single-copy messages (single_copy.py): None where the transport offers none
        self.single_copy: SingleCopy | None = None
        self._awaiting: dict[int, SendOp] = {}  # RTS written, by id, till the receiver answers
        self._remote_held = 0  # Remote entries among the unexpected messages
        self._rts_payload = bytearray(RTS.size)
        self._rx_rts = False  # the frame being read is an RTS
        # receive state machine: header bytes, then the payload of the current frame
        self._rx_header = bytearray(HEADER_SIZE)
        self._rx_header_view = memoryview(self._rx_header)
        self._rx_have = 0
        self._rx_target: memoryview | None = None
        self._rx_got = 0
        self._rx_tag = 0
        self._rx_end = False
        self._rx_op: RecvOp | None = None
        self._rx_buffer: bytearray | None = None
        self._rx_deferred: tuple[int, int, int] | None = None  # a header held back one call
        self._rx_sink: Sink | None = None  # the frame being read goes to a sink ...
        self._rx_size = 0  # ... this many bytes of it (its target is then empty)
        self._bounce: memoryview | None = None  # what _feed_some reads through, and
        self._bounce_have = 0  # how much of it waits for the sink
        # payload bytes that arrived before their receive was posted (each costs one
        # extra copy): a measure of how well the algorithms keep receives posted ahead
        self.unexpected_bytes = 0
        # the peer ended its stream between frames: not an error until we need it
        self._eof: PeerLostError | None = None

    # -- the byte stream a concrete transport provides ------------------------------------

    @abc.abstractmethod
    def _write_some(self, views: Sequence[memoryview]) -> int:
        """Write a prefix of the concatenation of ``views`` without blocking; return how
        many bytes went out (0 when the stream is full). Raise PeerLostError if the peer
        is gone."""

    @abc.abstractmethod
    def _read_some(self, into: memoryview) -> int:
        """Read up to ``len(into)`` bytes without blocking; return how many (0 when none is
        available). Raise PeerLostError at end of stream."""

    def _close_stream(self) -> None:
        """Release the stream (socket, mapping); called once by ``close``."""

    # -- public ---------------------------------------------------------------------------

    @property
    def mid_frame(self) -> bool:
        """Whether a frame is partly read (header bytes, a held-back header, or payload):
        the stream ending now would lose it."""
        return self._rx_have > 0 or self._rx_target is not None or self._rx_deferred is not None

    @property
    def busy(self) -> bool:
        """Whether sends or receives are outstanding on this channel."""
        return bool(self._sendq) or bool(self._intake) or any(self._posted.values()) or bool(self._awaiting)

    def isend(self, data: object, tag: int) -> Request:
        """Queue ``data`` (any contiguous buffer, kept referenced, not copied) to the peer."""
        self._check_usable()
        view = as_bytes_view(data)
        request = Request(self, "send", tag, len(view))
        self._start_send(request, view)
        return request

    def _start_send(self, request: Request, view: memoryview) -> None:
        """Put a send on its way (a message transport overrides this and ``_start_recv``)."""
        self._sendq.append(SendOp(request, self._frames(request.tag, view)))
        self._progress_send()

    def _frames(self, tag: int, view: memoryview) -> deque[memoryview]:
        """The frames of a message: headers and slices of ``view``, the last flagged END."""
        views: deque[memoryview] = deque()
        offset = 0
        while True:
            frame = view[offset : offset + self.max_frame_bytes]
            offset += len(frame)
            last = offset >= len(view)
            views.append(memoryview(HEADER.pack(tag, len(frame), FLAG_END if last else 0)))
            if len(frame):
                views.append(frame)
            if last:
                break
        return views

    def irecv(self, out: object, tag: int) -> Request:
        """Post a receive of the next message tagged ``tag`` into ``out`` (writable,
        contiguous); the message must have exactly ``len(out)`` bytes."""
        view, request = self._new_recv(out, tag)
        self._start_recv(request, view)
        return request

    def _start_recv(self, request: Request, view: memoryview) -> None:
        self._post(RecvOp(request, view))

    def _post(self, op: RecvOp) -> None:
        tag = op.request.tag
        self._posted.setdefault(tag, deque()).append(op)
        self._deliver_unexpected(tag)
        if self._eof is not None and not op.request.done:
            self._fail(self._eof)

    @property
    def takes_sinks(self) -> bool:
        """Whether ``irecv_sink`` may be called: not on a channel whose receives match other than
        on this byte stream (a message transport's, as MPI's, overriding ``_start_recv``)."""
        return type(self)._start_recv is Channel._start_recv

    def irecv_sink(self, sink: Sink, nbytes: int, tag: int) -> Request:
        """Post a receive of the next message tagged ``tag``, of exactly ``nbytes``, whose bytes
        are handed to ``sink`` in order as they are read (``takes_sinks`` channels only): the
        receiver uses them where they arrive instead of a buffer they are first copied into."""
        self._check_usable()
        request = Request(self, "recv", tag, nbytes)
        self._post(RecvOp(request, NO_VIEW, sink))
        return request

    def post_send(self, data: object, tag: int, *, single_copy: bool = False) -> Request:
        """``isend`` from any thread: queued on the intake, sent from the next ``progress``.
        ``single_copy``: the receiver may copy a large message straight from ``data``
        (single_copy.py), which stays referenced and unchanged until the request is done."""
        self._check_usable()
        view = as_bytes_view(data)
        request = Request(self, "send", tag, len(view))
        self._intake.append((request, view, single_copy))
        return request

    def post_recv(self, out: object, tag: int) -> Request:
        """``irecv`` from any thread: queued on the intake, posted at the next ``progress``
        (in order with the other posts, so messages of one tag still match in order)."""
        view, request = self._new_recv(out, tag)
        self._intake.append((request, view, False))
        return request

    def probe(self, tag: int) -> bool:
        """Whether a message tagged ``tag`` has begun arriving and no receive posted here
        waits for it (call from the driving thread): a receive posted now takes it."""
        self._take_intake()
        if self._posted.get(tag):
            return False
        if tag in self._unexpected or (self._rx_deferred is not None and self._rx_deferred[0] == tag):
            return True
        return self._rx_target is not None and self._rx_op is None and self._rx_tag == tag

    def _take_intake(self) -> None:
        """Post what other threads queued, in their order (the driving thread)."""
        intake = self._intake
        while intake:
            request, view, single_copy = intake.popleft()
            if self.error is not None:
                request.error = self.error
            else:
                try:
                    if request.kind != "send":
                        self._start_recv(request, view)
                    elif single_copy and self.single_copy is not None and self.single_copy.takes(len(view)):
                        self._start_single_copy(request, view)
                    else:
                        self._start_send(request, view)
                except TransportError as exc:  # the channel failed: every request knows
                    request.error = request.error or exc

    def _new_recv(self, out: object, tag: int) -> tuple[memoryview, Request]:
        """Check a receive's buffer and make its request (shared by every channel kind)."""
        self._check_usable()
        view = as_bytes_view(out)
        if view.readonly:
            raise TransportError("irecv: the output buffer is read-only", peer=self.peer)
        return view, Request(self, "recv", tag, len(view))

    def progress(self) -> bool:
        """Move whatever can move without blocking; return whether anything moved."""
        if self.error is not None:
            return False
        try:
            if self._intake:
                self._take_intake()
            moved = self._progress_send()
            moved = self._progress_recv() or moved
            if self._remote_held and not moved:
                moved = self._copy_held()  # nothing else to do: free the senders waiting on them
        except TransportError as exc:
            self._fail(exc)
            raise
        return moved

    def close(self) -> None:
        """Close the stream; pending requests fail with PeerLostError."""
        if self.error is None:
            self._fail(PeerLostError(f"channel to rank {self.peer} was closed", peer=self.peer))
        self._close_stream()

    # -- internals ------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self.error is not None:
            raise self.error

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._fail_intake(exc)
        for op in (*self._sendq, *self._awaiting.values()):
            if op.request is not None:
                op.request.error = exc
        for ops in self._posted.values():
            for rop in ops:
                rop.request.error = exc
        self._sendq.clear()
        self._awaiting.clear()
        self._posted.clear()

    def _fail_intake(self, exc: BaseException) -> None:
        while self._intake:
            self._intake.popleft()[0].error = exc

    def _progress_send(self) -> bool:
        moved = False
        sendq = self._sendq
        while sendq:
            op = sendq[0]
            if op.stalled:  # only answers to the peer's RTS may pass a first RTS awaiting its own
                behind = next((o for o in sendq if o.kind == CONTROL), None)
                if behind is None:
                    break
                sendq.remove(behind)
                sendq.appendleft(behind)
                continue
            views = op.views
            n = self._write_some(views)
            if n == 0:
                break
            moved = True
            op.begun = True
            while n:
                head = views[0]
                if n >= len(head):
                    n -= len(head)
                    views.popleft()
                else:
                    views[0] = head[n:]
                    n = 0
            if views:
                break
            if op.kind == SINGLE_COPY and self.single_copy is not None and self.single_copy.asking:
                op.stalled = True  # the channel's first: hold the stream till the answer
                continue
            if op.kind == PLAIN:
                assert op.request is not None
                op.request.done = True
            sendq.popleft()
        return moved

    def _progress_recv(self) -> bool:
        if self._eof is not None:
            if self._posted:
                raise self._eof
            return False
        moved = False
        if self._rx_deferred is not None:
            header, self._rx_deferred = self._rx_deferred, None
            self._start_frame(*header)  # now into a posted receive, else kept as unexpected
            moved = True
        while True:
            if self._rx_target is None:
                try:
                    n = self._read_some(self._rx_header_view[self._rx_have :])
                except PeerLostError as exc:
                    if self._rx_have or self._posted:
                        raise
                    # A clean end between frames: the peer closed after its last message.
                    # Only a receive that still needs this peer turns it into an error.
                    self._eof = exc
                    return moved
                if n == 0:
                    return moved
                moved = True
                self._rx_have += n
                if self._rx_have < HEADER_SIZE:
                    continue
                self._rx_have = 0
                header = HEADER.unpack(self._rx_header)
                if header[2] & (CONTROL_FLAGS | FLAG_RTS):
                    self._start_single_copy_frame(*header)
                    continue
                if header[1] and not self._posted.get(header[0]):
                    # Nothing is posted for this frame yet: hold it back for one call, so
                    # that the caller, whose request just completed, can post the receive
                    # and the payload lands there instead of in an unexpected copy.
                    self._rx_deferred = header
                    return True
                self._start_frame(*header)
            else:
                sink = self._rx_sink
                size = len(self._rx_target) if sink is None else self._rx_size
                want = size - self._rx_got
                if want:
                    n = self._read_some(self._rx_target[self._rx_got :]) if sink is None else self._feed_some(sink, want)
                    if n == 0:
                        return moved
                    moved = True
                    self._rx_got += n
                if self._rx_got == size:
                    self._finish_frame()

    def _feed_some(self, sink: Sink, want: int) -> int:
        """Read up to ``want`` bytes of the frame being read (``want`` ends it) for ``sink``; return
        how many (0 when none is available). Here through a bounce buffer of ``FEED_BYTES``, handed
        over when full or at the frame's end; a transport whose bytes can be lent in place overrides
        this."""
        bounce = self._bounce
        if bounce is None:
            bounce = self._bounce = memoryview(bytearray(FEED_BYTES))
        have = self._bounce_have
        n = self._read_some(bounce[have : have + min(want, FEED_BYTES - have)])
        have += n
        if have and (have == FEED_BYTES or n == want):
            sink.feed(bounce[:have])
            have = 0
        self._bounce_have = have
        return n

    def _start_frame(self, tag: int, nbytes: int, flags: int) -> None:
        if nbytes > self.max_frame_bytes:
            raise MessageMismatchError(
                f"rank {self.peer} sent a frame of {nbytes} bytes, over the {self.max_frame_bytes}-byte "
                "frame limit (corrupt stream or mismatched COLLECTIVES_MAX_FRAME_BYTES)",
                peer=self.peer,
            )
        self._rx_tag = tag
        self._rx_end = bool(flags & FLAG_END)
        self._rx_got = 0
        posted = self._posted.get(tag)
        if posted:
            op = posted[0]
            self._check_fits(op, nbytes, self._rx_end)
            self._rx_op = op
            if op.sink is not None:
                self._rx_sink, self._rx_size, self._rx_target = op.sink, nbytes, NO_VIEW
            else:
                self._rx_target = op.view[op.filled : op.filled + nbytes]
        else:
            self._rx_op = None
            self.unexpected_bytes += nbytes
            self._rx_buffer = bytearray(nbytes)
            self._rx_target = memoryview(self._rx_buffer)

    def _finish_frame(self) -> None:
        if self._rx_rts:
            self._rx_rts = False
            self._rx_target = None
            self._take_rts(self._rx_tag)
            return
        tag, end, op = self._rx_tag, self._rx_end, self._rx_op
        nbytes = self._rx_size if self._rx_sink is not None else len(self._rx_target) if self._rx_target is not None else 0
        self._rx_sink = None
        self._rx_target = None
        self._rx_op = None
        if op is not None:
            op.filled += nbytes
            if end:
                self._complete_recv(tag)
        else:
            assert self._rx_buffer is not None
            self._unexpected.setdefault(tag, deque()).append((self._rx_buffer, end))
            self._rx_buffer = None
            self._deliver_unexpected(tag)

    def _check_fits(self, op: RecvOp, nbytes: int, end: bool) -> None:
        room = op.request.nbytes - op.filled
        if nbytes > room or (end and nbytes != room) or (not end and nbytes == room and room):
            got = "at least " + str(op.filled + nbytes + 1) if not end else str(op.filled + nbytes)
            raise MessageMismatchError(
                f"message tag {op.request.tag:#x} from rank {self.peer} has {got} bytes but the "
                f"receive posted for it has room for exactly {op.request.nbytes} (ranks disagree on the size)",
                peer=self.peer,
            )

    def _fetch_into(self, op: RecvOp, remote: Remote) -> bool:
        """``_fetch`` of the whole message ``remote`` for the receive ``op`` (into its view, or
        into a buffer handed to its sink); whether it came."""
        if op.sink is None:
            return self._fetch(remote, op.view[op.filled : op.filled + remote.nbytes])
        held = memoryview(bytearray(remote.nbytes))
        if not self._fetch(remote, held):
            return False
        op.sink.feed(held)
        return True

    def _complete_recv(self, tag: int) -> None:
        posted = self._posted[tag]
        posted.popleft().request.done = True
        if not posted:
            del self._posted[tag]

    def _deliver_unexpected(self, tag: int) -> None:
        frames = self._unexpected.get(tag)
        while frames and self._posted.get(tag):
            op = self._posted[tag][0]
            data, end = frames.popleft()
            try:
                self._check_fits(op, len(data), end)
            except MessageMismatchError as exc:
                self._fail(exc)
                raise
            if isinstance(data, Remote):
                self._remote_held -= 1
                if not self._fetch_into(op, data):
                    break  # refused: its bytes follow in frames, into this receive
                op.filled += data.nbytes
                self._complete_recv(tag)
                continue
            if op.sink is not None:
                op.sink.feed(memoryview(data))
            else:
                op.view[op.filled : op.filled + len(data)] = data
            op.filled += len(data)
            if end:
                self._complete_recv(tag)
        if frames is not None and not frames:
            del self._unexpected[tag]


class Transport(abc.ABC):
    """Connections of one kind (shm, tcp, ...) from this rank to a set of peers.

    Constructing a transport is collective over this rank and ``peers``: each of them
    constructs its own with the same store, and the constructor returns once every channel
    is connected (or raises ConnectError / RendezvousTimeoutError).

    Every transport takes the constructor signature declared below, so a caller can build
    any of them from its class alone.
    """

    name: ClassVar[str]
    # Read-only here, so each transport may hold its own channel class (dict[int, TcpChannel]).
    channels: Mapping[int, Channel]
    # The pipelining step of its calls, by collective and size, is one rule that the tuner
    # prices too (``collectives.steps``); these two describe it for this transport's name.
    chunk_bytes: ClassVar[int] = STEP_BYTES
    # (from, chunk): an all-reduce of at least ``from`` bytes steps in ``chunk``; None: never
    large_chunk: ClassVar[tuple[int, int] | None] = None
    # Whether this transport can map its peers' memory as shared windows (the direct and
    # small-message engines need it between every pair of ranks).
    offers_windows: ClassVar[bool] = False

    @abc.abstractmethod
    def __init__(
        self, rank: int, size: int, peers: Sequence[int], store: Store, config: Config, timeout: float
    ) -> None:
        """Connect to every rank in ``peers`` (collective over them) within ``timeout`` seconds."""

    def progress(self) -> bool:
        """Progress every channel; return whether anything moved."""
        moved = False
        for channel in self.channels.values():
            if channel.progress():
                moved = True
        return moved

    def activity_token(self) -> int | None:
        """A snapshot of this transport's wake-up counter, taken *before* a last progress
        attempt; ``wait_for_activity`` returns at once if the counter moved since (no lost
        wake-ups). Transports whose waits are level-triggered (sockets) return None."""
        return None

    @abc.abstractmethod
    def wait_for_activity(self, timeout: float, token: int | None = None) -> None:
        """Block for at most ``timeout`` seconds until some channel may be able to progress
        (bytes arrived, or room freed for a pending send), or until the wake-up counter
        differs from ``token``. Spurious returns are allowed."""

    def check_peers(self, peers: Iterable[int]) -> None:
        """Raise PeerLostError if any of ``peers`` is known to be gone (e.g. process died)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every channel and release OS resources. Idempotent."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} peers={sorted(self.channels)}>"
