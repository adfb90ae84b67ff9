"""TCP transport: one authenticated, non-blocking socket per peer.

Setup (collective over this rank and its peers): each rank that expects incoming
connections listens on :func:`resolve_bind_address` (loopback unless configured) at an
ephemeral port and publishes ``host:port`` under ``tcp/addr/{rank}``. For each pair the
lower rank connects to the higher rank's listener and proves the key it was given
(``connect()`` derives it so that reading the store is not enough, see
:mod:`collectives.data_key`; without one, ``store.get("secret")``) with the handshake of
:mod:`collectives._handshake`, claiming its rank. The listener serves handshakes concurrently in a helper thread, rejects
strangers (junk, wrong secret, unexpected or duplicate rank, silence) with a warning, and
is closed once every expected peer has arrived.

After setup the sockets are non-blocking; :class:`TcpChannel` supplies the byte stream
to the framing in :mod:`collectives.transports.base`, and ``wait_for_activity`` sleeps
in one selector over every socket.
"""

from __future__ import annotations

import itertools
import logging
import select
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Sequence

from .._handshake import (
    HANDSHAKE_TIMEOUT,
    PURPOSE_DATA,
    HandshakeResponder,
    RejectionLog,
    advertised_host,
    client_handshake,
    is_loopback,
    listen_socket,
    resolve_bind_address,
    secret_bytes,
    set_buffer_sizes,
)
from ..config import Config
from ..errors import AuthenticationError, ConnectError, InvalidArgumentError, PeerLostError, TransportError
from ..steps import LARGER_STEPS, TCP_SOCKET_BUFFER_BYTES
from ..store import Store
from .base import Channel, Transport
from .frames import HEADER

logger = logging.getLogger("collectives")

SOCKET_BUFFER_BYTES = TCP_SOCKET_BUFFER_BYTES  # the one size, collectives.steps; this name kept for its callers
LARGE_FROM_BYTES, LARGE_CHUNK_BYTES = LARGER_STEPS["tcp"]
"""From LARGE_FROM_BYTES an all-reduce over TCP steps in LARGE_CHUNK_BYTES (the one rule,
``collectives.steps``; these names kept for their callers)."""
_MAX_IOV = 64
SELECT_SLICE = 0.05  # the longest sleep of ``take_frame`` between checks of its deadline


