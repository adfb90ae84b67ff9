"""A TCP rendezvous store: a small server (rank 0 or the launcher) and a thread-safe client.

Every connection opens with the authenticated handshake of :mod:`collectives._handshake`;
after it, requests and answers are fixed-size little-endian headers followed by raw bytes.
Every length is checked against a bound before anything is allocated for it, and nothing
is ever unpickled: a port scan, junk bytes or a client without the job secret costs the
server one closed connection and a warning, never its memory or its other clients.

Wire format after the handshake::

    request   op(u8) key_len(u32) a_len(u64) b_len(u64) num(i64)  key  a  b
    answer    status(u8) value_len(u64) num(i64)  value

``get`` with a timeout is parked on the server and answered when the key is set (or with
TIMEOUT at its deadline), so waiting ranks cost no polling traffic.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import random
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence

from .._handshake import (
    PURPOSE_STORE,
    HandshakeResponder,
    RejectionLog,
    client_handshake,
    is_loopback,
    listen_socket,
    secret_bytes,
)
from .._interfaces import host_port
from ..errors import AuthenticationError, ConnectError, InvalidArgumentError, RendezvousTimeoutError, StoreError
from .base import DEFAULT_TIMEOUT, Store

logger = logging.getLogger("collectives")

MAX_KEY_BYTES = 4 << 10
MAX_VALUE_BYTES = 64 << 20
LISTEN_BACKLOG = 4096

_REQ = struct.Struct("<BIQQq")
_MAX_BUFFERED = _REQ.size + MAX_KEY_BYTES + 2 * MAX_VALUE_BYTES + (1 << 20)
_ANS = struct.Struct("<BQq")
OP_SET, OP_GET, OP_WAIT, OP_ADD, OP_CAS, OP_CHECK, OP_DELETE = range(1, 8)
ST_OK, ST_TIMEOUT, ST_ERROR = 0, 1, 2
_OP_NAMES = {OP_SET: "set", OP_GET: "get", OP_WAIT: "wait", OP_ADD: "add", OP_CAS: "compare_set",
             OP_CHECK: "check", OP_DELETE: "delete"}


def request_length(buf: bytes | bytearray) -> int | None:
    """How many bytes the request at the start of ``buf`` takes, header included, once its
    header has arrived (None before). The header is checked first: an unknown op or a
    length over its bound raises :class:`StoreError`, before anything is waited for or
    allocated."""
    if len(buf) < _REQ.size:
        return None
    op, klen, alen, blen, _ = _REQ.unpack_from(buf)
    if op not in _OP_NAMES or klen > MAX_KEY_BYTES or alen > MAX_VALUE_BYTES or blen > MAX_VALUE_BYTES:
        raise StoreError(f"a bad request header (op {op}, key {klen} B, values {alen}/{blen} B)")
    return int(_REQ.size + klen + alen + blen)


def answer_header(header: bytes) -> tuple[int, int, int]:
    """``(status, value length, number)`` of an answer's header; an unknown status or a
    value over its bound raises :class:`StoreError` before the value is read."""
    status, vlen, num = _ANS.unpack(header)
    if status not in (ST_OK, ST_TIMEOUT, ST_ERROR) or vlen > MAX_VALUE_BYTES:
        raise StoreError(f"a bad answer header (status {status}, value {vlen} B)")
    return status, vlen, num


class _Conn:
    __slots__ = ("sock", "address", "responder", "inbuf", "outq", "parked", "closed", "writing")

    def __init__(self, sock: socket.socket, responder: HandshakeResponder) -> None:
        self.sock, self.address = sock, responder.address
        self.responder: HandshakeResponder | None = responder
        self.inbuf = bytearray()
        self.outq: deque[memoryview] = deque()
        self.parked = self.closed = self.writing = False


class _Waiter:
    __slots__ = ("conn", "key", "want_value", "done")

    def __init__(self, conn: _Conn, key: bytes, want_value: bool) -> None:
        self.conn = conn
        self.key = key
        self.want_value = want_value
        self.done = False


class TCPStoreServer:
    """The store's server, serving many clients from one daemon thread (a selector loop).

    ``host`` defaults to loopback; binding every interface needs ``host="0.0.0.0"`` and a
    non-empty ``secret``. ``handshake_timeout`` is how long a new connection may stay
    silent before it is dropped. ``timeout`` is accepted for symmetry with
    :class:`TCPStore`; waits are bounded by the timeout each client request carries.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: str | bytes,
        timeout: float = DEFAULT_TIMEOUT,
        handshake_timeout: float = 5.0,
    ) -> None:
        self.timeout = timeout  # informational: every client request carries its own timeout
        self._secret = secret_bytes(secret)
        if not self._secret and not is_loopback(host):
            raise InvalidArgumentError(f"refusing to serve a store on {host} without a job secret")
        self._handshake_timeout = handshake_timeout
        self._listener = listen_socket(host, port, LISTEN_BACKLOG)
        self._listener.setblocking(False)
        bound = self._listener.getsockname()
        self._host: str = bound[0]
        self._port: int = bound[1]
        self.rejections = RejectionLog(f"TCPStoreServer {host_port(self._host, self._port)}")
        self._data: dict[bytes, bytes] = {}
        self._waiters: dict[bytes, list[_Waiter]] = {}
        self._timers: list[tuple[float, int, object]] = []
        self._seq = itertools.count()
        self._conns: set[_Conn] = set()
        self._handshaking: dict[_Conn, None] = {}  # connections mid-handshake, oldest first
        self._scratch = bytearray(1 << 20)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "listener")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"TCPStoreServer:{self._port}", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    def close(self) -> None:
        """Stop serving and close every connection. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=10)

    def __repr__(self) -> str:
        return f"<TCPStoreServer {host_port(self._host, self._port)}>"

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                deadlines = [self._timers[0][0]] if self._timers else []
                first = next(iter(self._handshaking), None)
                if first is not None and first.responder is not None:
                    deadlines.append(first.responder.deadline)
                # (at most an hour: epoll refuses ~25 days, and a client's long wait must not end the server)
                timeout = min(max(0.0, min(deadlines) - time.monotonic()), 3600.0) if deadlines else None
                for key, mask in self._sel.select(timeout):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            self._wake_r.recv(64)
                        except OSError:
                            pass
                    else:
                        conn: _Conn = key.data
                        if mask & selectors.EVENT_READ and not conn.closed:
                            self._on_readable(conn)
                        if mask & selectors.EVENT_WRITE and not conn.closed:
                            self._flush(conn)
                self._expire()
        except Exception:  # pragma: no cover - a bug; keep it visible
            logger.exception("TCPStoreServer %s:%s stopped on an unexpected error", self._host, self._port)
        finally:
            for conn in list(self._conns):
                self._drop(conn)
            self._sel.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self) -> None:
        for _ in range(256):
            try:
                sock, peer_addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: leave the rest in the backlog
                logger.warning("TCPStoreServer %s:%s: accept failed: %s", self._host, self._port, exc)
                return
            try:
                responder = HandshakeResponder(sock, self._secret, PURPOSE_STORE, self._handshake_timeout)
            except AuthenticationError as exc:
                self.rejections.reject(f"{peer_addr[0]}:{peer_addr[1]}", str(exc))
                sock.close()
                continue
            conn = _Conn(sock, responder)
            self._conns.add(conn)
            self._handshaking[conn] = None
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _add_timer(self, deadline: float, item: object) -> None:
        heapq.heappush(self._timers, (deadline, next(self._seq), item))

    def _expire(self) -> None:
        now = time.monotonic()
        # Handshakes share one timeout, so the oldest comes first; a connection leaves this
        # queue as soon as it is answered or dropped, so a flood leaves nothing behind.
        while self._handshaking:
            conn = next(iter(self._handshaking))
            if conn.responder is not None and conn.responder.deadline > now:
                break
            del self._handshaking[conn]
            if conn.responder is not None and not conn.closed:
                self._reject(conn, f"client {conn.address} said nothing within {self._handshake_timeout:g} s")
        while self._timers and self._timers[0][0] <= now:
            _, _, item = heapq.heappop(self._timers)
            if isinstance(item, _Waiter) and not item.done:
                item.done = True
                self._waiters[item.key].remove(item)
                if not self._waiters[item.key]:
                    del self._waiters[item.key]
                self._answer_parked(item.conn, ST_TIMEOUT)

    def _reject(self, conn: _Conn, reason: str) -> None:
        self.rejections.reject(conn.address, reason)
        if conn.responder is not None:
            conn.responder.reject()
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        self._handshaking.pop(conn, None)
        conn.responder = None
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _on_readable(self, conn: _Conn) -> None:
        if conn.responder is not None:
            try:
                identity = conn.responder.on_readable()
            except AuthenticationError as exc:
                self._reject(conn, str(exc))
                return
            if identity is not None:
                conn.responder = None
                self._handshaking.pop(conn, None)
            return
        try:
            n = conn.sock.recv_into(self._scratch)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if n == 0:
            self._drop(conn)
            return
        conn.inbuf += memoryview(self._scratch)[:n]
        self._process(conn)

    # -- requests ---------------------------------------------------------------------------

    def _process(self, conn: _Conn) -> None:
        buf = conn.inbuf
        while not conn.closed:
            try:
                end = request_length(buf)
            except StoreError as exc:
                self.rejections.reject(conn.address, f"closed {conn.address} after {exc}")
                self._drop(conn)
                return
            if end is None:
                return
            if conn.parked:  # one request at a time per connection; keep the rest for later
                if len(buf) > _MAX_BUFFERED:
                    self.rejections.reject(conn.address, f"closed {conn.address}: too much data sent while a get waits")
                    self._drop(conn)
                return
            if len(buf) < end:
                return
            op, klen, alen, _, num = _REQ.unpack_from(buf)
            k0, a0 = _REQ.size, _REQ.size + klen
            key, a, b = bytes(buf[k0:a0]), bytes(buf[a0 : a0 + alen]), bytes(buf[a0 + alen : end])
            del buf[:end]
            self._handle(conn, op, key, a, b, num)

    def _handle(self, conn: _Conn, op: int, key: bytes, a: bytes, b: bytes, num: int) -> None:
        data = self._data
        if op == OP_SET:
            data[key] = a
            self._send(conn, ST_OK)
            self._wake(key)
        elif op in (OP_GET, OP_WAIT):
            want_value = op == OP_GET
            if key in data:
                self._send(conn, ST_OK, data[key] if want_value else b"")
            elif num <= 0:
                self._send(conn, ST_TIMEOUT)
            else:
                waiter = _Waiter(conn, key, want_value)
                self._waiters.setdefault(key, []).append(waiter)
                conn.parked = True
                self._add_timer(time.monotonic() + num / 1000.0, waiter)
        elif op == OP_ADD:
            try:
                value = int(data.get(key, b"0")) + num
            except ValueError:
                self._send(conn, ST_ERROR, b"add: key holds a value that is not an integer")
                return
            data[key] = str(value).encode()
            self._send(conn, ST_OK, b"", value)
            self._wake(key)
        elif op == OP_CAS:
            current = data.get(key)
            if current == a or (current is None and a == b""):
                data[key] = b
                self._wake(key)
            self._send(conn, ST_OK, data.get(key, b""))
        elif op == OP_CHECK:
            self._send(conn, ST_OK, b"", int(key in data))
        elif op == OP_DELETE:
            self._send(conn, ST_OK, b"", int(data.pop(key, None) is not None))

    def _wake(self, key: bytes) -> None:
        waiters = self._waiters.pop(key, None)
        if not waiters:
            return
        value = self._data.get(key)
        for waiter in waiters:
            waiter.done = True
            self._answer_parked(waiter.conn, ST_OK, value if waiter.want_value and value is not None else b"")

    def _answer_parked(self, conn: _Conn, status: int, value: bytes = b"") -> None:
        conn.parked = False
        if conn.closed:
            return
        self._send(conn, status, value)
        self._process(conn)

    def _send(self, conn: _Conn, status: int, value: bytes = b"", num: int = 0) -> None:
        conn.outq.append(memoryview(_ANS.pack(status, len(value), num)))
        if value:
            conn.outq.append(memoryview(value))
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        q = conn.outq
        while q:
            try:
                n = conn.sock.sendmsg(list(itertools.islice(q, 64)))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(conn)
                return
            while n:
                if n >= len(q[0]):
                    n -= len(q.popleft())
                else:
                    q[0] = q[0][n:]
                    n = 0
        want_write = bool(q)
        if want_write != conn.writing:
            conn.writing = want_write
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self._sel.modify(conn.sock, events, conn)


class TCPStore(Store):
    """Client of a :class:`TCPStoreServer`; safe to share between threads.

    Each concurrent caller uses its own connection from a small pool, so one thread
    blocked in ``get`` never holds up another thread's ``set`` on the same store object.
    Connecting retries refused connections until ``timeout`` (the server may start later),
    with exponential backoff and jitter, then raises :class:`ConnectError` naming
    ``host:port``. ``host`` may be IPv6, a link-local one with its scope (``fe80::1%eth0``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        secret: str | bytes,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        connect_timeout: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.server: TCPStoreServer | None = None
        self._secret = secret_bytes(secret)
        # Private only with a secret; whoever passes a guessable one sets this to False.
        self.private = bool(self._secret)
        self._lock = threading.Lock()
        self._idle: list[socket.socket] = []
        self._busy: set[socket.socket] = set()  # in a request now: close() ends it (a parked get)
        self._closed = False
        self._idle.append(self._connect(timeout if connect_timeout is None else connect_timeout))

    @classmethod
    def create_server_or_connect(
        cls,
        host: str,
        port: int,
        secret: str | bytes,
        is_server: bool,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> TCPStore:
        """Rank 0 (``is_server``) hosts the server on ``host:port`` and connects to it;
        the others connect. The returned store closes the server it hosts."""
        if not is_server:
            return cls(host, port, secret, timeout)
        server = TCPStoreServer(host, port, secret=secret)
        try:
            store = cls(server.host, server.port, secret, timeout)
        except BaseException:
            server.close()
            raise
        store.server = server
        return store

    @property
    def where(self) -> str:
        return host_port(self.host, self.port)

    def __repr__(self) -> str:
        return f"<TCPStore {self.where}{' (hosting the server)' if self.server else ''}>"

    # -- connections ------------------------------------------------------------------------

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            left = deadline - time.monotonic()
            try:
                sock = socket.create_connection((self.host, self.port), timeout=max(0.1, left))
                break
            except OSError as exc:
                if time.monotonic() + delay >= deadline:
                    raise ConnectError(
                        f"could not connect to the store at {self.where} within {timeout:g} s: {exc}"
                    ) from None
                # Jittered: ranks started together (hundreds of them) must not retry in step.
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.5)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hs_timeout = max(1.0, min(30.0, deadline - time.monotonic()))
            client_handshake(sock, self._secret, PURPOSE_STORE, timeout=hs_timeout, where=f"store at {self.where}")
        except BaseException:
            sock.close()
            raise
        return sock

    def _acquire(self) -> socket.socket:
        with self._lock:
            if self._closed:
                raise StoreError(f"the store client of {self.where} was closed")
            sock = self._idle.pop() if self._idle else None
        sock = sock or self._connect(self.timeout)
        with self._lock:
            self._busy.add(sock)
        return sock

    def _release(self, sock: socket.socket, reuse: bool = True) -> None:
        with self._lock:
            self._busy.discard(sock)
            if reuse and not self._closed:
                self._idle.append(sock)
                return
        sock.close()

    def _request(
        self, op: int, key: str, a: bytes = b"", b: bytes = b"", num: int = 0, wait: float | None = None
    ) -> tuple[int, bytes, int]:
        kb = key.encode()
        if len(kb) > MAX_KEY_BYTES:
            raise InvalidArgumentError(f"key {key[:64]!r}...: {len(kb)} bytes, over the {MAX_KEY_BYTES}-byte limit")
        for v in (a, b):
            if len(v) > MAX_VALUE_BYTES:
                raise InvalidArgumentError(f"value for key {key!r}: {len(v)} bytes, over the {MAX_VALUE_BYTES}-byte limit")
        sock = self._acquire()
        try:
            sock.settimeout(self.timeout if wait is None else wait + 30.0)
            sock.sendall(_REQ.pack(op, len(kb), len(a), len(b), num) + kb)
            for v in (a, b):
                if v:
                    sock.sendall(v)
            try:
                status, vlen, rnum = answer_header(self._recv_exact(sock, _ANS.size))
            except StoreError as exc:
                raise StoreError(f"the store at {self.where} answered with {exc}") from None
            value = self._recv_exact(sock, vlen) if vlen else b""
        except socket.timeout:
            self._release(sock, reuse=False)
            raise StoreError(f"the store at {self.where} did not answer {_OP_NAMES[op]}({key!r}) in time") from None
        except OSError as exc:
            self._release(sock, reuse=False)
            raise StoreError(f"lost the connection to the store at {self.where} during {_OP_NAMES[op]}({key!r}): {exc}") from None
        except BaseException:
            self._release(sock, reuse=False)
            raise
        self._release(sock)
        if status == ST_ERROR:
            raise StoreError(f"store at {self.where}: {_OP_NAMES[op]}({key!r}) failed: {value.decode(errors='replace')}")
        return status, value, rnum

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = sock.recv_into(view[got:])
            if k == 0:
                raise ConnectionResetError("the server closed the connection")
            got += k
        return bytes(buf)

    # -- the Store interface ----------------------------------------------------------------

    def set(self, key: str, value: bytes) -> None:
        self._request(OP_SET, key, bytes(value))

    def get(self, key: str, timeout: float | None = None) -> bytes:
        return self._get(OP_GET, key, timeout)

    def _get(self, op: int, key: str, timeout: float | None) -> bytes:
        timeout = self.timeout if timeout is None else timeout
        status, value, _ = self._request(op, key, num=max(0, int(timeout * 1000)), wait=timeout)
        if status == ST_TIMEOUT:
            raise self._timeout_error([key], timeout)
        return value

    def add(self, key: str, amount: int) -> int:
        return self._request(OP_ADD, key, num=int(amount))[2]

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        return self._request(OP_CAS, key, bytes(expected), bytes(desired))[1]

    def check(self, keys: Sequence[str]) -> bool:
        return all(self._request(OP_CHECK, k)[2] for k in keys)

    def delete(self, key: str) -> bool:
        return bool(self._request(OP_DELETE, key)[2])

    def wait(self, keys: Sequence[str], timeout: float | None = None) -> None:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for key in keys:
            try:
                self._get(OP_WAIT, key, max(0.0, deadline - time.monotonic()))
            except RendezvousTimeoutError:
                raise self._timeout_error([k for k in keys if not self.check([k])], timeout) from None

    def close(self) -> None:
        """Close; a request in flight on another thread (a parked ``get``) ends with a StoreError."""
        with self._lock:  # held: a busy socket is closed by its thread only after it left _busy
            self._closed = True
            idle, self._idle = self._idle, []
            for sock in self._busy:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for sock in idle:
            sock.close()
        if self.server is not None:
            self.server.close()
