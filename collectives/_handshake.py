"""The handshake that opens every TCP connection (store and data), and bind-address choice.

Before a single payload byte is parsed, both ends prove knowledge of the job secret, so a
port scan, a stray client or a process of another job is turned away cheaply (the lesson
of pytorch/pytorch#107607, where an nmap scan crashed TCPStore)::

    server -> client   MAGIC(8) version(u16) server_nonce(32) purpose(u8)
    client -> server   MAGIC(8) version(u16) client_nonce(32) identity(u32)
                       HMAC(secret, "client" server_nonce purpose identity)
    server -> client   OK(u8) server_identity(u32)
                       HMAC(secret, "server" client_nonce server_nonce purpose identity server_identity)
                       (or REJECT(u8) and close)

Both sides thus prove the secret (mutual), each proof is bound to fresh nonces (no
replay), and a data client also learns that it reached the rank it meant to.

Every message has a fixed size, so nothing read from a stranger is used as a length. The
server half is a non-blocking state machine (:class:`HandshakeResponder`), so one silent
client cannot hold up a listener that serves many; the client half blocks with a timeout.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import struct
import time
from collections.abc import Callable

from . import _interfaces
from .config import Config
from .errors import AuthenticationError, ConnectError, InvalidArgumentError

logger = logging.getLogger("collectives")

MAGIC = b"COLLECT1"
VERSION = 1
NONCE_SIZE = 32
MAC_SIZE = 32
PURPOSE_STORE = 1
PURPOSE_DATA = 2
ANONYMOUS = 0xFFFFFFFF
"""Identity of clients that are not ranks (store clients)."""
HANDSHAKE_TIMEOUT = 5.0
"""Seconds a connecting client has to answer the server's greeting."""

_HELLO = struct.Struct(f"<8sH{NONCE_SIZE}sB")
_REPLY = struct.Struct(f"<8sH{NONCE_SIZE}sI{MAC_SIZE}s")
_STATUS_OK = 1
_STATUS_REJECT = 0
HELLO_SIZE = _HELLO.size
REPLY_SIZE = _REPLY.size
_ACCEPT = struct.Struct(f"<BI{MAC_SIZE}s")
ACCEPT_SIZE = _ACCEPT.size

_PURPOSE_NAMES = {PURPOSE_STORE: "store", PURPOSE_DATA: "data"}


def secret_bytes(secret: str | bytes | bytearray) -> bytes:
    """The secret as bytes (a ``str`` is UTF-8 encoded); ``None`` is refused."""
    if secret is None:
        raise InvalidArgumentError("secret: a job secret is required (set COLLECTIVES_SECRET)")
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def _client_mac(secret: bytes, server_nonce: bytes, purpose: int, identity: int) -> bytes:
    msg = b"client" + server_nonce + bytes([purpose]) + struct.pack("<I", identity)
    return hmac.new(secret, msg, hashlib.sha256).digest()


def _server_mac(
    secret: bytes, client_nonce: bytes, server_nonce: bytes, purpose: int, identity: int, server_identity: int
) -> bytes:
    msg = b"server" + client_nonce + server_nonce + bytes([purpose]) + struct.pack("<II", identity, server_identity)
    return hmac.new(secret, msg, hashlib.sha256).digest()


class RejectionLog:
    """Says "rejected a connection" once per source address, not once per connection, so
    that a scan or a flood of junk cannot flood the log (or grow memory: at most
    ``max_sources`` addresses are remembered, then one more line says the rest are only
    counted). Later rejections from a known address are logged at DEBUG and counted."""

    def __init__(self, where: str, max_sources: int = 4096) -> None:
        self.where = where
        self.max_sources = max_sources
        self.counts: dict[str, int] = {}
        self.unlisted = 0

    def reject(self, address: str, reason: str) -> None:
        """Log (or count) one rejected connection from ``address`` (``host:port``)."""
        host = address.rpartition(":")[0] or address
        seen = self.counts.get(host)
        if seen is not None:
            self.counts[host] = seen + 1
            logger.debug("%s: rejected a connection: %s", self.where, reason)
            return
        if len(self.counts) >= self.max_sources:
            self.unlisted += 1
            if self.unlisted == 1:
                logger.warning("%s: rejecting connections from more than %d addresses; counting the rest without "
                               "naming them", self.where, self.max_sources)
            return
        self.counts[host] = 1
        logger.warning("%s: rejected a connection: %s (further rejections from %s are counted, not logged)",
                       self.where, reason, host)

    @property
    def total(self) -> int:
        """Connections rejected so far."""
        return sum(self.counts.values()) + self.unlisted


