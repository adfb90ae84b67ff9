"""What a stranger does to a port: scans, resets, junk, a 2^63 length prefix, wrong and
missing secrets, silent half-open connections, from several source addresses.

Each connection checks what the server did: a connection that sent something must be
closed by the server (end of stream) without our reading anything but its fixed-size
greeting, and no handshake without the secret may succeed."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from collectives._handshake import HELLO_SIZE, client_handshake
from collectives.errors import AuthenticationError

SOURCES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
KINDS = ("scan", "reset", "junk", "length", "wrong-secret", "no-secret")


@dataclass
class Report:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def _dial(address: tuple[str, int], source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(address)
    return sock


def _closed_by_server(sock: socket.socket, limit: float = 10.0) -> bool:
    """Read to end of stream: True when the server closed it (after at most its greeting
    and a one-byte refusal)."""
    got = 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if not chunk:
            return got <= HELLO_SIZE + 1
        got += len(chunk)
    return False


def one(address: tuple[str, int], kind: str, source: str, purpose: int, identity: int, report: Report) -> None:
    sock = _dial(address, source)
    try:
        if kind == "scan":  # connect() then close(), what a TCP connect scan does
            pass
        elif kind == "reset":  # close with RST, what a SYN scanner's kernel does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif kind in ("junk", "length"):
            payload = os.urandom(200) if kind == "junk" else struct.pack("<Q", 2**63) * 16
            sock.sendall(payload)
            if not _closed_by_server(sock):
                report.problems.append(f"{kind} from {source}: the server kept the connection open")
        else:
            secret = b"" if kind == "no-secret" else os.urandom(32)
            try:
                client_handshake(sock, secret, purpose, identity, timeout=10)
                report.problems.append(f"{kind} from {source}: the handshake succeeded")
            except AuthenticationError:
                pass
        report.counts[kind] += 1
    except OSError as exc:
        report.problems.append(f"{kind} from {source}: {exc}")
    finally:
        sock.close()


def flood(address: tuple[str, int], connections: int, purpose: int, identity: int, report: Report) -> None:
    """``connections`` connections of every kind in turn, from each source in turn."""
    for i in range(connections):
        one(address, KINDS[i % len(KINDS)], SOURCES[(i // len(KINDS)) % len(SOURCES)], purpose, identity, report)


def half_open(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` connections that say nothing and stay open."""
    return [_dial(address, SOURCES[i % len(SOURCES)]) for i in range(count)]


def all_dropped(socks: list[socket.socket], limit: float) -> bool:
    """Whether the server closed every one of ``socks`` within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    try:
        return all(_closed_by_server(s, max(0.1, deadline - time.monotonic())) for s in socks)
    finally:
        for s in socks:
            s.close()
