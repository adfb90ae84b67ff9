"""Single-copy messages between two processes of one host: what MPI libraries call a
rendezvous over cross-memory attach.

A large point-to-point send puts only where its bytes lie on the stream: a *ready to send*
frame (flag RTS, payload: address, size and the message's id). The receiver copies the bytes
straight out of the sender's memory into the receive buffer (``process_vm_readv``, see
cma.py), once, instead of through the ring (a copy in, a copy out), and answers TAKEN, which
finishes the send: until then the sender's buffer must stay as it is, as for any send not yet
finished.

Whether the kernel lets the receiver read is learned from the first such message of a
channel: the sender holds every later frame behind that RTS until the answer, so that, on
REFUSED, the bytes follow in ordinary frames exactly where the message stood; the channel then
never offers again. A later read that fails is an error of the channel (the sender died, or
its memory is gone).

An RTS that arrives with no receive posted for it is held among the unexpected messages (a
:class:`Remote`) and copied once one is posted, or into a buffer of its own when a
``progress`` of the channel finds nothing else to move: at once where this side awaits the
answer to an RTS of its own to the same peer (two ranks whose sends precede their receives),
else once the RTS has waited ``HOLD_SECONDS`` (a longer cycle of such ranks; a rank that runs
a call ahead of its receiver's). A receiver that drives its channels never leaves a sender
waiting for long, so a program whose sends precede its receives on every side still runs. A receiver that drives nothing (computing, or inside a shared-window collective)
leaves a blocking send waiting, as MPI's rendezvous does.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np

from ..buffers import address_of
from ..errors import MessageMismatchError, PeerLostError, TransportError
from . import cma
from .frames import CONTROL, HEADER, PLAIN, SINGLE_COPY, RecvOp, Request, SendOp

if TYPE_CHECKING:
    from .base import Channel

FLAG_RTS = 2
"""The frame's payload says where a message lies in the sender's memory (``RTS``)."""
FLAG_TAKEN = 4
"""A control frame, header only, its tag the id of a message the receiver copied."""
FLAG_REFUSED = 8
"""A control frame: the receiver could not read the message of this id; its bytes follow."""
CONTROL_FLAGS = FLAG_TAKEN | FLAG_REFUSED

RTS = struct.Struct("<QQQ")  # address, size in bytes, id

HOLD_SECONDS = 20e-3
"""How long an RTS with no receive posted waits for one, while the receiver awaits no answer
from that peer, before its bytes are copied into a buffer of their own (two copies then, as
through the ring, but the sender is free). Long enough for a receiver a call behind on an
oversubscribed host (docs/performance.md, "Thresholds")."""

SINGLE_COPY_BYTES = (1 << 20) + 1
"""Smallest message sent this way: just over the express lane's largest (engines/express.py),
which moves a message in one call through the ring where it can (docs/performance.md,
"Thresholds")."""


class Remote:
    """A message still in the sender's memory: its RTS arrived before a receive for it."""

    __slots__ = ("address", "nbytes", "id", "until")

    def __init__(self, address: int, nbytes: int, id_: int) -> None:
        self.address = address
        self.nbytes = nbytes
        self.id = id_
        self.until = time.monotonic() + HOLD_SECONDS  # then copied into a buffer of its own

    def __len__(self) -> int:
        return self.nbytes


