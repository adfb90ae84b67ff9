"""A TCP connection that goes silent or is reset mid-collective (reliability acceptance
case 6): every rank raises within the timeout + 5 s, and none returns a partial buffer as
complete.

Rank 0 reaches each of its peers through a proxy of its own (a thread that forwards bytes
both ways): the test wraps ``TcpTransport._connect`` in the parent before ``run_world``
forks the ranks, so rank 0 reads the proxy's address where its peer published its
listener's; the handshake and the first collectives go through as usual. After ``AFTER``
bytes of one large all_reduce the proxy either stops forwarding and keeps both sockets open
(a blackhole: a dead switch, a hung middlebox, a peer's kernel that stopped reading) or
resets both connections (SO_LINGER 0, then close: an RST, as a firewall or a crashed NIC
sends). TCP only: shared memory has no connection to break, and MPI's network is its own.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collectives.errors import CollectivesError
from collectives.testing import run_world
from collectives.transports.tcp import TcpTransport
from fault_worlds import figure

TIMEOUT = 1.0
"""The group's timeout once connected (seconds): what a blackhole is waited out for."""
BOUND = TIMEOUT + 5.0
ELEMENTS = 1 << 21
"""8 MiB of float32 per rank: at 2 and 4 ranks every algorithm moves well over ``AFTER``
bytes through rank 0's connections."""
AFTER = 2 << 20
"""Bytes a proxy forwards (both ways together) before its fault: mid-way through the large
all_reduce (the handshake and the small calls before it take a few kilobytes)."""

_KEPT: list[Any] = []  # a blackhole's sockets stay open as long as the rank lives


class _Proxy(threading.Thread):
    """Forwards one connection to ``target`` until ``after`` bytes have passed, then faults."""

    def __init__(self, target: str, mode: str, after: int, event: Path) -> None:
        super().__init__(name="test-tcp-proxy", daemon=True)
        self.target, self.mode, self.after, self.event = target, mode, after, event
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:{}".format(self.listener.getsockname()[1])

    def run(self) -> None:
        down, _ = self.listener.accept()
        self.listener.close()
        host, _, port = self.target.rpartition(":")
        up = socket.create_connection((host.strip("[]"), int(port)))
        other = {down: up, up: down}
        forwarded = 0
        while forwarded < self.after:
            for sock in select.select([down, up], [], [], 1.0)[0]:
                data = sock.recv(1 << 16)
                if not data:  # a side closed before the fault: pass it on
                    down.close()
                    up.close()
                    return
                other[sock].sendall(data)
                forwarded += len(data)
        if not self.event.exists():
            self.event.write_text(repr(time.monotonic()))  # CLOCK_MONOTONIC: one clock for the machine
        if self.mode == "reset":
            for sock in (down, up):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        else:
            _KEPT.append((down, up))


class _Redirected:
    """A store view that answers ``key`` with ``value`` and anything else as ``store`` does."""

    def __init__(self, store: Any, key: str, value: str) -> None:
        self.store, self.key, self.value = store, key, value

    def get(self, key: str, timeout: float | None = None) -> bytes:
        return self.value.encode() if key == self.key else self.store.get(key, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _through_proxies(monkeypatch: pytest.MonkeyPatch, mode: str, event: Path) -> None:
    """Make rank 0 dial every peer through a faulting proxy (in the ranks forked after this)."""
    connect = TcpTransport._connect

    def proxied(self: TcpTransport, peer: int, store: Any, secret: bytes, deadline: float) -> Any:
        if self.rank != 0:
            return connect(self, peer, store, secret, deadline)
        key = f"tcp/addr/{peer}"
        target = store.get(key, max(0.0, deadline - time.monotonic())).decode()
        proxy = _Proxy(target, mode, AFTER, event)
        proxy.start()
        return connect(self, peer, _Redirected(store, key, proxy.address), secret, deadline)

    monkeypatch.setattr(TcpTransport, "_connect", proxied)


@pytest.mark.multiprocess
@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("mode", ["blackhole", "reset"])
def test_a_silent_or_reset_connection_fails_every_rank_in_bounded_time(mode, size, monkeypatch, tmp_path):
    event = tmp_path / "fault"
    _through_proxies(monkeypatch, mode, event)

    def fn(comm):
        small = np.ones(1000, dtype=np.float32)
        comm.all_reduce(small)  # #1: the proxied connections work
        assert small[0] == size
        comm.timeout = TIMEOUT
        x = np.full(ELEMENTS, comm.rank + 1, dtype=np.float32)
        began = time.monotonic()
        work = None
        try:
            if mode == "reset":  # through the worker thread: its Work must not report success either
                work = comm.all_reduce(x, async_op=True)
                work.wait()
            else:
                comm.all_reduce(x)
        except CollectivesError as exc:
            ended = time.monotonic()
            if work is not None:
                assert work.is_completed() and not work.is_success() and work.exception() is not None
            return type(exc).__name__, str(exc), ended - began, ended - float(event.read_text())
        return "returned", f"x[0] = {x[0]}, x[-1] = {x[-1]}", time.monotonic() - began, None

    results = run_world(fn, size, "tcp", timeout=60)
    assert event.exists(), "no proxy reached its fault: the all_reduce moved too few bytes through rank 0"
    after = []
    for rank, (name, message, took, since_fault) in enumerate(results):
        assert name != "returned", f"rank {rank} returned success from a broken all_reduce ({message})"
        assert took < BOUND, (rank, took, message)
        if mode == "blackhole":  # everyone alive and in the call, nothing moving: waited out
            assert name == "CollectiveTimeoutError" and "every rank reported being in it" in message, (rank, message)
        elif rank == 0:  # the reset reached rank 0 itself: a lost peer, at once (whichever error came first)
            assert name == "PeerLostError", (rank, name, message)
        after.append(since_fault)
        print(f"\n{mode} n={size} rank {rank}: {name} after {took:.2f} s: {message[:200]}")
    figure(f"tcp {mode} n={size} (timeout {TIMEOUT:g} s): every rank raised, after the fault", after)