class TcpChannel(Channel):
    """The stream to one peer over a connected, non-blocking socket."""

    def __init__(self, peer: int, sock: socket.socket, max_frame_bytes: int) -> None:
        super().__init__(peer, max_frame_bytes=max_frame_bytes)
        self.sock = sock
        self.eof = False

    @property
    def needs_input(self) -> bool:
        """Whether a receive is posted or a frame is half read (so end of stream is a loss)."""
        return self.mid_frame or any(self._posted.values())

    def _write_some(self, views: Sequence[memoryview]) -> int:
        if not views:
            return 0
        try:
            return self.sock.sendmsg(list(itertools.islice(views, _MAX_IOV)), (), socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise PeerLostError(f"rank {self.peer} is gone: sending to it failed ({exc})", peer=self.peer) from None

    def _read_some(self, into: memoryview) -> int:
        if not len(into):
            return 0
        try:
            n = self.sock.recv_into(into)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise PeerLostError(f"rank {self.peer} is gone: receiving from it failed ({exc})", peer=self.peer) from None
        if n == 0:
            self.eof = True
            if not self.needs_input:
                return 0  # a clean close between messages: an error only once we need data
            raise PeerLostError(
                f"rank {self.peer} closed the connection (it exited, crashed or closed its communicator)",
                peer=self.peer,
            )
        return n

    def _close_stream(self) -> None:
        self.sock.close()

    # -- for a reader of the socket outside the channel (engines/tcp_pair.py) ---------------

    def stream_idle(self, tag: int) -> bool:
        """Whether the socket's streams are at frame boundaries with nothing of this channel in
        flight (no send queued, no receive posted, no frame half read, nothing of ``tag`` held):
        only then may another reader and writer take the socket for a call of ``tag`` and hand it
        back, the frames it moved being the ones this channel would have moved."""
        return (self.error is None and self._eof is None and not self.eof and not self.busy and not self.mid_frame
                and not self._unexpected.get(tag) and not self._remote_held)

    def take_frame(self, header: bytes, deadline: float) -> bool:
        """Read the frame whose ``header`` another reader took off the stream (a message of another
        tag, between the frames it reads), into this channel as it would have read it: held as an
        unexpected message. False where ``deadline`` (``time.monotonic()``) passed first."""
        try:
            self._start_frame(*HEADER.unpack(header))
            target = self._rx_target  # idle, so nothing posted: an unexpected message's buffer
            assert target is not None and self._rx_sink is None
            while self._rx_got < len(target):  # this frame's bytes only: the next header is the other reader's
                n = self._read_some(target[self._rx_got :])
                if n:
                    self._rx_got += n
                    continue
                if time.monotonic() >= deadline:
                    return False
                select.select([self.sock], [], [], SELECT_SLICE)
            self._finish_frame()
        except TransportError as exc:
            self.fail_stream(exc)
            raise
        return True

    def fail_stream(self, exc: TransportError) -> None:
        """The stream broke under another reader or writer: fail every request of this channel with ``exc``."""
        if self.error is None:
            self._fail(exc)


class _Acceptor(threading.Thread):
    """Accepts and authenticates the expected lower ranks on a listener, concurrently, so a
    silent or hostile connection cannot delay the real peers. Closes the listener when done."""

    def __init__(self, rank: int, listener: socket.socket, secret: bytes, expected: set[int], deadline: float) -> None:
        super().__init__(name=f"TcpTransport-accept:{rank}", daemon=True)
        self.rank = rank
        self.listener = listener
        self.secret = secret
        self.missing = set(expected)
        self.deadline = deadline
        self.accepted: dict[int, socket.socket] = {}
        self._halt = threading.Event()
        self.where = "{}:{}".format(*listener.getsockname()[:2])
        self.rejections = RejectionLog(f"tcp rank {rank} listener {self.where}")

    def stop(self) -> None:
        self._halt.set()

    def _allowed(self, identity: int) -> str | None:
        if identity in self.missing:
            return None
        if identity in self.accepted:
            return f"claims rank {identity}, which is already connected"
        return f"claims rank {identity}, which is not expected to connect to rank {self.rank}"

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        pending: dict[socket.socket, HandshakeResponder] = {}
        self.listener.setblocking(False)
        sel.register(self.listener, selectors.EVENT_READ)
        try:
            while self.missing and not self._halt.is_set():
                now = time.monotonic()
                if now >= self.deadline:
                    return
                for key, _ in sel.select(min(0.1, self.deadline - now)):
                    if key.fileobj is self.listener:
                        self._accept(sel, pending)
                    else:
                        self._on_readable(sel, pending, pending[key.fileobj])  # type: ignore[index]
                now = time.monotonic()
                for responder in [r for r in pending.values() if r.deadline <= now]:
                    self._drop(sel, pending, responder, "said nothing within the handshake timeout")
        finally:
            for responder in list(pending.values()):
                sel.unregister(responder.sock)
                responder.sock.close()
            sel.close()
            self.listener.close()

    def _accept(self, sel: selectors.BaseSelector, pending: dict[socket.socket, HandshakeResponder]) -> None:
        while True:
            try:
                sock, peer_addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("tcp rank %d listener %s: accept failed: %s", self.rank, self.where, exc)
                return
            try:
                responder = HandshakeResponder(
                    sock, self.secret, PURPOSE_DATA, HANDSHAKE_TIMEOUT, self._allowed, identity=self.rank
                )
            except AuthenticationError as exc:
                self.rejections.reject(f"{peer_addr[0]}:{peer_addr[1]}", str(exc))
                sock.close()
                continue
            pending[sock] = responder
            sel.register(sock, selectors.EVENT_READ)

    def _on_readable(
        self, sel: selectors.BaseSelector, pending: dict[socket.socket, HandshakeResponder], responder: HandshakeResponder
    ) -> None:
        try:
            identity = responder.on_readable()
        except AuthenticationError as exc:
            responder.reject()
            self._drop(sel, pending, responder, str(exc), described=True)
            return
        if identity is None:
            return
        sel.unregister(responder.sock)
        del pending[responder.sock]
        self.missing.discard(identity)
        self.accepted[identity] = responder.sock

    def _drop(
        self,
        sel: selectors.BaseSelector,
        pending: dict[socket.socket, HandshakeResponder],
        responder: HandshakeResponder,
        reason: str,
        described: bool = False,
    ) -> None:
        self.rejections.reject(responder.address, reason if described else f"client {responder.address} {reason}")
        sel.unregister(responder.sock)
        del pending[responder.sock]
        responder.sock.close()


def _split_address(text: str, peer: int = -1) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a rank published it; anything else is a ConnectError."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConnectError(f"rank {peer} published {text[:80]!r} as its address, which is not host:port", peer=peer)
    return host.strip("[]"), int(port)


class TcpTransport(Transport):
    """Authenticated TCP connections from ``rank`` to each of ``peers``, proving ``secret``
    (default: the store's ``"secret"`` key, for callers that put one there). ``routable``:
    some peer is on another host, so the listener must not be on loopback
    (:func:`collectives._handshake.resolve_bind_address`)."""

    name = "tcp"
    large_chunk = (LARGE_FROM_BYTES, LARGE_CHUNK_BYTES)

    def __init__(
        self,
        rank: int,
        size: int,
        peers: Sequence[int],
        store: Store,
        config: Config,
        timeout: float,
        *,
        secret: bytes | None = None,
        routable: bool = False,
    ) -> None:
        self.rank = rank
        self.channels: dict[int, TcpChannel] = {}
        self._sel: selectors.BaseSelector | None = None
        self._events: dict[int, int] = {}
        self._acceptor: _Acceptor | None = None
        self._closed = False
        self.address: str | None = None
        deadline = time.monotonic() + timeout
        peers = sorted(set(peers) - {rank})
        lower = [p for p in peers if p < rank]
        higher = [p for p in peers if p > rank]
        secret = secret_bytes(store.get("secret", timeout) if secret is None else secret)
        socks: dict[int, socket.socket] = {}
        try:
            if lower:
                host = resolve_bind_address(config, routable=routable)
                if not secret and not is_loopback(host):
                    raise InvalidArgumentError(
                        f"tcp rank {rank}: refusing to listen on {host} without a job secret (set COLLECTIVES_SECRET)"
                    )
                listener = listen_socket(host, 0, backlog=max(128, 2 * len(lower)), bufsize=SOCKET_BUFFER_BYTES)
                port = listener.getsockname()[1]
                host = advertised_host(host)  # a wildcard (asked for explicitly): a name peers can reach
                self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                self._acceptor = _Acceptor(rank, listener, secret, set(lower), deadline)
                self._acceptor.start()
                store.set(f"tcp/addr/{rank}", self.address.encode())
            for peer in higher:
                socks[peer] = self._connect(peer, store, secret, deadline)
            if self._acceptor is not None:
                self._acceptor.join(max(0.0, deadline - time.monotonic()) + 1.0)
                self._acceptor.stop()
                if self._acceptor.missing:
                    missing = sorted(self._acceptor.missing)
                    raise ConnectError(
                        f"tcp rank {rank}: rank(s) {', '.join(map(str, missing))} did not connect to "
                        f"{self.address} within {timeout:g} s",
                        peer=missing[0],
                    )
                socks.update(self._acceptor.accepted)
        except BaseException:
            if self._acceptor is not None:
                self._acceptor.stop()
                self._acceptor.join()
                socks.update(self._acceptor.accepted)
            for sock in socks.values():
                sock.close()
            raise
        for peer, sock in socks.items():
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self.channels[peer] = TcpChannel(peer, sock, config.max_frame_bytes)
        self._sel = selectors.DefaultSelector()
        for peer, channel in self.channels.items():
            self._sel.register(channel.sock, selectors.EVENT_READ, channel)
            self._events[peer] = selectors.EVENT_READ

    def _connect(self, peer: int, store: Store, secret: bytes, deadline: float) -> socket.socket:
        """Connect to ``peer``'s listener and authenticate as this rank."""
        text = store.get(f"tcp/addr/{peer}", max(0.0, deadline - time.monotonic())).decode(errors="replace")
        host, port = _split_address(text, peer)
        delay = 0.01
        while True:
            left = deadline - time.monotonic()
            try:
                sock = self._dial(host, port, left)
                break
            except OSError as exc:
                if left <= delay:
                    raise ConnectError(
                        f"tcp rank {self.rank}: cannot connect to rank {peer} at {text}: {exc}", peer=peer
                    ) from None
                time.sleep(delay)
                delay = min(2 * delay, 0.5)
        try:
            left = max(0.1, deadline - time.monotonic())
            client_handshake(
                sock, secret, PURPOSE_DATA, self.rank, left, where=f"rank {peer} at {text}", expect_server=peer
            )
        except AuthenticationError as exc:
            sock.close()
            exc.peer = peer
            raise
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _dial(host: str, port: int, timeout: float) -> socket.socket:
        family, type_, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, type_, proto)
        try:
            set_buffer_sizes(sock, SOCKET_BUFFER_BYTES)  # before connect, so the window scale fits
            sock.settimeout(max(0.1, timeout))
            sock.connect(sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock

    def wait_for_activity(self, timeout: float, token: int | None = None) -> None:
        """Sleep until a socket is readable, or writable where a send is pending."""
        sel = self._sel
        if sel is None or self._closed:
            time.sleep(timeout)
            return
        try:
            self._watch_and_select(sel, timeout)
        except (KeyError, ValueError, OSError):
            if not self._closed:  # else closed meanwhile from another thread (abort): the caller sees it
                raise

    def _watch_and_select(self, sel: selectors.BaseSelector, timeout: float) -> None:
        for peer, channel in self.channels.items():
            old = self._events.get(peer, 0)
            if channel.error is not None:
                want = 0
            else:  # a closed stream is always readable: watch it only while we need its data
                want = 0 if channel.eof and not channel.needs_input else selectors.EVENT_READ
                want |= selectors.EVENT_WRITE if channel._sendq else 0
            if want == old:
                continue
            if not want:
                sel.unregister(channel.sock)
            elif not old:
                sel.register(channel.sock, want, channel)
            else:
                sel.modify(channel.sock, want, channel)
            self._events[peer] = want
        if not any(self._events.values()):
            time.sleep(timeout)
            return
        sel.select(timeout)

    def check_peers(self, peers: Iterable[int]) -> None:
        """A lost TCP peer shows up as end of stream in ``progress``; nothing to poll."""
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._acceptor is not None:
            self._acceptor.stop()
        # Every channel first, each on its own: a close from another thread (``abort()``) races the
        # waiting thread's selector updates, and one failed unregister must not leave a channel open
        # (its pending requests would then wait for the peer instead of failing now). Closing the
        # selector drops every registration at once.
        for channel in self.channels.values():
            try:
                channel.close()
            except Exception:  # noqa: BLE001 - the other channels must still close
                logger.debug("closing the channel to rank %d failed", channel.peer, exc_info=True)
        self._events.clear()
        if self._sel is not None:
            self._sel.close()