class SingleCopy:
    """One channel's side of the protocol (see the module doc): which sends it offers this
    way, and the copies out of the peer ``pid``'s memory.

    ``offer``: whether this side sends large messages this way (cross-memory copies allowed by
    the configuration, and the peer's pid meaningful here); ``read``: whether it may read the
    peer's memory when asked (else it answers REFUSED); ``gone``: whether the peer has left
    (closed or aborted its transport), after which its memory is no longer the message's."""

    def __init__(self, peer: int, pid: int, *, offer: bool, read: bool, gone: Callable[[], bool],
                 min_bytes: int = SINGLE_COPY_BYTES) -> None:
        self.peer = peer
        self.pid = pid
        self.gone = gone
        self.min_bytes = min_bytes
        self.ask_bytes = min_bytes  # a message this large may ask while the answer is unknown
        self.offers: bool | None = None if offer else False  # None: not yet known (the first RTS asks)
        self.reads: bool | None = None if read else False  # None: not yet tried
        self._next_id = 0
        self._allowed = False

    # -- the sender ------------------------------------------------------------------------

    def takes(self, nbytes: int) -> bool:
        """Whether a send of ``nbytes`` goes this way."""
        if self.offers is None:  # the first RTS asks
            return nbytes >= min(self.min_bytes, self.ask_bytes)
        return self.offers and nbytes >= self.min_bytes

    def rts(self, tag: int, data: memoryview) -> tuple[int, bytes]:
        """The id and the RTS frame (header, then payload) of a send of ``data``."""
        if not self._allowed:
            cma.allow_peers()  # under Yama's ptrace_scope=1, the peer may read us only once named
            self._allowed = True
        id_ = self._next_id
        self._next_id += 1
        address = address_of(np.frombuffer(data, dtype=np.uint8))
        return id_, HEADER.pack(tag, RTS.size, FLAG_RTS) + RTS.pack(address, len(data), id_)

    @property
    def asking(self) -> bool:
        """Whether an RTS sent now is the channel's first: the sender holds its stream until
        the answer."""
        return self.offers is None

    def answered(self, taken: bool) -> None:
        """The receiver answered an RTS: reads work (TAKEN) or never will (REFUSED)."""
        if self.offers is None or not taken:
            self.offers = taken

    # -- the receiver ----------------------------------------------------------------------

    @staticmethod
    def remote(payload: bytes | bytearray | memoryview) -> Remote:
        return Remote(*RTS.unpack(payload))

    def fetch(self, remote: Remote, into: memoryview) -> bool:
        """Copy ``remote`` into ``into``; whether it worked. False only where the first read of
        the channel was refused (the sender then sends the bytes in frames).

        Raises:
            PeerLostError: the sender is gone.
            TransportError: a read failed after reads had worked on this channel.
        """
        if self.reads is False:
            return False
        try:
            cma.read(self.pid, remote.address, np.frombuffer(into, dtype=np.uint8), self.peer)
        except PeerLostError:
            raise
        except TransportError:
            if self.reads:
                raise
            self.reads = False
            return False
        if self.gone():  # it may have reused the buffer while we read: the bytes are not its message
            raise PeerLostError(f"rank {self.peer} left before its message was taken", peer=self.peer)
        self.reads = True
        return True

    @staticmethod
    def answer(id_: int, taken: bool) -> bytes:
        """The control frame answering the RTS of message ``id_``."""
        return HEADER.pack(id_, 0, FLAG_TAKEN if taken else FLAG_REFUSED)