def describe(sock: socket.socket) -> str:
    """``host:port`` of the far end, for messages (``?`` when unknown)."""
    try:
        addr = sock.getpeername()
    except OSError:
        return "?"
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else (str(addr) or "?")  # AF_UNIX: a path


class HandshakeResponder:
    """Server side of the handshake on one freshly accepted socket, without blocking.

    Construction sends the greeting. Call :meth:`on_readable` whenever the socket is
    readable: it returns ``None`` while the reply is incomplete and the client's identity
    once it has been verified (the acceptance is then sent). It raises
    :class:`AuthenticationError` for a wrong magic, version, purpose or MAC, or an early
    close; the caller then logs, calls :meth:`reject` and closes. ``deadline`` is the
    ``time.monotonic()`` past which a silent client should be dropped. ``allowed``, if
    given, vets the (authenticated) identity before the client is told it is accepted.
    ``identity`` is this server's own (its rank, for data listeners).
    """

    def __init__(
        self,
        sock: socket.socket,
        secret: bytes,
        purpose: int,
        timeout: float = HANDSHAKE_TIMEOUT,
        allowed: Callable[[int], str | None] | None = None,
        identity: int = ANONYMOUS,
    ) -> None:
        self.sock = sock
        self.address = describe(sock)
        self.deadline = time.monotonic() + timeout
        self._secret = secret
        self._purpose = purpose
        self._allowed = allowed
        self._identity = identity
        self._nonce = os.urandom(NONCE_SIZE)
        self._buf = bytearray()
        sock.setblocking(False)
        hello = _HELLO.pack(MAGIC, VERSION, self._nonce, purpose)
        try:
            sent = sock.send(hello)
        except OSError as exc:
            raise AuthenticationError(f"client {self.address} went away before the handshake: {exc}") from None
        if sent != len(hello):  # a fresh socket always has room for 43 bytes
            raise AuthenticationError(f"could not send the greeting to {self.address}")

    def on_readable(self) -> int | None:
        try:
            chunk = self.sock.recv(REPLY_SIZE - len(self._buf))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise AuthenticationError(f"client {self.address} failed during the handshake: {exc}") from None
        if not chunk:
            raise AuthenticationError(f"client {self.address} closed the connection during the handshake")
        self._buf += chunk
        if len(self._buf) < REPLY_SIZE:
            return None
        return self._verify(bytes(self._buf))

    def _verify(self, reply: bytes) -> int:
        identity: int  # the reply's "I" field
        magic, version, client_nonce, identity, mac = _REPLY.unpack(reply)
        if magic != MAGIC:
            raise AuthenticationError(f"client {self.address} does not speak the collectives protocol (bad magic)")
        if version != VERSION:
            raise AuthenticationError(
                f"client {self.address} speaks protocol version {version}, this server speaks {VERSION}"
            )
        expected = _client_mac(self._secret, self._nonce, self._purpose, identity)
        if not hmac.compare_digest(mac, expected):
            raise AuthenticationError(
                f"client {self.address} failed to prove the job secret (wrong COLLECTIVES_SECRET?)"
            )
        refusal = self._allowed(identity) if self._allowed is not None else None
        if refusal:
            raise AuthenticationError(f"client {self.address}: {refusal}")
        mac = _server_mac(self._secret, client_nonce, self._nonce, self._purpose, identity, self._identity)
        accept = _ACCEPT.pack(_STATUS_OK, self._identity, mac)
        try:
            sent = self.sock.send(accept)
        except OSError as exc:
            raise AuthenticationError(f"client {self.address} went away during the handshake: {exc}") from None
        if sent != len(accept):
            raise AuthenticationError(f"could not send the acceptance to {self.address}")
        return identity

    def reject(self) -> None:
        """Tell the client it was refused (best effort), so it can raise a clear error."""
        try:
            self.sock.send(bytes([_STATUS_REJECT]))
        except OSError:
            pass


