"""Point-to-point for the torch backend: non-blocking isend/irecv, any-source receives.

torch's point-to-point calls must not block when issued (``irecv`` before ``isend`` on
both ranks is a common pattern), messages match in order per (source, destination, tag),
and ``recv(src=None)`` takes a message from whichever rank sends one. A Communicator runs
one operation at a time, so point-to-point gets its own communicator, driven here by one
progress thread through the public Channel interface (``isend``/``irecv``/``progress``):

* a send is two messages on the pair's channel: a 16-byte header ``(tag, nbytes)`` on the
  header tag, then the payload on a tag derived from the user's tag;
* every peer always has one header receive posted while there is work; arrived headers are
  matched, in arrival order, with the receives the user posted (in posting order), and only
  then is the payload receive posted, straight into the user's buffer;
* a receive from this rank itself is matched with a copy taken when that send was issued.

The thread sleeps on a condition variable while there is nothing to do; while there is, it
progresses the channels and sleeps on the transports' own wake-ups (at most 1 ms, or 5 ms
once nothing has moved for 50 ms, so that new requests are picked up promptly).
"""

from __future__ import annotations

import logging

import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ..communicator import Communicator
from ..errors import PeerLostError, TransportError
from ..transports.base import Channel, Request

logger = logging.getLogger("collectives")

HEADER = struct.Struct("<qQ")
HEADER_TAG = 1 << 40
DATA_TAG = 1 << 41
SLEEP_SLICE = 1e-3
LONG_IDLE = 0.05
LONG_SLEEP_SLICE = 5e-3
SPIN_SECONDS = 20e-6
CHECK_PEERS_EVERY = 0.05


def data_tag(tag: int) -> int:
    return DATA_TAG | (tag & 0xFFFFFFFF)


Finisher = Callable[[BaseException | None, int | None], None]


class _Pending:
    """Channel requests in flight and what to call when they are all done."""

    __slots__ = ("requests", "finish", "deadline", "what", "peers", "keep")

    def __init__(
        self, requests: list[Request], finish: Finisher | None, deadline: float, what: str, peers: list[int], keep: Any
    ) -> None:
        self.requests = requests
        self.finish = finish
        self.deadline = deadline
        self.what = what
        self.peers = peers
        self.keep = keep  # buffers the channels still read from or write into


class _PostedRecv:
    __slots__ = ("buf", "src", "tag", "finish", "deadline", "what")

    def __init__(self, buf: np.ndarray, src: int | None, tag: int, finish: Finisher, deadline: float, what: str) -> None:
        self.buf = buf
        self.src = src
        self.tag = tag
        self.finish = finish
        self.deadline = deadline
        self.what = what


class P2PError(TransportError):
    """A point-to-point operation failed or timed out (message names the peer and tag)."""


class P2PTimeout(P2PError, TimeoutError):
    pass