class SingleCopyChannel:
    """A channel's side of the protocol: its frames and queues (mixed into transports/base.py's
    ``Channel``, whose state it uses; ``single_copy`` None where the transport offers none)."""

    if TYPE_CHECKING:  # what it uses of Channel
        peer: int
        single_copy: SingleCopy | None
        unexpected_bytes: int
        _sendq: deque[SendOp]
        _awaiting: dict[int, SendOp]
        _posted: dict[int, deque[RecvOp]]
        _unexpected: dict[int, deque[tuple[bytearray | Remote, bool]]]
        _remote_held: int
        _rts_payload: bytearray
        _rx_rts: bool
        _rx_tag: int
        _rx_got: int
        _rx_op: RecvOp | None
        _rx_target: memoryview | None

        def _progress_send(self) -> bool: ...
        def _frames(self, tag: int, view: memoryview) -> deque[memoryview]: ...
        def _check_fits(self, op: RecvOp, nbytes: int, end: bool) -> None: ...
        def _complete_recv(self, tag: int) -> None: ...
        def _fetch_into(self, op: RecvOp, remote: Remote) -> bool: ...

    def _start_single_copy(self, request: Request, view: memoryview) -> None:
        """Send only where ``view`` lies (an RTS): the receiver copies it from our memory."""
        assert self.single_copy is not None
        id_, frame = self.single_copy.rts(request.tag, view)
        op = SendOp(request, deque([memoryview(frame)]), SINGLE_COPY)
        op.data, op.id = view, id_
        self._awaiting[id_] = op
        self._sendq.append(op)
        self._progress_send()

    def _adopt_rts(self, data: np.ndarray | bytearray, nbytes: int, tag: int, id_: int) -> Request:
        """The request of a send whose RTS (message ``id_``, the first ``nbytes`` of ``data``) was
        written past this channel (engines/_express_c.c): done at the peer's answer, as one sent
        here."""
        view = (memoryview(data) if isinstance(data, bytearray) else data.data).cast("B")[:nbytes]
        request = Request(cast("Channel", self), "send", tag, len(view))
        op = SendOp(request, deque(), SINGLE_COPY)
        op.data, op.id = view, id_
        self._awaiting[id_] = op
        return request

    def _held_rts(self, tag: int) -> Remote | None:
        """The RTS first among the messages of ``tag`` held for want of a receive, if the first
        is one (engines/_express_c.c copies it, then drops it with ``_drop_held_rts``)."""
        data = self._unexpected[tag][0][0]
        return data if isinstance(data, Remote) else None

    def _drop_held_rts(self, tag: int) -> None:
        """Forget the RTS ``_held_rts`` gave: its message was copied and answered."""
        frames = self._unexpected[tag]
        frames.popleft()
        if not frames:
            del self._unexpected[tag]
        self._remote_held -= 1

    def _send_control(self, frame: bytes) -> None:
        """Queue an answer to the peer where it may go (between whole frames, before any
        send not yet begun) and write what can go now."""
        op = SendOp(None, deque([memoryview(frame)]), CONTROL)
        sendq = self._sendq
        if sendq and sendq[0].begun and not sendq[0].stalled:
            sendq.insert(1, op)
        else:
            sendq.appendleft(op)
        self._progress_send()

    def _start_single_copy_frame(self, tag: int, nbytes: int, flags: int) -> None:
        """A header of the single-copy protocol: an answer to one of our RTS, handled now,
        or an RTS, whose payload is read next."""
        if self.single_copy is None or (flags & FLAG_RTS and nbytes != RTS.size) or (flags & CONTROL_FLAGS and nbytes):
            raise MessageMismatchError(
                f"rank {self.peer} sent a frame with flags {flags:#x} and {nbytes} bytes, which this "
                "channel does not take (a corrupt stream, or ranks of different versions)", peer=self.peer)
        if flags & FLAG_RTS:
            self._rx_rts = True
            self._rx_tag, self._rx_got, self._rx_op = tag, 0, None
            self._rx_target = memoryview(self._rts_payload)
            return
        op = self._awaiting.pop(tag, None)
        if op is None:
            raise TransportError(f"rank {self.peer} answered message id {tag}, which no send awaits", peer=self.peer)
        taken = bool(flags & FLAG_TAKEN)
        self.single_copy.answered(taken)
        if op.stalled:
            op.stalled = False
            self._sendq.remove(op)
        if taken:
            assert op.request is not None
            op.request.done = True
            op.data = None
        else:  # the bytes follow in frames, and so do those of every RTS not yet written
            first = [op] + [o for o in self._sendq if o.kind == SINGLE_COPY]
            for o in first:
                assert o.request is not None and o.data is not None
                self._awaiting.pop(o.id, None)
                o.kind, o.views, o.data, o.begun = PLAIN, self._frames(o.request.tag, o.data), None, False
            self._sendq.appendleft(op)
        self._progress_send()

    def _take_rts(self, tag: int) -> None:
        """An RTS has arrived: copy it into the receive posted for it, else hold it."""
        remote = SingleCopy.remote(self._rts_payload)
        posted = self._posted.get(tag)
        if not posted:
            self._unexpected.setdefault(tag, deque()).append((remote, True))
            self._remote_held += 1
            return
        op = posted[0]
        self._check_fits(op, remote.nbytes, True)
        if self._fetch_into(op, remote):
            op.filled += remote.nbytes
            self._complete_recv(tag)

    def _fetch(self, remote: Remote, into: memoryview) -> bool:
        """Copy ``remote`` out of the peer's memory and answer it; whether it came (else its
        bytes follow in frames)."""
        assert self.single_copy is not None
        taken = self.single_copy.fetch(remote, into)
        self._send_control(SingleCopy.answer(remote.id, taken))
        return taken

    def _copy_held(self) -> bool:
        """Copy every RTS held past its time into a buffer of its own (all of them where this
        side awaits an answer of the peer's: see the module doc); whether any was."""
        now = float("inf") if self._awaiting else time.monotonic()
        copied = False
        for tag, frames in list(self._unexpected.items()):
            for i, (data, end) in enumerate(frames):
                if not isinstance(data, Remote) or data.until > now:
                    continue
                copied = True
                self._remote_held -= 1
                buffer = bytearray(data.nbytes)
                if self._fetch(data, memoryview(buffer)):
                    frames[i] = (buffer, end)
                    self.unexpected_bytes += data.nbytes
                else:  # refused: the last of the stream; its bytes follow in frames
                    del frames[i]
                    if not frames:
                        del self._unexpected[tag]
                    break
        return copied