def _recv_exact(sock: socket.socket, n: int, where: str, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            raise AuthenticationError(f"{where} did not send {what} in time (not a collectives endpoint?)") from None
        except OSError as exc:
            raise AuthenticationError(f"{where} failed while we waited for {what}: {exc}") from None
        if not chunk:
            return bytes(buf)
        buf += chunk
    return bytes(buf)


def client_handshake(
    sock: socket.socket,
    secret: bytes,
    purpose: int,
    identity: int = ANONYMOUS,
    timeout: float = HANDSHAKE_TIMEOUT,
    where: str | None = None,
    expect_server: int | None = None,
) -> None:
    """Prove the job secret to the server at the other end of ``sock`` and check its proof
    (and, if ``expect_server`` is given, that the server is that identity/rank).

    ``sock`` is left blocking with no timeout. Raises :class:`AuthenticationError` naming
    ``where`` (default: the peer address) if either side fails.
    """
    where = where or describe(sock)
    kind = _PURPOSE_NAMES.get(purpose, str(purpose))
    sock.settimeout(timeout)
    hello = _recv_exact(sock, HELLO_SIZE, where, "the collectives greeting")
    if len(hello) < HELLO_SIZE:
        raise AuthenticationError(f"{where} closed the connection before greeting us (not a collectives {kind} endpoint?)")
    magic, version, server_nonce, their_purpose = _HELLO.unpack(hello)
    if magic != MAGIC:
        raise AuthenticationError(f"{where} is not a collectives endpoint (bad magic {magic!r})")
    if version != VERSION:
        raise AuthenticationError(f"{where} speaks protocol version {version}, we speak {VERSION}")
    if their_purpose != purpose:
        raise AuthenticationError(
            f"{where} is a collectives {_PURPOSE_NAMES.get(their_purpose, their_purpose)} endpoint, "
            f"we expected a {kind} endpoint"
        )
    client_nonce = os.urandom(NONCE_SIZE)
    mac = _client_mac(secret, server_nonce, purpose, identity)
    try:
        sock.sendall(_REPLY.pack(MAGIC, VERSION, client_nonce, identity, mac))
    except OSError as exc:
        raise AuthenticationError(f"{where} went away during the handshake: {exc}") from None
    answer = _recv_exact(sock, ACCEPT_SIZE, where, "its answer to our handshake")
    if len(answer) < ACCEPT_SIZE or answer[0] != _STATUS_OK:
        raise AuthenticationError(
            f"{where} rejected our handshake: the job secret differs (check COLLECTIVES_SECRET) "
            "or it expects another identity"
        )
    _, server_identity, server_mac = _ACCEPT.unpack(answer)
    expected = _server_mac(secret, client_nonce, server_nonce, purpose, identity, server_identity)
    if not hmac.compare_digest(server_mac, expected):
        raise AuthenticationError(f"{where} could not prove the job secret; refusing to talk to it")
    if expect_server is not None and server_identity != expect_server:
        raise AuthenticationError(
            f"{where} is rank {server_identity} of this job, not the rank {expect_server} we meant to reach "
            "(stale address in the store?)"
        )
    sock.settimeout(None)


def listen_socket(host: str, port: int = 0, backlog: int = 1024, bufsize: int = 0) -> socket.socket:
    """A listening TCP socket on exactly ``host`` (an empty host, the implicit wildcard, is
    refused). ``bufsize`` sets SO_SNDBUF/SO_RCVBUF, inherited by accepted sockets."""
    if not host:
        raise InvalidArgumentError("host: give an explicit address; '0.0.0.0' listens on every interface")
    try:
        family, type_, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise ConnectError(f"cannot listen on {_interfaces.host_port(host, port)}: {exc}") from None
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_buffer_sizes(sock, bufsize)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConnectError(f"cannot listen on {_interfaces.host_port(host, port)}: {exc}") from None
    return sock


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _sysctl_int(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def set_buffer_sizes(sock: socket.socket, bufsize: int) -> None:
    """Set socket buffers to ``bufsize`` where the kernel allows that much. Where it caps
    lower (net.core.[rw]mem_max), leave Linux's autotuning on instead: a capped fixed size
    would be smaller than what autotuning reaches."""
    if bufsize <= 0:
        return
    if _sysctl_int("/proc/sys/net/core/wmem_max") >= bufsize:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
    if _sysctl_int("/proc/sys/net/core/rmem_max") >= bufsize:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)


# -- which address to bind ---------------------------------------------------------------

_SIOCGIFADDR = 0x8915


def interface_ipv4(ifname: str) -> str | None:
    """The IPv4 address of network interface ``ifname``, or None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENXIO):
                return None
            raise
    return socket.inet_ntoa(packed[20:24])


def resolve_bind_address(config: Config | None = None, *, routable: bool = False) -> str:
    """The address TCP listeners bind: COLLECTIVES_SOCKET_ADDR, else the address that
    COLLECTIVES_SOCKET_IFNAME chooses (names, prefixes, CIDR subnets, ``^`` exclusions:
    :mod:`collectives._interfaces`), else loopback. Never the wildcard unless asked for
    explicitly, so that single-host jobs are unreachable from the network.

    ``routable``: the ranks span several machines, so peers elsewhere must reach this
    address. Then, with nothing configured, the first address not on loopback or a local
    bridge is taken (:func:`collectives._interfaces.routable`), and a loopback address,
    configured or chosen, is refused with :class:`InvalidArgumentError`: advertised to
    another host it would lead that host's ranks to themselves."""
    config = Config.from_env() if config is None else config
    if config.socket_addr:
        address, source = config.socket_addr, f"COLLECTIVES_SOCKET_ADDR={config.socket_addr!r}"
    elif config.socket_ifname:
        chosen = _interfaces.select(config.socket_ifname)
        address, source = chosen.host, f"COLLECTIVES_SOCKET_IFNAME={config.socket_ifname!r} ({chosen.interface})"
    elif routable:
        chosen = _interfaces.routable()
        logger.info("ranks on several hosts: listening on %s (%s); COLLECTIVES_SOCKET_IFNAME or "
                    "COLLECTIVES_SOCKET_ADDR choose another", chosen.host, chosen.interface)
        return chosen.host
    else:
        return "127.0.0.1"
    if routable and is_loopback(address):
        raise InvalidArgumentError(
            f"{source} is loopback address {address}, but this job's ranks span several hosts: the others "
            "cannot reach it; choose an interface they can reach (for example COLLECTIVES_SOCKET_IFNAME=eth0, "
            "COLLECTIVES_SOCKET_IFNAME=10.0.0.0/8 or COLLECTIVES_SOCKET_IFNAME='^lo,docker')"
        )
    return address


WILDCARDS = ("0.0.0.0", "::")


def advertised_host(bound: str) -> str:
    """The host a listener bound to ``bound`` tells its peers to connect to: ``bound``
    itself, or for a wildcard the host name where it resolves to an address other than
    loopback (on many systems it resolves to 127.0.1.1), else this host's first routable
    address (:func:`collectives._interfaces.routable`), else the host name."""
    if bound not in WILDCARDS:
        return bound
    name = socket.gethostname()
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
    except OSError:
        resolved = set()
    if resolved and not all(is_loopback(str(a)) for a in resolved):
        return name
    try:
        return _interfaces.routable().host
    except InvalidArgumentError:
        return name