class P2PEngine:
    """Non-blocking point-to-point over ``comm``'s channels (the engine owns ``comm``)."""

    def __init__(self, comm: Communicator, name: str) -> None:
        self.comm = comm
        self.rank = comm.rank
        self.size = comm.size
        self._name = name
        self._channels: dict[int, Channel] = {}
        self._transport_of: dict[int, Any] = {}
        for transport in comm.transports:
            for peer, channel in transport.channels.items():
                self._channels[peer] = channel
                self._transport_of[peer] = transport
        self._cv = threading.Condition()
        self._actions: deque[Callable[[], None]] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        # state below is touched only by the engine thread
        self._headers: dict[int, tuple[bytearray, Request]] = {}
        self._arrived: dict[int, deque[tuple[int, int]]] = {p: deque() for p in self._channels}
        self._self_msgs: deque[tuple[int, np.ndarray]] = deque()
        self._posted: list[_PostedRecv] = []
        self._pending: list[_Pending] = []
        self._dead: dict[int, BaseException] = {}
        self._broken: BaseException | None = None
        self._last_peer_check = 0.0

    # -- API (any thread) ---------------------------------------------------------------

    def send(self, buf: np.ndarray, dst: int, tag: int, deadline: float, finish: Finisher) -> None:
        """Send the bytes of ``buf`` (kept referenced, not copied) to ``dst``."""
        if dst == self.rank:
            copy = buf.copy()  # snapshot now: the caller may reuse its tensor after wait()
            self._submit(lambda: self._send_self(copy, tag, finish))
        else:
            self._submit(lambda: self._post_send(buf, dst, tag, deadline, finish))

    def recv(self, buf: np.ndarray, src: int | None, tag: int, deadline: float, finish: Finisher) -> None:
        """Receive the next message tagged ``tag`` from ``src`` (None: any rank) into ``buf``;
        ``finish(error, source)`` is called on the engine thread."""
        what = f"recv from rank {src}" if src is not None else "recv from any rank"
        self._submit(lambda: self._post_recv(_PostedRecv(buf, src, tag, finish, deadline, f"{what} (tag {tag})")))

    def close(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and threading.current_thread() is not thread:
            thread.join(timeout=5)
        self.comm.close()

    def abort(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self.comm.abort()

    # -- the engine thread ----------------------------------------------------------------

    def _submit(self, action: Callable[[], None]) -> None:
        with self._cv:
            if self._stopping:
                raise P2PError("the process group was shut down")
            self._actions.append(action)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"{self._name}-p2p", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def _busy(self) -> bool:
        return bool(self._pending or self._posted)

    def _loop(self) -> None:
        idle_since: float | None = None
        while True:
            with self._cv:
                while not self._actions and not self._busy() and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    self._fail_all(P2PError("the process group was shut down"))
                    return
                actions = list(self._actions)
                self._actions.clear()
            for action in actions:
                try:
                    action()
                except Exception as exc:  # noqa: BLE001 - keep serving the others
                    logger.exception("p2p action failed")
                    self._break(P2PError(f"internal error in point-to-point: {exc!r}"))
            if not self._busy():
                continue
            if actions:
                idle_since = None
            moved = self._progress()
            self._reap()
            if moved:
                idle_since = None
                continue
            now = time.monotonic()
            if idle_since is None:
                idle_since = now
                continue
            if now - idle_since < SPIN_SECONDS:
                continue
            self._expire(now)
            if now - self._last_peer_check > CHECK_PEERS_EVERY:
                self._last_peer_check = now
                self._check_peers()
            if not self._busy():
                continue
            tokens = [(t, t.activity_token()) for t in {id(t): t for t in self._transport_of.values()}.values()]
            if self._progress():
                idle_since = None
                self._reap()
                continue
            # short sleeps while traffic is recent (new requests are picked up between them),
            # longer ones once a receive has waited a while for its sender
            slice_ = SLEEP_SLICE if now - idle_since < LONG_IDLE else LONG_SLEEP_SLICE
            for transport, token in tokens:
                try:
                    transport.wait_for_activity(slice_ / max(1, len(tokens)), token)
                except Exception:  # noqa: BLE001 - a closed transport: the next progress says so
                    time.sleep(SLEEP_SLICE)

    def _progress(self) -> bool:
        moved = False
        for peer, channel in self._channels.items():
            if peer in self._dead:
                continue
            try:
                if channel.progress():
                    moved = True
            except TransportError as exc:
                self._peer_failed(peer, exc)
                moved = True
        if moved:
            self._read_headers()
        return moved

    def _check_peers(self) -> None:
        peers = {p for x in self._pending for p in x.peers} | {
            r.src for r in self._posted if r.src is not None and r.src != self.rank
        }
        if any(r.src is None for r in self._posted):
            peers |= set(self._channels)
        by_transport: dict[int, tuple[Any, set[int]]] = {}
        for p in peers - set(self._dead):
            t = self._transport_of[p]
            by_transport.setdefault(id(t), (t, set()))[1].add(p)
        for transport, group in by_transport.values():
            try:
                transport.check_peers(group)
            except PeerLostError as exc:
                peer = exc.peer if exc.peer is not None else min(group)
                self._peer_failed(peer, exc)
            except TransportError as exc:
                for p in group:
                    self._peer_failed(p, exc)

    # -- headers and matching -------------------------------------------------------------

    def _ensure_header_recv(self, peer: int) -> None:
        if peer in self._headers or peer in self._dead:
            return
        buf = bytearray(HEADER.size)
        try:
            request = self._channels[peer].irecv(buf, HEADER_TAG)
        except TransportError as exc:
            self._peer_failed(peer, exc)
            return
        self._headers[peer] = (buf, request)

    def _read_headers(self) -> None:
        got = False
        for peer in list(self._headers):
            while peer in self._headers:
                buf, request = self._headers[peer]
                if request.error is not None:
                    self._peer_failed(peer, request.error)
                    break
                if not request.done:
                    break
                del self._headers[peer]
                self._arrived[peer].append(HEADER.unpack(buf))
                got = True
                self._ensure_header_recv(peer)  # takes the next one if it is already here
        if got:
            self._match()

    def _match(self) -> None:
        still: list[_PostedRecv] = []
        for posted in self._posted:
            found = self._find(posted)
            if found is None:
                still.append(posted)
                continue
            source, nbytes, payload = found
            if payload is not None:  # from this rank itself
                if payload.nbytes != posted.buf.nbytes:
                    posted.finish(self._size_error(posted, source, payload.nbytes), source)
                else:
                    posted.buf[...] = payload
                    posted.finish(None, source)
                continue
            channel = self._channels[source]
            if nbytes != posted.buf.nbytes:
                # drain the payload, then fail this receive
                scratch = np.empty(nbytes, dtype=np.uint8)
                request = channel.irecv(scratch, data_tag(posted.tag))
                error = self._size_error(posted, source, nbytes)
                self._pending.append(
                    _Pending([request], lambda e, s, p=posted, err=error: p.finish(err, s), posted.deadline,
                             posted.what, [source], scratch)
                )
                continue
            request = channel.irecv(posted.buf, data_tag(posted.tag))
            self._pending.append(
                _Pending([request], (lambda e, s, p=posted, src=source: p.finish(e, src)), posted.deadline,
                         posted.what, [source], posted.buf)
            )
        self._posted = still

    def _find(self, posted: _PostedRecv) -> tuple[int, int, np.ndarray | None] | None:
        if posted.src is None or posted.src == self.rank:
            for i, (tag, payload) in enumerate(self._self_msgs):
                if tag == posted.tag:
                    del self._self_msgs[i]
                    return self.rank, payload.nbytes, payload
            if posted.src == self.rank:
                return None
        peers = [posted.src] if posted.src is not None else list(self._arrived)
        for peer in peers:
            arrived = self._arrived[peer]
            for i, (tag, nbytes) in enumerate(arrived):
                if tag == posted.tag:
                    del arrived[i]
                    return peer, nbytes, None
        return None

    def _size_error(self, posted: _PostedRecv, source: int, nbytes: int) -> P2PError:
        return P2PError(
            f"{posted.what}: rank {source} sent {nbytes} bytes but the receive has room for exactly "
            f"{posted.buf.nbytes} (tensor sizes differ between the ranks)",
            peer=source,
        )

    # -- posting --------------------------------------------------------------------------

    def _usable(self, peer: int, what: str, finish: Finisher) -> bool:
        if self._broken is not None:
            finish(P2PError(f"{what}: point-to-point is unusable after an earlier failure ({self._broken})"), None)
            return False
        if peer in self._dead:
            finish(P2PError(f"{what}: rank {peer} is gone ({self._dead[peer]})", peer=peer), None)
            return False
        return True

    def _post_send(self, buf: np.ndarray, dst: int, tag: int, deadline: float, finish: Finisher) -> None:
        what = f"send to rank {dst} (tag {tag})"
        if not self._usable(dst, what, finish):
            return
        for peer in self._channels:
            self._ensure_header_recv(peer)
        channel = self._channels[dst]
        header = HEADER.pack(tag, buf.nbytes)
        try:
            requests = [channel.isend(header, HEADER_TAG), channel.isend(buf, data_tag(tag))]
        except TransportError as exc:
            self._peer_failed(dst, exc)
            finish(P2PError(f"{what}: {exc}", peer=dst), None)
            return
        self._pending.append(_Pending(requests, finish, deadline, what, [dst], buf))

    def _send_self(self, copy: np.ndarray, tag: int, finish: Finisher) -> None:
        self._self_msgs.append((tag, copy))
        finish(None, self.rank)
        self._match()

    def _post_recv(self, posted: _PostedRecv) -> None:
        if posted.src is not None and posted.src != self.rank and not self._usable(posted.src, posted.what, posted.finish):
            return
        if self._broken is not None:
            posted.finish(P2PError(f"{posted.what}: point-to-point is unusable after an earlier failure ({self._broken})"), None)
            return
        for peer in self._channels:
            self._ensure_header_recv(peer)
        self._posted.append(posted)
        self._match()

    # -- completion and failure -------------------------------------------------------------

    def _reap(self) -> None:
        still: list[_Pending] = []
        for pending in self._pending:
            error = next((r.error for r in pending.requests if r.error is not None), None)
            if error is not None:
                self._call(pending, P2PError(f"{pending.what}: {error}", peer=getattr(error, "peer", None)))
            elif all(r.done for r in pending.requests):
                self._call(pending, None)
            else:
                still.append(pending)
        self._pending = still

    def _call(self, pending: _Pending, error: BaseException | None) -> None:
        if pending.finish is not None:
            try:
                pending.finish(error, None)
            except Exception:  # noqa: BLE001
                logger.exception("p2p completion callback failed")

    def _expire(self, now: float) -> None:
        expired = [p for p in self._posted if now >= p.deadline]
        if expired:
            # nothing was posted on a channel for these: they leave cleanly
            self._posted = [p for p in self._posted if now < p.deadline]
            for p in expired:
                p.finish(P2PTimeout(f"{p.what} Timed out: no matching message arrived", peer=p.src), None)
        late = [p for p in self._pending if now >= p.deadline]
        if late:
            # a request already on a channel cannot be withdrawn: point-to-point is now unusable
            error = P2PTimeout(
                f"{late[0].what} Timed out waiting on rank(s) {', '.join(map(str, late[0].peers))}",
                peer=late[0].peers[0] if late[0].peers else None,
            )
            self._break(error)

    def _peer_failed(self, peer: int, exc: BaseException) -> None:
        if peer in self._dead:
            return
        self._dead[peer] = exc
        self._headers.pop(peer, None)
        still: list[_Pending] = []
        for pending in self._pending:
            if peer in pending.peers:
                self._call(pending, P2PError(f"{pending.what}: rank {peer} failed: {exc}", peer=peer))
            else:
                still.append(pending)
        self._pending = still
        alive = set(self._channels) - set(self._dead)
        keep: list[_PostedRecv] = []
        for posted in self._posted:
            if posted.src == peer or (posted.src is None and not alive and not self._self_msgs):
                posted.finish(P2PError(f"{posted.what}: rank {peer} failed: {exc}", peer=peer), None)
            else:
                keep.append(posted)
        self._posted = keep

    def _break(self, error: BaseException) -> None:
        self._broken = self._broken or error
        self._fail_all(error)

    def _fail_all(self, error: BaseException) -> None:
        pending, self._pending = self._pending, []
        for p in pending:
            self._call(p, error)
        posted, self._posted = self._posted, []
        for p in posted:
            try:
                p.finish(error, None)
            except Exception:  # noqa: BLE001
                logger.exception("p2p completion callback failed")


