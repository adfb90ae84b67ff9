"""The wire format of a channel's byte stream and the operations on their way through it.

Every frame is a 16-byte header ``(tag: u64, nbytes: u32, flags: u32)`` then ``nbytes`` of
payload. A message is one or more frames of its tag, the last flagged END; the flags of the
single-copy protocol (single_copy.py) mark frames that are not a message's bytes.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only
    from .base import Channel

HEADER = struct.Struct("<QII")
HEADER_SIZE = HEADER.size
FLAG_END = 1


class Request:
    """One posted send or receive. ``done`` turns true once the bytes have been handed
    to the stream (send) or have all landed in the buffer (receive)."""

    __slots__ = ("channel", "kind", "tag", "nbytes", "done", "error")

    def __init__(self, channel: Channel, kind: str, tag: int, nbytes: int) -> None:
        self.channel = channel
        self.kind = kind
        self.tag = tag
        self.nbytes = nbytes
        self.done = False
        self.error: BaseException | None = None

    @property
    def peer(self) -> int:
        return self.channel.peer

    def test(self) -> bool:
        """Whether the request finished; raises the error that ended it, if any."""
        if self.error is not None:
            raise self.error
        return self.done

    def __repr__(self) -> str:
        state = "done" if self.done else ("failed" if self.error else "pending")
        return f"<Request {self.kind} peer={self.peer} tag={self.tag:#x} {self.nbytes} B {state}>"


PLAIN, SINGLE_COPY, CONTROL = 0, 1, 2  # kinds of _SendOp


class SendOp:
    """Frames on their way out. ``kind``: PLAIN (the request is done once written),
    SINGLE_COPY (an RTS: done once the receiver answers TAKEN; ``data`` kept referenced till
    then), CONTROL (an answer to the peer's RTS, no request of its own)."""

    __slots__ = ("request", "views", "kind", "data", "id", "begun", "stalled")

    def __init__(self, request: Request | None, views: deque[memoryview], kind: int = PLAIN) -> None:
        self.request = request
        self.views = views
        self.kind = kind
        self.data: memoryview | None = None
        self.id = -1
        self.begun = False  # bytes of it went out: nothing may go before the rest
        self.stalled = False  # a first RTS, written: the stream waits for its answer


class Sink(Protocol):
    """Where a receive's bytes go when they land in no buffer: handed over in order, piece by
    piece, as the channel reads them (a reducing receive folds each piece straight into its
    destination: engines/fold_sink.py). A piece is lent for the call only."""

    def feed(self, data: memoryview) -> None: ...


NO_VIEW = memoryview(b"")
"""The view of a receive into a sink (it has none)."""


class RecvOp:
    """A posted receive: into ``view``, or, with ``sink``, handed to it (``view`` then empty)."""

    __slots__ = ("request", "view", "filled", "sink")

    def __init__(self, request: Request, view: memoryview, sink: Sink | None = None) -> None:
        self.request = request
        self.view = view
        self.filled = 0
        self.sink = sink
